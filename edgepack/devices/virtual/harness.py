"""Plumbing for tests and benchmarks: a private adb server, and virtual devices attached to it.

    with AdbServer() as server, DeviceFactory(server, workdir) as devices:
        dev = devices.start()                    # in-process: dev.device.faults is live
        dev.adb.shell("getprop ro.product.model")  # an adbutils AdbDevice via that server
        other = devices.start(separate_process=True, args=["--bandwidth", "10M"])

The server is the real `adb` (`adb -P PORT nodaemon server`) on a free port, stopped by its pid,
never with kill-server, so a developer's own server on 5037 is never touched. It runs with
ADB_EMU=0 (no probing of 5555-5585: it would attach other people's emulators and devices),
ADB_USB=0 and ADB_MDNS=0 (it never competes for a phone on USB with the default server).
Point code under test at it with `server.env()` (ANDROID_ADB_SERVER_PORT/HOST).

The server also gets a HOME of its own and no ADB_VENDOR_KEYS, so the only key it signs adb's
authentication with is the one it creates there at start (`server.public_key`): a test of
authentication depends on nothing in the developer's ~/.android, and writes nothing there.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepack.devices.virtual.server import DeviceConfig, VirtualDevice

ADB = os.environ.get("EDGEPACK_TEST_ADB", "adb")


def free_port(host: str = "127.0.0.1") -> int:
    # The kernel's ephemeral range (32768+) is far from adb's 5037 and 5555-5585.
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class AdbError(RuntimeError):
    pass


class AdbServer:
    def __init__(self, port: int | None = None, adb: str = ADB,
                 log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.adb = adb
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self.home: Path | None = None  # the server's private HOME while it runs

    @property
    def public_key(self) -> Path:
        """The server's ~/.android/adbkey.pub: the key a device must accept to let it in."""
        if self.home is None:
            raise AdbError("the adb server is not running")
        return self.home / ".android" / "adbkey.pub"

    @property
    def private_key(self) -> Path:
        return self.public_key.with_suffix("")

    def env(self) -> dict[str, str]:
        """What a process needs in its environment to use this server, adb and adbutils alike."""
        return {"ANDROID_ADB_SERVER_PORT": str(self.port), "ANDROID_ADB_SERVER_HOST": self.host,
                "ADB_EMU": "0", "ADB_USB": "0", "ADB_MDNS": "0"}

    def start(self, timeout: float = 20.0) -> AdbServer:
        self.home = Path(tempfile.mkdtemp(prefix="adb-home-"))
        env = {**os.environ, **self.env(), "HOME": str(self.home)}
        env.pop("ANDROID_SERIAL", None)
        env.pop("ADB_VENDOR_KEYS", None)
        if self.log_path is not None:
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [self.adb, "-P", str(self.port), "nodaemon", "server"], env=env,
            stdin=subprocess.DEVNULL, stdout=self._log or subprocess.DEVNULL,
            stderr=self._log or subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AdbError(f"adb server on port {self.port} exited with {self.proc.returncode}")
            # The key is written at start, before the server accepts clients.
            if self._answers() and self.public_key.exists():
                return self
            if time.monotonic() > deadline:
                what = "write its key" if self._answers() else "answer"
                self.stop()
                raise AdbError(f"adb server on port {self.port} did not {what}")
            time.sleep(0.05)

    def _answers(self) -> bool:
        # A raw host:version, not adbutils: a failed adbutils connection runs `adb start-server`
        # on the default port, the very server this one exists to stay away from.
        try:
            with socket.create_connection((self.host, self.port), timeout=2) as s:
                s.sendall(b"000chost:version")
                return s.recv(4) == b"OKAY"
        except OSError:
            return False

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()  # by pid: this server and nothing else
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        home, self.home = self.home, None
        if home is not None:
            shutil.rmtree(home, ignore_errors=True)

    def __enter__(self) -> AdbServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client(self) -> Any:
        import adbutils

        return adbutils.AdbClient(host=self.host, port=self.port, socket_timeout=60)

    def run(self, *args: str, serial: str | None = None, timeout: float = 120,
            input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        """The real adb client against this server: `run("shell", "ls", serial=s)`."""
        cmd = [self.adb, "-P", str(self.port)]
        if serial:
            cmd += ["-s", serial]
        env = {**os.environ, **self.env()}
        env.pop("ANDROID_SERIAL", None)
        return subprocess.run(
            [*cmd, *args], env=env, capture_output=True, timeout=timeout,
            stdin=subprocess.DEVNULL if input is None else None, input=input,
        )

    def connect(self, address: str, timeout: float = 15.0) -> Any:
        """`adb connect` and wait until the device is in state `device`; its AdbDevice."""
        client = self.client()
        deadline = time.monotonic() + timeout
        while True:
            answer = client.connect(address, timeout=timeout)
            if "connected to" in answer:
                break
            if time.monotonic() > deadline:
                raise AdbError(f"adb connect {address}: {answer}")
            time.sleep(0.1)
        self.wait_for_state(address, "device", deadline - time.monotonic())
        return client.device(address)

    def state(self, serial: str) -> str | None:
        for item in self.client().list():
            if item.serial == serial:
                return item.state
        return None

    def wait_for_state(self, serial: str, state: str | None, timeout: float = 15.0) -> None:
        """Until `serial` is listed in `state` (None: not listed at all)."""
        deadline = time.monotonic() + max(timeout, 0.1)
        while True:
            current = self.state(serial)
            if current == state:
                return
            if time.monotonic() > deadline:
                raise AdbError(f"{serial} is {current or 'not listed'}, not {state}")
            time.sleep(0.05)

    def reconnect(self, address: str, timeout: float = 15.0) -> Any:
        """After a device dropped off: the server retries a lost TCP device only every ten
        seconds or so, so disconnect and connect again, as a user would."""
        self.disconnect(address)
        return self.connect(address, timeout)

    def disconnect(self, address: str) -> None:
        try:
            self.client().disconnect(address)
        except Exception:  # already gone: nothing to undo
            pass


class DeviceProcess:
    """A virtual device in its own Python process (`python -m edgepack.virtual_device`), so
    several devices do not share one interpreter's lock."""

    def __init__(self, root: Path, args: list[str] | None = None,
                 log_path: Path | None = None) -> None:
        self.root = Path(root)
        self.args = list(args or [])
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> DeviceProcess:
        import edgepack

        with tempfile.TemporaryDirectory(prefix="vd-port-") as tmp:
            port_file = Path(tmp) / "port"
            env = dict(os.environ)
            package_parent = str(Path(edgepack.__file__).resolve().parents[1])
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (package_parent, env.get("PYTHONPATH")) if p)
            log = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115
            try:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "edgepack.virtual_device", "--root", str(self.root),
                     "--port", "0", "--port-file", str(port_file), *self.args],
                    env=env, stdin=subprocess.DEVNULL, stdout=log or subprocess.DEVNULL,
                    stderr=log or subprocess.DEVNULL,
                )
            finally:
                if log is not None:
                    log.close()
            deadline = time.monotonic() + timeout
            while not port_file.exists():
                if self.proc.poll() is not None:
                    raise AdbError(f"the virtual device exited with {self.proc.returncode}"
                                   + (f"; see {self.log_path}" if self.log_path else ""))
                if time.monotonic() > deadline:
                    self.stop()
                    raise AdbError("the virtual device did not start listening")
                time.sleep(0.02)
            self.port = int(port_file.read_text().strip())
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclass
class AttachedDevice:
    """A virtual device the server has connected: use `adb` (adbutils) or `serial`."""

    serial: str
    root: Path
    adb: Any  # adbutils.AdbDevice through the private server
    device: VirtualDevice | None = None  # in-process devices: faults and props are live
    process: DeviceProcess | None = None


class DeviceFactory:
    """Starts virtual devices under `workdir` and attaches them to `server`; close() undoes
    everything it did, in order (disconnect, then stop)."""

    def __init__(self, server: AdbServer, workdir: Path, userland: str | None = None) -> None:
        self.server = server
        self.userland = userland  # every device's (DeviceConfig.userland) unless start() names one
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.attached: list[AttachedDevice] = []

    def start(self, *, separate_process: bool = False, root: Path | None = None,
              args: list[str] | None = None, connect: bool = True,
              **config: Any) -> AttachedDevice:
        """An in-process device (config: DeviceConfig fields) or, with subprocess=True, one in
        its own process with separate_process=True (args: CLI flags of `edgepack
        virtual-device`)."""
        index = len(self.attached)
        root = Path(root) if root else self.workdir / f"device{index}"
        if self.userland is not None:
            if separate_process and "--userland" not in (args or []):
                args = [*(args or []), "--userland", self.userland]
            elif not separate_process:
                config.setdefault("userland", self.userland)
        if separate_process:
            if config:
                raise TypeError("a subprocess device takes CLI flags in args=, not config")
            process = DeviceProcess(root, args, log_path=self.workdir / f"device{index}.log")
            process.start()
            attached = AttachedDevice(process.address, root, None, process=process)
        else:
            device = VirtualDevice(DeviceConfig(root=root, **config)).start()
            attached = AttachedDevice(device.address, root, None, device=device)
        self.attached.append(attached)
        if connect:
            attached.adb = self.server.connect(attached.serial)
        else:
            attached.adb = self.server.client().device(attached.serial)
        return attached

    def close(self) -> None:
        for attached in reversed(self.attached):
            self.server.disconnect(attached.serial)
            if attached.device is not None:
                attached.device.stop()
            if attached.process is not None:
                attached.process.stop()
        self.attached.clear()

    def __enter__(self) -> DeviceFactory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
