"""`sync:`: the file transfer service (AOSP adb/SYNC.TXT, daemon/file_sync_service.cpp).

Requests are id[4] + length u32 LE + path (<= 1024 bytes). STAT answers lstat v1 (all zeros when
it fails); STA2/LST2 (feature stat_v2) the 72-byte stat with an errno; LIST one DENT per entry
then DONE; SEND "path,mode" then DATA (<= 64 KiB) ... DONE+mtime, answered OKAY or FAIL+message;
RECV DATA ... DONE or FAIL; QUIT ends. As adbd does, SEND creates missing parent directories,
keeps reading DATA after a failure until DONE so the host hears the FAIL, and removes the file
it was writing when the transfer fails or the connection drops, so nothing partial looks
complete. Paths resolve inside the root (fs.DeviceFS).
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgepack.devices.virtual.server import VirtualDevice
    from edgepack.devices.virtual.stream import Stream

SYNC_DATA_MAX = 64 * 1024
MAX_PATH = 1024

_REQUEST = struct.Struct("<4sI")
_STAT_V1 = struct.Struct("<4sIII")
_STAT_V2 = struct.Struct("<4sIQQIIIIQqqq")
_DENT = struct.Struct("<4sIIII")
_U32 = 0xFFFFFFFF


class _Abort(Exception):
    """A FAIL was sent; the service ends (as adbd's does)."""


def serve_sync(stream: Stream, *, device: VirtualDevice) -> None:
    session = _Sync(stream, device)
    while session.handle_request():
        pass


class _Sync:
    def __init__(self, stream: Stream, device: VirtualDevice) -> None:
        self.stream = stream
        self.device = device
        self.fs = device.fs
        self._reserved = 0  # quota bytes the SEND in progress holds

    def handle_request(self) -> bool:
        first = self.stream.read(_REQUEST.size)
        if not first:
            return False  # adbutils closes without QUIT
        raw = first if len(first) == _REQUEST.size else (
            bytes(first) + bytes(self.stream.read_exact(_REQUEST.size - len(first))))
        ident, length = _REQUEST.unpack(raw)
        if length > MAX_PATH:
            self._fail("path too long")
            return False
        path = bytes(self.stream.read_exact(length)).decode("utf-8", "surrogateescape")
        try:
            if ident == b"STAT":
                self._lstat_v1(path)
            elif ident in (b"STA2", b"LST2"):
                self._stat_v2(path, follow=ident == b"STA2")
            elif ident == b"LIST":
                self._list(path)
            elif ident == b"SEND":
                self._send(path)
            elif ident == b"RECV":
                self._recv(path)
            elif ident == b"QUIT":
                return False
            else:
                self._fail(f"unknown command {int.from_bytes(ident, 'little'):08x}")
                return False
        except _Abort:
            return False
        return True

    # ------------------------------------------------------------------ replies

    def _fail(self, message: str) -> None:
        data = message.encode("utf-8", "replace")
        self.stream.write(b"FAIL" + struct.pack("<I", len(data)) + data)

    def _fail_errno(self, what: str, exc: OSError) -> None:
        self._fail(f"{what}: {exc.strerror or os.strerror(exc.errno or errno.EIO)}")

    # ------------------------------------------------------------------ stat, list

    def _lstat_v1(self, path: str) -> None:
        try:
            st = os.lstat(self.fs.resolve(path, follow_final=False))
            values = (st.st_mode, st.st_size & _U32, int(st.st_mtime) & _U32)
        except OSError:
            values = (0, 0, 0)
        self.stream.write(_STAT_V1.pack(b"STAT", *values))

    def _stat_v2(self, path: str, follow: bool) -> None:
        ident = b"STA2" if follow else b"LST2"
        try:
            host = self.fs.resolve(path, follow_final=follow)
            st = os.stat(host) if follow else os.lstat(host)
        except OSError as exc:
            self.stream.write(_STAT_V2.pack(ident, exc.errno or errno.EIO, *([0] * 10)))
            return
        self.stream.write(_STAT_V2.pack(
            ident, 0, st.st_dev, st.st_ino, st.st_mode, st.st_nlink, st.st_uid, st.st_gid,
            st.st_size, int(st.st_atime), int(st.st_mtime), int(st.st_ctime),
        ))

    def _list(self, path: str) -> None:
        out: list[bytes] = []
        try:
            host = self.fs.resolve(path)
            names = [".", "..", *os.listdir(host)]
        except OSError:
            names = []
            host = ""
        for name in names:
            # `..` of the root would describe a host directory: show the root itself.
            target = host if (name == ".." and host == self.fs.root) else os.path.join(host, name)
            try:
                st = os.lstat(target)
            except OSError:
                continue  # as adbd: an entry that vanished is left out
            encoded = os.fsencode(name)
            out.append(_DENT.pack(b"DENT", st.st_mode, st.st_size & _U32,
                                  int(st.st_mtime) & _U32, len(encoded)) + encoded)
        out.append(b"DONE" + bytes(16))
        self.stream.write(b"".join(out))

    # ------------------------------------------------------------------ send

    def _send(self, spec: str) -> None:
        path, comma, mode_text = spec.rpartition(",")
        if not comma:
            self._fail("missing , in ID_SEND_V1")
            raise _Abort
        try:
            mode = _c_ulong(mode_text)
        except ValueError:
            self._fail("bad mode")
            raise _Abort from None
        perms = mode & 0o777
        perms |= (perms >> 3) & 0o070  # adbd copies the user's bits to group and others
        perms |= (perms >> 3) & 0o007
        try:
            host = self.fs.resolve(path, follow_final=False)
        except OSError as exc:
            self._fail_errno("couldn't create file", exc)
            self._drain_until_done()
            raise _Abort from None

        try:
            st = os.lstat(host)
            do_unlink = stat.S_ISREG(st.st_mode) or (
                stat.S_ISLNK(st.st_mode) and not stat.S_ISLNK(mode))
        except OSError:
            do_unlink = True
        if do_unlink:
            _unlink_quietly(host)
        if stat.S_ISLNK(mode):
            self._send_link(host)
            return

        fd = self._create(host, perms)
        self._reserved = 0
        ok = False
        try:
            mtime = self._receive_file(fd)
            ok = True
        finally:
            self.fs.release(self._reserved)
            self._reserved = 0
            os.close(fd)
            if not ok and do_unlink:
                _unlink_quietly(host)
        try:
            os.utime(host, (mtime, mtime), follow_symlinks=False)
        except OSError:
            pass
        self.stream.write(b"OKAY" + bytes(4))

    def _send_link(self, host: str) -> None:
        """A symlink: one DATA with the target (NUL-terminated), then DONE. The target is kept
        as sent; the sync service resolves it inside the root whatever it says."""
        ident, size = _REQUEST.unpack(self.stream.read_exact(8))
        if ident != b"DATA" or size > SYNC_DATA_MAX:
            self._fail("invalid data message: expected ID_DATA")
            raise _Abort
        target = bytes(self.stream.read_exact(size)).split(b"\0", 1)[0]
        try:
            if os.path.lexists(host):
                os.unlink(host)
            try:
                os.symlink(target, host)
            except FileNotFoundError:
                os.makedirs(os.path.dirname(host), mode=0o775, exist_ok=True)
                os.symlink(target, host)
        except OSError as exc:
            self._fail_errno("symlink failed", exc)
            raise _Abort from None
        ident, mtime = _REQUEST.unpack(self.stream.read_exact(8))
        if ident != b"DONE":
            self._fail("invalid data message: expected ID_DONE")
            raise _Abort
        try:
            os.utime(host, (mtime, mtime), follow_symlinks=False)
        except OSError:
            pass
        self.stream.write(b"OKAY" + bytes(4))

    def _create(self, host: str, perms: int) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            try:
                fd = os.open(host, flags, perms)
            except FileNotFoundError:
                try:
                    os.makedirs(os.path.dirname(host), mode=0o775, exist_ok=True)
                except OSError as exc:
                    self._fail_errno("secure_mkdirs failed", exc)
                    self._drain_until_done()
                    raise _Abort from None
                fd = os.open(host, flags, perms)
            except FileExistsError:
                fd = os.open(host, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            self._fail_errno("couldn't create file", exc)
            self._drain_until_done()
            raise _Abort from None
        try:
            os.fchmod(fd, perms)  # the umask may have taken bits away
        except OSError:
            pass
        return fd

    def _receive_file(self, fd: int) -> int:
        """DATA... DONE into fd; the DONE's mtime. On failure: FAIL, drain, _Abort."""
        quota = self.device.faults.quota_bytes
        used_before = self.fs.usage() if quota is not None else 0
        transferred = 0
        while True:
            ident, size = _REQUEST.unpack(self.stream.read_exact(8))
            if ident == b"DONE":
                return size
            if ident != b"DATA":
                self._fail("invalid data message")
                raise _Abort
            if size > SYNC_DATA_MAX:
                self._fail("oversize data message")
                raise _Abort
            data = self.stream.read_exact(size)
            if quota is not None:
                if not self.fs.reserve(quota, used_before, size):
                    self._fail(f"write failed: {os.strerror(errno.ENOSPC)}")
                    self._drain_until_done()
                    raise _Abort
                self._reserved += size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            except OSError as exc:
                self._fail_errno("write failed", exc)
                self._drain_until_done()
                raise _Abort from None
            transferred += size
            self.device.check_transfer_drop(self.stream, transferred)

    def _drain_until_done(self) -> None:
        # adbd keeps reading DATA after a FAIL so that a host still writing hears about it.
        while True:
            try:
                ident, size = _REQUEST.unpack(self.stream.read_exact(8))
                if ident != b"DATA" or size > SYNC_DATA_MAX:
                    return
                self.stream.read_exact(size)
            except EOFError:
                return

    # ------------------------------------------------------------------ recv

    def _recv(self, path: str) -> None:
        try:
            fd = os.open(self.fs.resolve(path), os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            self._fail_errno("open failed", exc)
            raise _Abort from None
        transferred = 0
        try:
            while True:
                try:
                    data = os.read(fd, SYNC_DATA_MAX)
                except OSError as exc:
                    self._fail_errno("read failed", exc)
                    raise _Abort from None
                if not data:
                    break
                self.stream.write(b"DATA" + struct.pack("<I", len(data)))
                self.stream.write(data)
                transferred += len(data)
                self.device.check_transfer_drop(self.stream, transferred)
        finally:
            os.close(fd)
        self.stream.write(b"DONE" + bytes(4))


def _c_ulong(text: str) -> int:
    """strtoul(text, nullptr, 0): decimal, 0x hex or 0 octal."""
    text = text.strip()
    if text.lower().startswith("0x"):
        return int(text[2:], 16)
    if len(text) > 1 and text.startswith("0"):
        return int(text[1:], 8)
    return int(text or "0", 10)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
