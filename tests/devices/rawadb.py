"""A bare adb transport client over TCP, for what adb, adbutils and adb-shell hide: the AUTH
exchange message by message, a tampered signature, the numbers in the device's CNXN, whether a
CLSE is answered."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from edgepack.devices.virtual import protocol as p
from edgepack.devices.virtual.auth import encode_public_key

HOST_BANNER = b"host::features=shell_v2,stat_v2\0"


@dataclass(frozen=True)
class Message:
    command: int
    arg0: int
    arg1: int
    payload: bytes
    check: int

    @property
    def name(self) -> str:
        return p.command_name(self.command)


class RawAdb:
    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.timeout = timeout

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawAdb:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, command: int, arg0: int, arg1: int, payload: bytes = b"") -> None:
        self.sock.sendall(p.pack_header(command, arg0, arg1, len(payload), p.checksum(payload))
                          + payload)

    def recv(self, timeout: float | None = None) -> Message | None:
        """The next message, or None when none comes within `timeout` (or the socket closes)."""
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            head = self._exact(p.HEADER_SIZE)
            if head is None:
                return None
            command, arg0, arg1, length, check, magic = p.HEADER.unpack(head)
            assert magic == command ^ 0xFFFFFFFF
            payload = self._exact(length) if length else b""
            assert payload is not None
        except TimeoutError:
            return None
        return Message(command, arg0, arg1, payload, check)

    def _exact(self, size: int) -> bytes | None:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def connect(self, version: int = p.A_VERSION, max_payload: int = p.MAX_PAYLOAD) -> Message:
        self.send(p.A_CNXN, version, max_payload, HOST_BANNER)
        answer = self.recv()
        assert answer is not None, "no answer to CNXN"
        return answer


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def sign(key: rsa.RSAPrivateKey, token: bytes) -> bytes:
    """What adb's host does with a token: RSA_sign(NID_sha1, token)."""
    return key.sign(token, padding.PKCS1v15(), utils.Prehashed(hashes.SHA1()))


def public_line(key: rsa.RSAPrivateKey, comment: str = "test@raw") -> str:
    return encode_public_key(key.public_key(), comment)


def load_private_key(path: object) -> rsa.RSAPrivateKey:
    with open(path, "rb") as f:  # type: ignore[call-overload]
        key = serialization.load_pem_private_key(f.read(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key
