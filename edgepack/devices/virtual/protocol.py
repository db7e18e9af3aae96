"""The adb transport's 24-byte message header (AOSP adb/protocol.txt).

Six little-endian u32: command, arg0, arg1, data_length, data_check, magic, where magic is
command ^ 0xFFFFFFFF. data_check is a plain byte sum that a peer at version 0x01000001 or later
neither fills nor checks, so it is computed only for the CNXN banner and for older hosts.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

A_SYNC = 0x434E5953
A_CNXN = 0x4E584E43
A_AUTH = 0x48545541
A_OPEN = 0x4E45504F
A_OKAY = 0x59414B4F
A_CLSE = 0x45534C43
A_WRTE = 0x45545257
A_STLS = 0x534C5453

A_VERSION_MIN = 0x01000000
A_VERSION_SKIP_CHECKSUM = 0x01000001
A_VERSION = 0x01000001

# What we accept and announce. The server aborts on a long OPEN string if the device announces
# a small payload, and bigger WRTEs mean fewer round trips on a stop-and-wait stream.
MAX_PAYLOAD = 1024 * 1024

HEADER = struct.Struct("<6I")
HEADER_SIZE = HEADER.size

_NAMES = {
    A_SYNC: "SYNC",
    A_CNXN: "CNXN",
    A_AUTH: "AUTH",
    A_OPEN: "OPEN",
    A_OKAY: "OKAY",
    A_CLSE: "CLSE",
    A_WRTE: "WRTE",
    A_STLS: "STLS",
}


class ProtocolError(Exception):
    """The peer sent something that is not an adb message; the connection cannot continue."""


@dataclass(frozen=True, slots=True)
class Header:
    command: int
    arg0: int
    arg1: int
    length: int
    check: int

    @property
    def name(self) -> str:
        return command_name(self.command)


def command_name(command: int) -> str:
    return _NAMES.get(command, f"0x{command:08x}")


def checksum(payload: bytes | bytearray | memoryview) -> int:
    return sum(payload) & 0xFFFFFFFF


def pack_header(command: int, arg0: int, arg1: int, payload_length: int, check: int = 0) -> bytes:
    return HEADER.pack(
        command, arg0 & 0xFFFFFFFF, arg1 & 0xFFFFFFFF, payload_length, check,
        command ^ 0xFFFFFFFF,
    )


def unpack_header(raw: bytes, max_payload: int = MAX_PAYLOAD) -> Header:
    """Parse and validate one header; ProtocolError when it cannot be an adb message."""
    if len(raw) != HEADER_SIZE:
        raise ProtocolError(f"short header ({len(raw)} bytes)")
    command, arg0, arg1, length, check, magic = HEADER.unpack(raw)
    if magic != command ^ 0xFFFFFFFF:
        raise ProtocolError(f"bad magic 0x{magic:08x} for command 0x{command:08x}")
    if length > max_payload:
        raise ProtocolError(f"{command_name(command)} payload of {length} bytes exceeds "
                            f"the {max_payload} negotiated")
    return Header(command, arg0, arg1, length, check)
