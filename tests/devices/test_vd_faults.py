"""Every fault knob of the virtual device, through the real adb server."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

import adbutils
import pytest

from edgepack.devices.virtual import Faults
from edgepack.devices.virtual.harness import AdbServer, AttachedDevice, DeviceFactory
from tests.conftest import unavailable

from .helpers import raw_push, raw_recv

TMP = "/data/local/tmp"
RUNNER_DIR = f"{TMP}/edgepack/bin/host"
RUNNER = f"{RUNNER_DIR}/edgepack-runner"
LOST = (adbutils.AdbError, OSError, EOFError)


def test_bandwidth_cap(virtual_device: AttachedDevice) -> None:
    d, device = virtual_device.adb, virtual_device.device
    assert device is not None
    data = os.urandom(1024 * 1024)
    device.faults.bandwidth = 2 * 1024 * 1024
    start = time.monotonic()
    assert raw_push(d, data, f"{TMP}/slow.bin") == ("OKAY", "")
    assert time.monotonic() - start >= 0.4  # 1 MiB at 2 MiB/s, less the scheduler's slack
    start = time.monotonic()
    assert d.sync.read_bytes(f"{TMP}/slow.bin") == data
    assert time.monotonic() - start >= 0.4
    device.faults.bandwidth = None
    start = time.monotonic()
    assert raw_push(d, data, f"{TMP}/fast.bin") == ("OKAY", "")
    assert time.monotonic() - start < 0.4


def test_latency_per_message(virtual_device: AttachedDevice) -> None:
    d, device = virtual_device.adb, virtual_device.device
    assert device is not None
    start = time.monotonic()
    d.shell("true")
    quick = time.monotonic() - start
    device.faults.latency = 0.1
    start = time.monotonic()
    assert d.shell("echo slow") == "slow"
    # OPEN, the OKAY for our output and the host's CLSE each wait 0.1 s.
    assert time.monotonic() - start >= 0.2 + quick * 0.5


def _wait_back(server: AdbServer, serial: str) -> None:
    """Until the server has the device again: it reconnects a dropped device by itself at
    once, but a device that stopped answering only after its ten-second retry; reconnect
    then, as a user would."""
    deadline = time.monotonic() + 1.0
    while server.state(serial) != "device":
        if time.monotonic() > deadline:
            server.reconnect(serial)
            return
        time.sleep(0.05)


def test_drop_after_bytes_once_then_retry(virtual_device: AttachedDevice,
                                          adb_env: AdbServer) -> None:
    d, device = virtual_device.adb, virtual_device.device
    assert device is not None
    data = os.urandom(1024 * 1024)
    device.faults.drop_after_bytes = 300_000
    with pytest.raises(LOST):
        raw_push(d, data, f"{TMP}/drop.bin")
    assert device.faults.drop_after_bytes is None  # once: the knob cleared itself
    target = virtual_device.root / "data/local/tmp/drop.bin"
    _wait_back(adb_env, virtual_device.serial)
    assert not target.exists()  # nothing partial that looks complete
    assert raw_push(d, data, f"{TMP}/drop.bin") == ("OKAY", "")
    assert target.read_bytes() == data


def test_an_unplugged_cable_comes_back_by_itself(virtual_device: AttachedDevice,
                                                 adb_env: AdbServer) -> None:
    device = virtual_device.device
    assert device is not None
    device.drop_connections()
    deadline = time.monotonic() + 10
    while True:  # no `adb connect`: the server reconnects a dropped TCP device at once
        try:
            assert virtual_device.adb.shell("echo again") == "again"
            break
        except adbutils.AdbError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert adb_env.state(virtual_device.serial) == "device"


def test_drop_always_hits_pulls_too(virtual_device: AttachedDevice,
                                    adb_env: AdbServer) -> None:
    d, device = virtual_device.adb, virtual_device.device
    assert device is not None
    data = os.urandom(512 * 1024)
    assert raw_push(d, data, f"{TMP}/p.bin") == ("OKAY", "")
    device.faults.drop_after_bytes = 100_000
    device.faults.drop_always = True
    for _ in range(2):
        with pytest.raises(LOST):
            raw_recv(d, f"{TMP}/p.bin")
        _wait_back(adb_env, virtual_device.serial)
    device.faults.drop_after_bytes = None
    assert raw_recv(d, f"{TMP}/p.bin") == (data, "")


def test_vanish_when_a_command_starts_then_revive(virtual_device: AttachedDevice,
                                                  adb_env: AdbServer) -> None:
    d, device = virtual_device.adb, virtual_device.device
    assert device is not None
    device.faults.vanish_on_command = r"edgepack-runner"
    device.faults.vanish_delay = 0.3
    start = time.monotonic()
    with pytest.raises(LOST):
        d.shell2(f"echo $$ > {TMP}/pid; sleep 30 # edgepack-runner", v2=True, timeout=20)
    assert time.monotonic() - start < 10
    assert device.vanished and device.faults.vanish_on_command is None
    pid = int((virtual_device.root / "data/local/tmp/pid").read_text())
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{pid}"):  # the device's commands die with it
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert adb_env.state(virtual_device.serial) != "device"
    assert "failed" in adb_env.client().connect(virtual_device.serial, timeout=5) or \
        adb_env.state(virtual_device.serial) != "device"
    device.revive()
    _wait_back(adb_env, virtual_device.serial)
    assert d.shell("echo back") == "back"


def test_vanish_after_seconds_and_revive_by_itself(virtual_devices: DeviceFactory,
                                                   adb_env: AdbServer) -> None:
    dev = virtual_devices.start(vanish_after=0.5, faults=Faults(revive_after=1.0))
    assert dev.device is not None
    deadline = time.monotonic() + 10
    while not dev.device.vanished:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    adb_env.wait_for_state(dev.serial, "offline", 5)
    while dev.device.vanished:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    _wait_back(adb_env, dev.serial)
    assert dev.adb.shell("echo back") == "back"


def test_quota_fills_the_disk(virtual_device: AttachedDevice, adb_env: AdbServer,
                              tmp_path: Path) -> None:
    d, device = virtual_device.adb, virtual_device.device
    assert device is not None
    device.faults.quota_bytes = 1024 * 1024
    assert raw_push(d, os.urandom(600_000), f"{TMP}/first.bin") == ("OKAY", "")
    status = raw_push(d, os.urandom(600_000), f"{TMP}/second.bin")
    assert status == ("FAIL", "write failed: No space left on device")
    assert not (virtual_device.root / "data/local/tmp/second.bin").exists()
    local = tmp_path / "third.bin"
    local.write_bytes(os.urandom(600_000))
    r = adb_env.run("push", str(local), f"{TMP}/third.bin", serial=virtual_device.serial)
    assert r.returncode != 0 and b"No space left on device" in r.stdout + r.stderr
    line = d.shell(f"df -k {TMP} | tail -n 1").split()
    assert int(line[1]) == 1024 and int(line[3]) <= (1024 * 1024 - 600_000) // 1024
    # Replacing a file frees its old bytes first, as on a real disk.
    assert raw_push(d, os.urandom(700_000), f"{TMP}/first.bin") == ("OKAY", "")
    device.faults.quota_bytes = None
    assert raw_push(d, os.urandom(600_000), f"{TMP}/second.bin") == ("OKAY", "")


# ---------------------------------------------------------------------------- runner faults


def _need_a_compiler() -> None:
    if shutil.which("cc") is None and shutil.which("gcc") is None and not os.environ.get("CI"):
        unavailable("the runner faults need a C compiler (apt-get install gcc)")


@pytest.fixture
def runner_device(virtual_device: AttachedDevice) -> AttachedDevice:
    """A device with a stand-in runner: the host's `echo`, a dynamically linked program,
    installed under the runner's name."""
    _need_a_compiler()
    echo = shutil.which("echo")
    assert echo is not None
    assert raw_push(virtual_device.adb, Path(echo).read_bytes(), RUNNER, mode=0o100755) == (
        "OKAY", "")
    return virtual_device


def _sha(dev: AttachedDevice) -> str:
    return hashlib.sha256((dev.root / RUNNER.lstrip("/")).read_bytes()).hexdigest()


def test_runner_crash(runner_device: AttachedDevice) -> None:
    d, device = runner_device.adb, runner_device.device
    assert device is not None
    before = _sha(runner_device)
    assert d.shell2(f"{RUNNER} ok", v2=True).stdout == "ok\n"
    device.set_runner_fault("crash")
    # --foreground: toybox's timeout before 0.8.11 loses the status of a command that dies at
    # once in a process group of its own (see runner/local.py's device_command).
    for command in (f"{RUNNER} x", f"cd {RUNNER_DIR} && ./edgepack-runner x",
                    f"LD_LIBRARY_PATH={RUNNER_DIR} timeout --foreground 10 {RUNNER} x"):
        r = d.shell2(command, v2=True)
        assert r.returncode == 128 + 11, (command, r)
        assert "injected runner crash (SIGSEGV)" in r.stderr
    assert device.runner_fault_fired
    # Only the runner: other programs, and the runner's own bytes, are untouched.
    assert d.shell2(f"echo fine; sha256sum {RUNNER}", v2=True).stdout.split()[:2] == [
        "fine", before]
    device.set_runner_fault(None)
    assert d.shell2(f"{RUNNER} ok", v2=True).returncode == 0


def test_runner_crash_once(runner_device: AttachedDevice) -> None:
    d, device = runner_device.adb, runner_device.device
    assert device is not None
    device.set_runner_fault("crash", once=True)
    assert d.shell2(f"{RUNNER} a", v2=True).returncode == 139
    assert d.shell2(f"{RUNNER} b", v2=True).stdout == "b\n"


def test_runner_hang_until_timeout(runner_device: AttachedDevice) -> None:
    d, device = runner_device.adb, runner_device.device
    assert device is not None
    device.set_runner_fault("hang")
    start = time.monotonic()
    r = d.shell2(f"timeout 1 {RUNNER} x", v2=True)
    assert r.returncode == 124 and 0.9 < time.monotonic() - start < 10
    assert "injected runner hang" in r.stderr


def test_faults_from_the_command_line(virtual_devices: DeviceFactory) -> None:
    _need_a_compiler()
    echo = Path(shutil.which("echo") or "/bin/echo").read_bytes()
    dev = virtual_devices.start(separate_process=True, args=[
        "--quota", str(len(echo) + 100_000), "--runner-fault", "crash", "--runner-fault-once",
        "--abi", "arm64-v8a", "--prop", "ro.soc.model=SM8550", "--battery-level", "33"])
    d = dev.adb
    assert raw_push(d, echo, RUNNER, mode=0o100755) == ("OKAY", "")
    assert raw_push(d, os.urandom(100_001), f"{TMP}/big.bin") == (
        "FAIL", "write failed: No space left on device")
    assert d.shell2(f"{RUNNER} a", v2=True).returncode == 139
    assert d.shell2(f"{RUNNER} b", v2=True).stdout == "b\n"
    assert d.shell("getprop ro.product.cpu.abi; getprop ro.soc.model").split() == [
        "arm64-v8a", "SM8550"]
    assert "  level: 33" in d.shell("dumpsys battery")
