"""The virtual device: listening socket, lifecycle, and what services ask of the device.

    device = VirtualDevice(DeviceConfig(root=Path("vd-root"))).start()
    # adb connect 127.0.0.1:{device.port}; then any adb client talks to it
    device.faults.bandwidth = 2_000_000       # knobs apply from the next message on
    device.stop()

Each device keeps a small state directory under /tmp: `r`, the short link to the root that
shell command lines are mapped through (pathmap), and the toolbox (getprop, dumpsys...).

Whoever connects runs commands as the user who started the device, so a device that listens on
anything but loopback (or that is asked to with `auth=True`) requires adb's RSA authentication,
as a phone does (auth.py); it will not start without a key to accept.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgepack.devices.virtual import emulate, runnerfault, slowdown
from edgepack.devices.virtual.auth import Authenticator, KeyFileError, KeySource
from edgepack.devices.virtual.faults import Faults, Throttle
from edgepack.devices.virtual.fs import DeviceFS
from edgepack.devices.virtual.pathmap import DEVICE_PREFIXES, CommandMapper
from edgepack.devices.virtual.props import PropStore, default_props, host_abi
from edgepack.devices.virtual.services import FEATURES, handler_for
from edgepack.devices.virtual.services.shell import ShellContext, kill_session
from edgepack.devices.virtual.stream import Stream, StreamClosed
from edgepack.devices.virtual.sysinfo import Battery, Thermal
from edgepack.devices.virtual.tools import Toolbox
from edgepack.devices.virtual.transport import Connection, Handler

log = logging.getLogger("edgepack.virtual_device")

# adb servers probe these ports for emulators at start and would list a device there twice.
EMULATOR_PORTS = range(5555, 5586)

# adbd's own list of accepted keys, /data/misc/adb/adb_keys, inside the device's root.
DEVICE_KEYS = "data/misc/adb/adb_keys"


class DeviceStartError(Exception):
    """The device cannot start for a reason its user can fix; the message names it."""


def user_adb_key() -> Path:
    """The public key the local adb server signs with (Debian's adb creates it on first start)."""
    return Path.home() / ".android" / "adbkey.pub"


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only. A name that does not resolve counts
    as reachable from elsewhere: authentication is the safe side to err on."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback if host else False
    except (OSError, ValueError):
        return False


@dataclass
class DeviceConfig:
    root: Path
    port: int = 0  # 0: any free port (see VirtualDevice.port)
    host: str = "127.0.0.1"
    serial: str | None = None  # ro.serialno; adb itself names the device HOST:PORT
    abi: str = field(default_factory=host_abi)  # reported only: programs run as the host's
    model: str = "edgepack virtual device"
    manufacturer: str = "edgepack"
    sdk: int = 34
    release: str | None = None  # from sdk when None
    soc_model: str = "VIRTUAL"
    soc_manufacturer: str = "edgepack"
    props: dict[str, str] = field(default_factory=dict)  # added to, or overriding, the defaults
    battery: Battery = field(default_factory=Battery)
    thermal: Thermal = field(default_factory=Thermal)
    faults: Faults = field(default_factory=Faults)
    vanish_after: float | None = None  # seconds after start
    map_output: bool = True  # host names of the root in command output become `/`
    prefixes: tuple[str, ...] = DEVICE_PREFIXES
    # A Linux board running adbd rather than a phone: no getprop, setprop or dumpsys, so tools
    # see uname -m and getconf; `glibc` makes getconf report an older C library than the host's.
    linux_board: bool = False
    glibc: str | None = None
    # "android" (mksh, toybox), "host" (/bin/sh, this machine's programs); None: android for a
    # phone when mksh and toybox are installed, else host (tools.choose_userland).
    userland: str | None = None
    # Run aarch64 programs under qemu-user, as an arm64 phone computes (emulate.py): the device
    # then reports the linux-aarch64 runner and says it is emulated. Needs abi "arm64-v8a".
    emulate: bool = False
    # adb's RSA authentication: always on when `host` is not loopback; True turns it on for
    # loopback too. The accepted keys are read from `authorized_keys` (adb_keys format), by
    # default ~/.android/adbkey.pub and ROOT/data/misc/adb/adb_keys.
    auth: bool = False
    authorized_keys: tuple[Path, ...] | None = None

    @property
    def auth_required(self) -> bool:
        return self.auth or not is_loopback(self.host)


class VirtualDevice:
    def __init__(self, config: DeviceConfig) -> None:
        config.faults.validate()
        self.config = config
        self.faults = config.faults
        self.throttle_in = Throttle()
        self.throttle_out = Throttle()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._connections: set[Connection] = set()
        self._sessions: dict[int, subprocess.Popen[bytes]] = {}
        self._vanished = False
        self._stopped = threading.Event()
        self._port = config.port
        self._fault_lib: Path | None = None
        # What an emulated device's aarch64 runner preloads instead of the x86 fault libraries,
        # by the knob that asked for it: "fault", "slowdown".
        self._guest_libs: dict[str, Path] = {}
        self._exec_hook: dict[str, str] = {}  # the shell environment's exec hook, if emulating
        self._slowdown_at: float | None = None  # time.time() the slowdown starts
        self.state_dir: Path | None = None
        self.authenticator: Authenticator | None = None  # None: no authentication

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> VirtualDevice:
        """Prepare the root and listen. DeviceStartError when the configuration cannot work
        (the root is a file, the port is taken, authentication has no key to accept...)."""
        config = self.config
        root = Path(config.root)
        if config.auth_required:
            self.authenticator = self._authenticator(root)
        _make_root(root)
        self.state_dir = Path(tempfile.mkdtemp(prefix="epvd-", dir=_state_parent()))
        try:
            self.link = str(self.state_dir / "r")
            os.symlink(os.path.realpath(root), self.link)
            self.fs = DeviceFS(root, host_aliases=(self.link,))
            try:
                self.fs.prepare()
            except OSError as exc:
                raise DeviceStartError(f"cannot create the device's directories in the root "
                                       f"{root}: {exc.strerror or exc}") from None
            self.toolbox = Toolbox(self.state_dir, self.fs.root)
            if config.glibc is not None and not re.fullmatch(r"\d+\.\d+", config.glibc):
                raise DeviceStartError(f"glibc {config.glibc!r}: expected a version such as 2.31")
            self.toolbox.install(android=not config.linux_board, glibc=config.glibc,
                                 userland=config.userland)
            emulated = self._start_emulation() if config.emulate else {}
            self.mapper = CommandMapper(self.link, config.prefixes)
            self._listen()
            serial = config.serial or f"virtual-{self._port}"
            self.props = PropStore(self.toolbox.props_file, {**default_props(
                serial=serial, abi=config.abi, model=config.model,
                manufacturer=config.manufacturer, sdk=config.sdk, release=config.release,
                soc_model=config.soc_model, soc_manufacturer=config.soc_manufacturer,
            ), **emulated, **config.props})
            self.set_battery()
            self.set_thermal()
            self._base_env = self._shell_env()
            if self.faults.runner:
                self.set_runner_fault(self.faults.runner, once=self.faults.runner_once)
            if self.faults.slowdown_after is not None:
                self.set_slowdown(self.faults.slowdown_after, self.faults.slowdown_factor)
        except BaseException:
            self.stop()
            raise
        if config.port in EMULATOR_PORTS:
            log.warning("port %d is in 5555-5585, which adb servers probe for emulators: the "
                        "device may be listed twice (start the server with ADB_EMU=0)", self._port)
        log.info("virtual device listening on %s (root %s)", self.address, self.fs.root)
        if self.authenticator is not None:
            log.info("adb authentication on: keys accepted from %s",
                     self.authenticator.describe())
        if config.vanish_after is not None:
            self.vanish(after=config.vanish_after)
        return self

    def stop(self) -> None:
        """Stop listening, drop every connection, kill running commands, remove the state."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._go_dark()
        if self.state_dir is not None:
            shutil.rmtree(self.state_dir, ignore_errors=True)  # unlinks `r`, not the root

    def serve_forever(self) -> None:
        self._stopped.wait()

    def __enter__(self) -> VirtualDevice:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> str:
        """What to give `adb connect`, and the serial adb then lists the device under."""
        return f"{self.config.host}:{self._port}"

    @property
    def root(self) -> Path:
        return Path(self.fs.root)

    @property
    def vanished(self) -> bool:
        return self._vanished

    # ------------------------------------------------------------------ faults

    def vanish(self, after: float = 0.0) -> None:
        """Drop every connection and stop answering, now or `after` seconds from now."""
        if after > 0:
            timer = threading.Timer(after, self.vanish)
            timer.daemon = True
            timer.start()
            return
        with self._lock:
            if self._vanished or self._stopped.is_set():
                return
            self._vanished = True
        log.info("fault: the device vanishes")
        self._go_dark()
        if self.faults.revive_after is not None:
            timer = threading.Timer(self.faults.revive_after, self.revive)
            timer.daemon = True
            timer.start()

    def revive(self) -> None:
        """Listen again on the same port after vanish(); the adb server reconnects by itself
        (or on the next `adb connect`)."""
        with self._lock:
            if not self._vanished or self._stopped.is_set():
                return
        self._listen()
        with self._lock:
            self._vanished = False
        log.info("the device is back on %s", self.address)

    def drop_connections(self) -> None:
        """Cut every adb connection now, as an unplugged cable would; keep listening."""
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            conn.close()

    def set_runner_fault(self, mode: str | None, once: bool = False) -> None:
        """Turn the runner fault on ("crash", "hang") or off (None); builds its library now,
        so a missing compiler shows here rather than in the command it was meant for."""
        if mode is not None:
            self._fault_library()
        self.faults.runner = mode
        self.faults.runner_once = once
        self.faults.validate()
        self._fault_mark().unlink(missing_ok=True)

    def set_slowdown(self, after: float | None, factor: float = 1.0) -> None:
        """From `after` seconds from now, the runner runs `factor` times slower (None: off);
        builds the library now, as set_runner_fault does."""
        if after is not None:
            self._slowdown_library()
            self._slowdown_at = time.time() + after
        self.faults.slowdown_after = after
        self.faults.slowdown_factor = factor
        self.faults.validate()

    @property
    def runner_fault_fired(self) -> bool:
        """Whether a runner has met the fault since set_runner_fault()."""
        return self._fault_mark().exists()

    def set_battery(self, **changes: object) -> None:
        """Change the battery dumpsys reports: level, temperature (tenths of a degree C), status,
        usb_powered, voltage."""
        for name, value in changes.items():
            setattr(self.config.battery, name, value)
        self.toolbox.write_dumpsys("battery", self.config.battery.dumpsys())

    def set_thermal(self, status: int | None = None,
                    temperatures: dict[str, float] | None = None) -> None:
        if status is not None:
            self.config.thermal.status = status
        if temperatures is not None:
            self.config.thermal.temperatures = dict(temperatures)
        self.toolbox.write_dumpsys("thermalservice", self.config.thermal.dumpsys())

    # ------------------------------------------------------------------ for the services

    def banner(self) -> bytes:
        return self.props.banner(FEATURES)

    def service_handler(self, service: str) -> Handler | None:
        return handler_for(service, self)

    def shell_context(self, command: str) -> ShellContext:
        faults = self.faults
        self.toolbox.sync_quota(faults.quota_bytes)
        env = dict(self._base_env)
        if faults.runner:
            env.update(runnerfault.environment(
                self._fault_library(), faults.runner, faults.runner_once, self._fault_mark(),
                env.get("LD_PRELOAD"),
            ))
        if faults.slowdown_after is not None and self._slowdown_at is not None:
            env.update(slowdown.environment(self._slowdown_library(), self._slowdown_at,
                                            faults.slowdown_factor, env.get("LD_PRELOAD")))
        guest = [str(lib) for lib in self._guest_libs.values()]
        if guest:
            env[emulate.ENV_GUEST_PRELOAD] = " ".join(guest)
        names = (self.link, self.fs.root) if self.config.map_output else ()
        return ShellContext(cwd=self.link, env=env, map_command=self.mapper.map_command,
                            output_names=names, shell=self.toolbox.userland.shell)

    def command_started(self, command: str) -> None:
        pattern = self.faults.vanish_on_command
        if pattern and re.search(pattern, command):
            self.faults.vanish_on_command = None  # one shot: the retry must find the device
            log.info("fault: %r started; vanishing in %.3gs", command[:80],
                     self.faults.vanish_delay)
            timer = threading.Timer(self.faults.vanish_delay, self.vanish)
            timer.daemon = True
            timer.start()

    def check_transfer_drop(self, stream: Stream, transferred: int) -> None:
        limit = self.faults.drop_after_bytes
        if limit is None or transferred < limit:
            return
        if not self.faults.drop_always:
            self.faults.drop_after_bytes = None
        log.info("fault: dropping the connection after %d bytes of a transfer", transferred)
        stream.conn.close()
        raise StreamClosed("connection dropped by a fault knob")

    def track_session(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._sessions[proc.pid] = proc
        if self._vanished or self._stopped.is_set():
            kill_session(proc.pid)

    def untrack_session(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._sessions.pop(proc.pid, None)

    def connection_closed(self, conn: Connection) -> None:
        with self._lock:
            self._connections.discard(conn)

    # ------------------------------------------------------------------ internals

    def _authenticator(self, root: Path) -> Authenticator:
        config = self.config
        if config.authorized_keys is not None:
            sources = tuple(KeySource(Path(path), required=True)
                            for path in config.authorized_keys)
        else:
            sources = (KeySource(user_adb_key(), required=False),
                       KeySource(Path(os.path.realpath(root)) / DEVICE_KEYS, required=False))
        authenticator = Authenticator(sources)
        why = ("it listens on " + config.host) if not is_loopback(config.host) else "auth is on"
        try:
            count = authenticator.check()
        except KeyFileError as exc:
            raise DeviceStartError(f"authorized keys: {exc}") from None
        if count == 0:
            raise DeviceStartError(
                f"adb authentication is required ({why}) but no key is accepted: "
                f"{authenticator.describe()} hold none; name the adbkey.pub of each machine "
                "allowed in with --authorized-keys FILE")
        return authenticator

    def _listen(self) -> None:
        if not 0 <= self._port <= 65535:
            raise DeviceStartError(f"port {self._port}: expected 0 to 65535 (0 picks a free one)")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.config.host, self._port))
        except OSError as exc:
            listener.close()
            raise DeviceStartError(
                f"cannot listen on {self.config.host}:{self._port} "
                f"({exc.strerror or exc}): pick another port, or 0") from None
        listener.listen(64)
        self._port = listener.getsockname()[1]
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept_loop, args=(listener,),
                         name=f"vd-accept-{self._port}", daemon=True).start()

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, addr = listener.accept()
            except OSError:
                return  # closed by vanish() or stop()
            if self._vanished or self._stopped.is_set():
                sock.close()
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(sock, self, f"{addr[0]}:{addr[1]}")
            with self._lock:
                self._connections.add(conn)
            log.info("%s: accepted", conn.peer)
            conn.start()

    def _go_dark(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            connections = list(self._connections)
            sessions = list(self._sessions)
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            except OSError:
                pass
            listener.close()
        for conn in connections:
            conn.close()
        for pid in sessions:
            kill_session(pid)

    def _shell_env(self) -> dict[str, str]:
        env = dict(os.environ)
        link = self.link
        env.update(
            PATH=self.toolbox.search_path(env.get("PATH") or "/usr/bin:/bin"),
            HOME=link,
            PWD=link,
            TMPDIR=f"{link}/data/local/tmp",
            ANDROID_DATA=f"{link}/data",
            EXTERNAL_STORAGE=f"{link}/sdcard",
            SHELL=self.toolbox.userland.shell,
        )
        env.update(self._exec_hook)
        return env

    def _start_emulation(self) -> dict[str, str]:
        """Install the exec hook and qemu-exec (emulate.py); the properties that say so."""
        config = self.config
        if config.abi != emulate.ABI:
            raise DeviceStartError(f"emulation runs aarch64 programs: the ABI is {emulate.ABI}, "
                                   f"not {config.abi}")
        reason = emulate.unavailable_reason()
        if reason is not None:
            raise DeviceStartError(f"cannot emulate an arm64 device here: {reason}")
        assert self.state_dir is not None
        try:
            hook = emulate.hook_library()
        except runnerfault.RunnerFaultUnavailable as exc:
            raise DeviceStartError(f"cannot emulate an arm64 device here: {exc}") from None
        link = self.state_dir / "emulate-exec.so"  # a plain path: LD_PRELOAD splits at spaces
        os.symlink(hook, link)
        qemu_exec = emulate.install(self.state_dir, self.toolbox.bin_dir,
                                    self.toolbox.userland.toybox)
        self._exec_hook = {"LD_PRELOAD": " ".join(
            p for p in (str(link), os.environ.get("LD_PRELOAD")) if p),
            emulate.ENV_EXEC: str(qemu_exec)}
        return emulate.props(config.model)

    def _guest_library(self, knob: str, source: str, stem: str) -> None:
        """On an emulated device, the aarch64 build of a knob's preload library."""
        if not self.config.emulate or knob in self._guest_libs:
            return
        assert self.state_dir is not None
        target = self.state_dir / f"{stem}-aarch64.so"
        if not target.exists():
            os.symlink(emulate.guest_library(source, stem), target)
        self._guest_libs[knob] = target

    def _fault_library(self) -> Path:
        if self._fault_lib is None:
            assert self.state_dir is not None
            # Linked into the state directory: LD_PRELOAD splits at spaces, the cache path may
            # have some.
            target = self.state_dir / "runner-fault.so"
            if not target.exists():
                os.symlink(runnerfault.library_path(), target)
            self._fault_lib = target
            self._guest_library("fault", runnerfault._SOURCE, "vd-runner-fault")
        return self._fault_lib

    def _slowdown_library(self) -> Path:
        assert self.state_dir is not None
        target = self.state_dir / "runner-slowdown.so"  # a plain path, as _fault_library's
        if not target.exists():
            os.symlink(slowdown.library_path(), target)
        self._guest_library("slowdown", slowdown._SOURCE, "vd-runner-slowdown")
        return target

    def _fault_mark(self) -> Path:
        assert self.state_dir is not None
        return self.state_dir / "runner-fault-fired"


def _make_root(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise DeviceStartError(f"the root {root} is a file, not a directory: name a directory "
                               "(it is created if missing)")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeviceStartError(f"cannot create the root {root}: {exc.strerror or exc}") from None


def _state_parent() -> str:
    """Where the state directory goes: a path a shell word needs no quotes for."""
    for candidate in ("/tmp", tempfile.gettempdir()):
        if (os.path.isdir(candidate) and os.access(candidate, os.W_OK)
                and re.fullmatch(r"[A-Za-z0-9/._-]+", candidate)):
            return candidate
    raise RuntimeError("no temporary directory with a plain path (letters, digits, /._-) "
                       "for the virtual device's root link")
