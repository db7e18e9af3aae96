"""Devices reached through an adb server: phones over USB, boards running adbd, remote farms.

The adb server is adbutils' default (127.0.0.1:5037), or ANDROID_ADB_SERVER_HOST/PORT, so a
device behind another machine's adb server works unchanged. Pushes use the sync protocol's full
64 KiB DATA chunks on adbutils' own sync connection (its `sync.push` sends 4 KiB).
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepack.devices.base import DeviceInfo, ProgressCallback, ShellResult
from edgepack.errors import EdgepackError, ExitCode, short

SYNC_CHUNK = 64 * 1024  # the protocol's maximum DATA payload
SEND_BATCH = 16  # DATA records per socket write
S_IFREG = 0o100000


def device_failure(message: str) -> EdgepackError:
    return EdgepackError(message, ExitCode.DEVICE)


@dataclass(frozen=True)
class ServerAddress:
    host: str
    port: int

    @classmethod
    def from_env(cls) -> ServerAddress:
        host = os.environ.get("ANDROID_ADB_SERVER_HOST", "127.0.0.1")
        try:
            port = int(os.environ.get("ANDROID_ADB_SERVER_PORT", "5037"))
        except ValueError:
            raise EdgepackError("ANDROID_ADB_SERVER_PORT must be a port number") from None
        return cls(host, port)

    @classmethod
    def parse(cls, text: str) -> ServerAddress:
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise EdgepackError(f"adb server {text!r}: expected HOST:PORT with a port from 1 to "
                                "65535, e.g. 127.0.0.1:5037")
        return cls(host or "127.0.0.1", int(port))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def adb_client(server: ServerAddress | None = None) -> Any:
    import adbutils

    address = server or ServerAddress.from_env()
    return adbutils.AdbClient(host=address.host, port=address.port, socket_timeout=30)


@dataclass(frozen=True)
class Listed:
    serial: str
    state: str
    transport_id: int | None = None


def list_serials(server: ServerAddress | None = None) -> list[Listed]:
    """Every device the server knows, offline and unauthorized ones included."""
    import adbutils

    address = server or ServerAddress.from_env()
    try:
        return [Listed(d.serial, d.state, d.transport_id)
                for d in adb_client(address).list(extended=True)]
    except (adbutils.AdbError, OSError) as exc:
        raise device_failure(
            f"cannot reach the adb server at {address} ({short(exc)}); start it with "
            "`adb start-server`, or point ANDROID_ADB_SERVER_HOST/PORT at a running one"
        ) from None


def resolve_device(serial: str | None, server: ServerAddress | None = None) -> AdbDevice:
    """--device SERIAL, else ANDROID_SERIAL, else the only device connected."""
    address = server or ServerAddress.from_env()
    listed = list_serials(address)
    wanted = serial or os.environ.get("ANDROID_SERIAL") or None
    if wanted is None:
        ready = [d for d in listed if d.state == "device"]
        if len(ready) == 1:
            wanted = ready[0].serial
        elif not listed:
            raise device_failure(f"no device is connected to the adb server at {address}")
        else:
            names = ", ".join(f"{d.serial} ({d.state})" for d in listed)
            raise device_failure(
                f"{len(ready)} devices are ready ({names}): choose one with --device SERIAL "
                "or ANDROID_SERIAL"
            )
    match = next((d for d in listed if d.serial == wanted), None)
    if match is None:
        names = ", ".join(f"{d.serial} ({d.state})" for d in listed) or "none"
        raise device_failure(f"device {wanted!r} not found on {address} (connected: {names})")
    if match.state != "device":
        hint = {
            "unauthorized": "accept the USB debugging prompt on the device",
            "offline": "reconnect it, or restart adbd on the device",
        }.get(match.state, "check its connection")
        raise device_failure(f"device {wanted!r} is {match.state}: {hint}")
    return AdbDevice(wanted, address, match.transport_id)


class AdbDevice:
    """One device behind an adb server, with what deploy needs: shell, push, pull, facts."""

    def __init__(self, serial: str, server: ServerAddress | None = None,
                 transport_id: int | None = None) -> None:
        self.serial = serial
        self.server = server or ServerAddress.from_env()
        self._client = adb_client(self.server)
        self._transport_id = transport_id
        self._adb = (self._client.device(transport_id=transport_id) if transport_id
                     else self._call("find it", self._bind))
        self._features: set[str] | None = None

    def _bind(self) -> Any:
        """The adbutils device, by transport id when the server gives one: adbutils then opens
        each transport without first asking the server for its version on a connection of its
        own. A device that drops off and comes back gets a new id; `_open` follows it."""
        self._transport_id = next((d.transport_id for d in self._client.list(extended=True)
                                   if d.serial == self.serial), None)
        if self._transport_id:
            return self._client.device(transport_id=self._transport_id)
        return self._client.device(self.serial)

    def _open(self, timeout: float | None) -> Any:
        """A transport to the device. Opening fails before anything reaches the device, so
        after a reconnection (a new transport id) trying once more is safe."""
        import adbutils

        try:
            conn = self._adb.open_transport(timeout=timeout)
        except adbutils.AdbError:
            old = self._transport_id
            self._adb = self._bind()
            if self._transport_id is None or self._transport_id == old:
                raise
            conn = self._adb.open_transport(timeout=timeout)
        # Small requests (a sync RECV after "sync:", a lock release) otherwise wait out Nagle's
        # algorithm against the server's delayed ACK: 40 ms each on Linux.
        conn.conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    # ------------------------------------------------------------------ shell

    def features(self) -> set[str]:
        if self._features is None:
            self._features = set(self._call("read its features", self._read_features)
                                 .split(","))
        return self._features

    def _read_features(self) -> str:
        conn = self._client.make_connection(timeout=30)
        try:
            target = (f"host-transport-id:{self._transport_id}" if self._transport_id
                      else f"host-serial:{self.serial}")
            conn.send_command(f"{target}:features")
            conn.check_okay()
            return conn.read_string_block()
        finally:
            conn.conn.close()  # not conn.close(): adbutils sleeps 10 ms there

    def shell(self, command: str, timeout: float | None = None) -> ShellResult:
        """Run one command line in the device's shell; stdout and stderr apart when the device
        speaks shell v2 (stderr merged into stdout otherwise)."""
        if "shell_v2" in self.features():
            return self._call("run a shell command", lambda: self._shell_v2(command, timeout))
        result = self._call("run a shell command",
                            lambda: self._adb.shell2(command, timeout=timeout))
        return ShellResult(result.returncode, result.output, "")

    def _shell_v2(self, command: str, timeout: float | None) -> ShellResult:
        # The shell protocol read here rather than by adbutils' shell2, whose connection close
        # sleeps 10 ms: a deploy runs a dozen commands, and a redeploy should cost little more.
        conn = self._open(timeout)
        sock = conn.conn
        try:
            conn.send_command(f"shell,v2:{command}")
            conn.check_okay()
            streams = {1: bytearray(), 2: bytearray()}
            while True:
                header = read_exact(sock, 5)
                (length,) = struct.unpack("<I", header[1:])
                data = read_exact(sock, length) if length else b""
                if header[0] in streams:
                    streams[header[0]] += data
                elif header[0] == 3:  # exit: one byte
                    code = data[0] if data else 255
                    break
        finally:
            sock.close()
        return ShellResult(code, streams[1].decode("utf-8", "replace"),
                           streams[2].decode("utf-8", "replace"))

    # ------------------------------------------------------------------ files

    def push(self, local: Path, remote: str, progress: ProgressCallback | None = None,
             mode: int = 0o644, *, offset: int = 0, length: int | None = None) -> None:
        """Send one file (or its `length` bytes from `offset`) to exactly `remote` with 64 KiB
        DATA chunks. adbd deletes what it received of a SEND that breaks off, so a resumable
        push (devices.staging) sends a large file as ranges and joins them on the device."""
        local = Path(local)

        def send() -> None:
            with self._open(None) as conn:
                conn.send_command("sync:")
                conn.check_okay()
                header = f"{remote},{S_IFREG | mode}".encode()
                sock = conn.conn
                sock.sendall(b"SEND" + struct.pack("<I", len(header)) + header)
                # File bytes are read straight into a buffer of framed DATA records, several
                # per send: no copy per chunk and few system calls, which at loopback speeds is
                # what a Python sender spends its time on.
                record = 8 + SYNC_CHUNK
                buf = bytearray(record * SEND_BATCH)
                view = memoryview(buf)
                with open(local, "rb", buffering=0) as fh:
                    fh.seek(offset)
                    left = length
                    done = False
                    while not done:
                        end = payload = 0
                        for _ in range(SEND_BATCH):
                            room = SYNC_CHUNK if left is None else min(SYNC_CHUNK, left)
                            n = fh.readinto(view[end + 8: end + 8 + room]) if room else 0
                            if not n:
                                done = True
                                break
                            if left is not None:
                                left -= n
                            struct.pack_into("<4sI", buf, end, b"DATA", n)
                            end += 8 + n
                            payload += n
                        if end:
                            sock.sendall(view[:end])
                            if progress:
                                progress(payload)
                sock.sendall(b"DONE" + struct.pack("<I", int(time.time())))
                status = read_exact(sock, 8)
                if status[:4] == b"FAIL":
                    (size,) = struct.unpack("<I", status[4:])
                    message = read_exact(sock, size).decode("utf-8", "replace")
                    raise device_failure(f"{self.serial}: pushing {local.name} failed: {message}")
                if status[:4] != b"OKAY":
                    raise device_failure(f"{self.serial}: unexpected sync reply {status[:4]!r}")

        self._call(f"push {local.name}", send)

    def pull(self, remote: str, local: Path) -> None:
        local = Path(local)
        tmp = local.with_name(f".{local.name}.partial")

        def receive() -> None:
            # The sync protocol's RECV on our own transport, as push does: no per-connection
            # sleep, and it follows a device that reconnected.
            conn = self._open(None)
            sock = conn.conn
            try:
                conn.send_command("sync:")
                conn.check_okay()
                path = remote.encode()
                sock.sendall(b"RECV" + struct.pack("<I", len(path)) + path)
                with open(tmp, "wb") as out:
                    while True:
                        kind, length = struct.unpack("<4sI", read_exact(sock, 8))
                        if kind == b"DATA":
                            out.write(read_exact(sock, length))
                        elif kind == b"DONE":
                            break
                        elif kind == b"FAIL":
                            message = read_exact(sock, length).decode("utf-8", "replace")
                            raise device_failure(f"{self.serial}: pulling {remote} failed: "
                                                 f"{message}")
                        else:
                            raise device_failure(f"{self.serial}: unexpected sync reply {kind!r}")
                sock.sendall(b"QUIT" + struct.pack("<I", 0))
            finally:
                sock.close()

        try:
            self._call(f"pull {remote}", receive)
            os.replace(tmp, local)
        finally:
            tmp.unlink(missing_ok=True)

    # ------------------------------------------------------------------ facts

    def free_bytes(self, path: str) -> int | None:
        """Free space where `path` is (created if missing), as `df` on the device says."""
        out = self.shell(
            f"mkdir -p {shlex.quote(path)} 2>/dev/null; df -k {shlex.quote(path)} 2>/dev/null "
            f"|| df -k {shlex.quote(DEVICE_ROOT_PARENT)}", 30).stdout.strip().splitlines()
        return _df_free_bytes(out[-1]) if out else None

    def info(self) -> DeviceInfo:
        # One round trip: properties (none on a Linux board without Android's property
        # service), the machine, the C library (a runner built against a newer glibc than a
        # board's will not start), free space where edgepack writes, and a board's model.
        sections = ("props", "machine", "glibc", "df", "model")
        board = "command -v getprop >/dev/null ||"  # what only a Linux board is asked
        script = {
            "props": "getprop",
            "machine": "uname -m",
            "glibc": f"{board} getconf GNU_LIBC_VERSION",
            "df": f"df -k {shlex.quote(DEVICE_ROOT_PARENT)} | tail -n 1",
            "model": f"{board} tr -d '\\000' < /proc/device-tree/model || hostname",
        }
        out = self.shell("; ".join(f"echo ::edgepack-{name}::; {{ {script[name]}; }} 2>/dev/null"
                                   for name in sections), timeout=30).stdout
        found = dict(re.findall(r"::edgepack-(\w+)::\n(.*?)(?=::edgepack-|\Z)", out, re.S))
        props = {m.group(1): m.group(2) for m in _PROP_LINE.finditer(found.get("props", ""))}
        machine = found.get("machine", "").strip() or None
        glibc_match = re.fullmatch(r"glibc (\d+\.\d+)\S*", found.get("glibc", "").strip())
        df_lines = found.get("df", "").strip().splitlines()
        free = _df_free_bytes(df_lines[-1]) if df_lines else None
        board_model = found.get("model", "").strip() or None
        android = "ro.build.version.sdk" in props
        abis = [a for a in props.get("ro.product.cpu.abilist", "").split(",") if a]
        if not abis and props.get("ro.product.cpu.abi"):
            abis = [props["ro.product.cpu.abi"]]
        sdk = props.get("ro.build.version.sdk", "")
        return DeviceInfo(
            serial=self.serial,
            kind="android" if android else "linux",
            state="device",
            model=props.get("ro.product.model") or (None if android else board_model),
            manufacturer=props.get("ro.product.manufacturer"),
            abis=abis or ([machine] if machine else []),
            sdk=int(sdk) if sdk.isdigit() else None,
            release=props.get("ro.build.version.release"),
            soc=props.get("ro.soc.model") or props.get("ro.board.platform"),
            machine=machine,
            free_bytes=free,
            virtual=props.get("ro.edgepack.virtual") == "1",
            runner_target=choose_runner_target(props, machine),
            glibc=glibc_match.group(1) if glibc_match and not android else None,
            emulated=props.get("ro.edgepack.emulated") or None,
        )

    # ------------------------------------------------------------------ plumbing

    def _call(self, what: str, fn: Any) -> Any:
        import adbutils

        try:
            return fn()
        except EdgepackError:
            raise
        except (adbutils.AdbTimeout, TimeoutError):
            raise device_failure(f"{self.serial}: timed out trying to {what}") from None
        except (adbutils.AdbError, OSError, EOFError, struct.error) as exc:
            raise device_failure(
                f"{self.serial}: lost the device while trying to {what} ({short(exc, 160)})"
            ) from None


# Where edgepack keeps its files on a device. /data/local/tmp is writable by the shell user on
# every Android device, and the virtual device maps it into its root.
DEVICE_ROOT_PARENT = "/data/local/tmp"
DEVICE_ROOT = "/data/local/tmp/edgepack"

_PROP_LINE = re.compile(r"^\[([^\]]+)\]: \[(.*)\]\s*$", re.MULTILINE)


def choose_runner_target(props: dict[str, str], machine: str | None) -> str | None:
    """Which runner build a device runs: Android by its ABI, a Linux board by `uname -m`.

    The virtual device runs this machine's binaries whatever ABI it reports, and says so with
    ro.edgepack.runner_target.
    """
    from edgepack.runner.targets import target_for_android_abi, target_for_linux_machine

    if props.get("ro.edgepack.runner_target"):
        return props["ro.edgepack.runner_target"]
    if "ro.build.version.sdk" in props:
        target = target_for_android_abi(props.get("ro.product.cpu.abi", ""))
        return target.name if target else None
    target = target_for_linux_machine(machine or "")
    return target.name if target else None


def _df_free_bytes(line: str) -> int | None:
    # toybox and coreutils both print: Filesystem 1K-blocks Used Available Use% Mounted-on
    parts = line.split()
    if len(parts) >= 4 and parts[3].isdigit():
        return int(parts[3]) * 1024
    return None


# Linux only. The adb server writes each message it relays as it comes, without TCP_NODELAY: a
# short message after a long one (a sync DONE after the last DATA) then waits for our ACK,
# which Linux delays by 40 ms unless asked to answer at once; it forgets that after each read.
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


def read_exact(sock: Any, n: int) -> bytes:
    """n bytes from a socket, or EOFError when the peer closes first."""
    data = b""
    while len(data) < n:
        if _QUICKACK is not None:
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("connection closed")
        data += chunk
    return data
