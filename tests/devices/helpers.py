"""Raw sync-protocol helpers for tests: what adbutils hides (FAIL messages, 64 KiB DATA, an
abandoned transfer)."""

from __future__ import annotations

import struct
import time
from typing import Any

from edgepack.devices.adb import read_exact


def raw_push(device: Any, data: bytes, remote: str, mode: int = 0o100644,
             chunk: int = 64 * 1024, abandon_after: int | None = None,
             mtime: int | None = None) -> tuple[str, str]:
    """SEND `data` in `chunk`-sized DATA; ("OKAY", "") or ("FAIL", message).

    With `abandon_after`, close the connection after that many bytes instead of DONE (returns
    ("ABANDONED", "")). A dropped connection raises OSError or EOFError.
    """
    conn = device.open_transport(timeout=30)
    try:
        conn.send_command("sync:")
        conn.check_okay()
        sock = conn.conn
        spec = f"{remote},{mode}".encode()
        sock.sendall(b"SEND" + struct.pack("<I", len(spec)) + spec)
        sent = 0
        for start in range(0, len(data), chunk):
            piece = data[start:start + chunk]
            sock.sendall(b"DATA" + struct.pack("<I", len(piece)) + piece)
            sent += len(piece)
            if abandon_after is not None and sent >= abandon_after:
                return "ABANDONED", ""
        sock.sendall(b"DONE" + struct.pack("<I", int(time.time()) if mtime is None else mtime))
        status = read_exact(sock, 8)
        length = struct.unpack("<I", status[4:])[0]
        message = read_exact(sock, length).decode() if status[:4] == b"FAIL" else ""
        return status[:4].decode(), message
    finally:
        conn.close()


def raw_recv(device: Any, remote: str) -> tuple[bytes, str]:
    """RECV: (content, "") or (b"", FAIL message)."""
    conn = device.open_transport(timeout=30)
    try:
        conn.send_command("sync:")
        conn.check_okay()
        sock = conn.conn
        path = remote.encode()
        sock.sendall(b"RECV" + struct.pack("<I", len(path)) + path)
        parts = []
        while True:
            head = read_exact(sock, 8)
            ident, size = head[:4], struct.unpack("<I", head[4:])[0]
            if ident == b"DONE":
                return b"".join(parts), ""
            body = read_exact(sock, size)
            if ident == b"FAIL":
                return b"", body.decode()
            parts.append(body)
    finally:
        conn.close()
