"""`shell:` (v1, raw), `shell,v2:` (the shell protocol) and `exec:`: real `sh -c` processes,
under the device's userland's shell (mksh for an Android userland, tools.Userland).

v1 sends the process's stdout and stderr merged, raw, then CLSE; no exit code. v2 frames
everything as packets (id u8, length u32 LE, data): stdin 0, stdout 1, stderr 2, exit 3 (one
byte: the code, or 128 + signal), close-stdin 4, window-size 5. The command line is mapped from
device paths to the root (pathmap) and runs in the device's `/` (the root), with the toolbox
first on PATH. When the host closes the stream, or the device vanishes, the command's whole
session is killed: SIGHUP, as a closing terminal would send, then SIGKILL.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import struct
import subprocess
import termios
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

from edgepack.devices.virtual.pathmap import OutputMapper

if TYPE_CHECKING:
    from edgepack.devices.virtual.server import VirtualDevice
    from edgepack.devices.virtual.stream import Stream

ID_STDIN, ID_STDOUT, ID_STDERR, ID_EXIT, ID_CLOSE_STDIN, ID_WINDOW_SIZE = range(6)
_PACKET = struct.Struct("<BI")
READ_SIZE = 64 * 1024
KILL_GRACE = 1.0  # seconds between SIGHUP and SIGKILL


@dataclass(frozen=True)
class ShellRequest:
    command: str
    v2: bool
    pty: bool
    term: str | None = None

    @classmethod
    def parse(cls, service: str) -> ShellRequest | None:
        """`shell[,arg...]:command`; args v2, raw, pty, TERM=... (unknown args ignored)."""
        head, sep, command = service.partition(":")
        if not sep:
            return None
        args = head.split(",")[1:]
        term = next((a[len("TERM="):] for a in args if a.startswith("TERM=")), None)
        # adbd's default: raw with a command, a pty for an interactive shell.
        pty = "pty" in args or (not command and "raw" not in args)
        return cls(command, v2="v2" in args, pty=pty, term=term)


@dataclass(frozen=True)
class ShellContext:
    """What the device decides for one command: where it runs and how it is mapped."""

    cwd: str
    env: dict[str, str]
    map_command: Callable[[str], str]
    output_names: tuple[str, ...]  # host names of the root to turn back into `/` (empty: off)
    shell: str = "/bin/sh"  # the userland's: mksh on an Android userland (tools.Userland)


def serve_shell(stream: Stream, *, request: ShellRequest, device: VirtualDevice) -> None:
    ctx = device.shell_context(request.command)
    if request.term:
        ctx.env["TERM"] = request.term
    if request.command:
        argv = [ctx.shell, "-c", ctx.map_command(request.command)]
    else:
        argv = [ctx.shell, "-i"] if request.pty else [ctx.shell]
    session = _Session(stream, request, device, ctx, argv)
    session.run()


class _Session:
    def __init__(self, stream: Stream, request: ShellRequest, device: VirtualDevice,
                 ctx: ShellContext, argv: list[str]) -> None:
        self.stream = stream
        self.request = request
        self.device = device
        self.ctx = ctx
        self.argv = argv
        self.master: int | None = None
        self.stdin_fd: int | None = None
        self._stdin_file: IO[bytes] | None = None  # owns stdin_fd when it is a pipe
        self._stdin_lock = threading.Lock()

    def run(self) -> None:
        proc = self._spawn()
        self.device.track_session(proc)
        self.stream.on_peer_close(lambda: kill_session(proc.pid))
        self.device.command_started(self.request.command)
        try:
            pumps = self._start_output_pumps(proc)
            threading.Thread(target=self._pump_input, name="vd-shell-stdin", daemon=True).start()
            for pump in pumps:
                pump.join()
            code = proc.wait()
        finally:
            self.device.untrack_session(proc)
            self._close_stdin()
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
            if self.master is not None:
                os.close(self.master)
        if self.request.v2 and not self.stream.is_peer_closed:
            exit_code = code & 0xFF if code >= 0 else 128 + (-code)
            self.stream.write(_PACKET.pack(ID_EXIT, 1) + bytes([exit_code]))

    # ------------------------------------------------------------------ process

    def _spawn(self) -> subprocess.Popen[bytes]:
        common = dict(cwd=self.ctx.cwd, env=self.ctx.env, start_new_session=True, bufsize=0,
                      close_fds=True)
        if self.request.pty:
            master, slave = os.openpty()
            self.master = master
            try:
                proc = subprocess.Popen(
                    self.argv, stdin=slave, stdout=slave, stderr=slave,
                    preexec_fn=_take_controlling_tty, **common,
                )
            finally:
                os.close(slave)
            self.stdin_fd = master
            return proc
        proc = subprocess.Popen(
            self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if self.request.v2 else subprocess.STDOUT, **common,
        )
        assert proc.stdin is not None
        self._stdin_file = proc.stdin
        self.stdin_fd = proc.stdin.fileno()
        return proc

    # ------------------------------------------------------------------ output

    def _start_output_pumps(self, proc: subprocess.Popen[bytes]) -> list[threading.Thread]:
        if self.master is not None:
            sources = [(self.master, ID_STDOUT)]
        else:
            assert proc.stdout is not None
            sources = [(proc.stdout.fileno(), ID_STDOUT)]
            if proc.stderr is not None:
                sources.append((proc.stderr.fileno(), ID_STDERR))
        pumps = [threading.Thread(target=self._pump_output, args=src, name="vd-shell-out",
                                  daemon=True) for src in sources]
        for pump in pumps:
            pump.start()
        return pumps

    def _pump_output(self, fd: int, ident: int) -> None:
        mapper = OutputMapper(self.ctx.output_names) if self.ctx.output_names else None
        try:
            while True:
                try:
                    data = os.read(fd, READ_SIZE)
                except OSError as exc:
                    if exc.errno == errno.EIO:  # a pty whose last writer is gone
                        break
                    raise
                if not data:
                    break
                if mapper is not None:
                    data = mapper.feed(data)
                self._send(ident, data)
            if mapper is not None:
                self._send(ident, mapper.close())
        except Exception:  # the host is gone: the session is being killed anyway
            # Keep reading nothing: stop, so the process sees EPIPE or is killed.
            return

    def _send(self, ident: int, data: bytes) -> None:
        if not data:
            return
        if self.request.v2:
            self.stream.write(_PACKET.pack(ident, len(data)) + data)
        else:
            self.stream.write(data)

    # ------------------------------------------------------------------ input

    def _pump_input(self) -> None:
        try:
            if self.request.v2:
                self._pump_packets()
            else:
                while data := self.stream.read(READ_SIZE):
                    self._write_stdin(data)
        except Exception:  # the host closed the stream: the peer-close callback kills
            return

    def _pump_packets(self) -> None:
        while True:
            try:
                header = self.stream.read_exact(_PACKET.size)
            except EOFError:
                return
            ident, length = _PACKET.unpack(header)
            data = self.stream.read_exact(length) if length else b""
            if ident == ID_STDIN:
                self._write_stdin(data)
            elif ident == ID_CLOSE_STDIN:
                if self.master is None:
                    self._close_stdin()
                else:
                    self._write_stdin(b"\x04")  # EOF on a terminal is ^D
            elif ident == ID_WINDOW_SIZE and self.master is not None:
                _set_window_size(self.master, bytes(data))

    def _write_stdin(self, data: bytes | memoryview) -> None:
        with self._stdin_lock:
            fd = self.stdin_fd
            if fd is None:
                return
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(fd, view):]
            except OSError:  # the command closed its stdin or exited: drop the rest
                if self.master is None:
                    self._close_stdin_locked()

    def _close_stdin(self) -> None:
        with self._stdin_lock:
            self._close_stdin_locked()

    def _close_stdin_locked(self) -> None:
        # Through the file object that owns the fd: closing the number behind its back would
        # close whatever file reuses the number next.
        if self._stdin_file is not None:
            try:
                self._stdin_file.close()
            except OSError:
                pass
            self._stdin_file = None
        self.stdin_fd = None


def _take_controlling_tty() -> None:
    # In the child after setsid(): make the pty on stdin the session's controlling terminal.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _set_window_size(fd: int, data: bytes) -> None:
    # adb sends "ROWSxCOLS,XPIXELSxYPIXELS" in ASCII.
    try:
        text = data.split(b"\0", 1)[0].decode()
        chars, _, pixels = text.partition(",")
        rows, cols = (int(v) for v in chars.split("x"))
        xpix, ypix = (int(v) for v in pixels.split("x")) if pixels else (0, 0)
    except ValueError:
        return
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, xpix, ypix))


def kill_session(sid: int, grace: float = KILL_GRACE) -> None:
    """SIGHUP every process of session `sid` (timeout and the like make their own process
    groups, so the group alone would miss them), then SIGKILL what is left."""
    if not _signal_session(sid, signal.SIGHUP):
        return

    def finish() -> None:
        _signal_session(sid, signal.SIGKILL)

    timer = threading.Timer(grace, finish)
    timer.daemon = True
    timer.start()


def _signal_session(sid: int, sig: int) -> bool:
    hit = False
    for pid in _session_members(sid):
        try:
            os.kill(pid, sig)
            if sig == signal.SIGHUP:
                os.kill(pid, signal.SIGCONT)  # a stopped process acts on SIGHUP only once woken
            hit = True
        except ProcessLookupError:
            pass
    return hit


def _session_members(sid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # Fields after the command name, which is in parentheses and may hold anything.
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 3 and int(fields[3]) == sid and fields[0] != b"Z":
            members.append(int(entry))
    return members
