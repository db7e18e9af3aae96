"""What a deploy leaves on a device when it is cut off, and what it refuses to push: the
scratch of a run whose device vanished, a lock taken from under a run, a runner built for
another architecture."""

from __future__ import annotations

import pytest

from edgepack.devices.base import DeviceInfo
from edgepack.errors import EdgepackError, ExitCode
from tests.conftest import run_cli, unavailable

DEVICE_ROOT = "data/local/tmp/edgepack"  # inside a virtual device's root


def deploy(bundle, serial, *extra):  # noqa: ANN001, ANN002, ANN201
    return run_cli("deploy", bundle, "--device", serial, "--iterations", "2", "--json", *extra)


def test_the_scratch_of_a_run_cut_off_goes_with_the_next_deploy(bundles, host_runner,
                                                                  virtual_device, adb_env):
    """The device vanishes while the second input set runs: the first set's outputs are left in
    runs/<id>/, complete-looking. The next deploy, once it holds the lock, removes them; a run
    kept with --keep stays."""
    runs = virtual_device.root / DEVICE_ROOT / "runs"
    kept = deploy(bundles["mnist"], virtual_device.serial, "--keep")
    assert kept.code == 0, kept.stderr
    (kept_dir,) = runs.iterdir()

    virtual_device.device.faults.vanish_on_command = r"runs/[^ ]*/test_data_set_1"
    cut = deploy(bundles["mnist"], virtual_device.serial)
    assert cut.code == 3, cut.stderr
    (stale,) = [d for d in runs.iterdir() if d != kept_dir]
    assert (stale / "test_data_set_0" / "output_0.pb").is_file()

    virtual_device.device.revive()
    adb_env.reconnect(virtual_device.serial)
    again = deploy(bundles["mnist"], virtual_device.serial)
    assert again.code == 0, again.stderr
    assert not stale.exists()
    assert (kept_dir / "test_data_set_0" / "output_0.pb").is_file()
    assert [d.name for d in runs.iterdir()] == [kept_dir.name]
    assert any(stale.name in n and "removed" in n for n in again.json()["notes"]), \
        again.json()["notes"]
    assert not (virtual_device.root / DEVICE_ROOT / ".lock").exists()


def test_a_run_whose_lock_was_taken_over_stops(bundles, host_runner, virtual_device):
    """Another deploy breaks the lock while the first input set's runner is about to start:
    the second set does not run (it would make scratch on a device that is someone else's
    now), the deploy says why, and the new holder's lock stays."""
    import subprocess
    import sys

    from edgepack.devices.adb import AdbDevice
    from edgepack.devices.lock import device_lock
    from tests.devices.pausing import PauseOn

    pause = PauseOn(virtual_device, ("timeout",), ("*/runs/*/test_data_set_0",))
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgepack", "deploy", str(bundles["mnist"]), "--device",
         virtual_device.serial, "--iterations", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pause.wait_paused(120)
        with device_lock(AdbDevice(virtual_device.serial), "/" + DEVICE_ROOT, 60,
                         break_lock=True):
            owner = (virtual_device.root / DEVICE_ROOT / ".lock" / "owner").read_text()
            pause.go()
            _, stderr = proc.communicate(timeout=120)
            assert proc.returncode == 3, stderr
            assert "no longer holds the device lock" in stderr and "input set 1" in stderr
            assert (virtual_device.root / DEVICE_ROOT / ".lock" / "owner").read_text() == owner
    finally:
        pause.restore()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not (virtual_device.root / DEVICE_ROOT / ".lock").exists()


def _aarch64_runner():  # noqa: ANN202
    from edgepack.runner.build import build_runner

    try:
        return build_runner("linux-aarch64")
    except EdgepackError as exc:
        unavailable(f"the linux-aarch64 runner cannot be built here: {exc.message}")


def test_a_runner_for_another_architecture_is_refused_before_any_push(bundles, host_runner,
                                                                      virtual_devices):
    _aarch64_runner()
    phone = virtual_devices.start()  # x86_64, as this machine
    r = deploy(bundles["iris_forest"], phone.serial, "--runner-target", "linux-aarch64")
    assert r.code == 3, r.stderr
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1, line
    assert "aarch64" in line and "x86_64" in line and "--runner-target host" in line, line
    assert not (phone.root / DEVICE_ROOT / "bin").exists()  # nothing was pushed

    board = virtual_devices.start(linux_board=True)
    r = deploy(bundles["iris_forest"], board.serial, "--runner-target", "linux-aarch64")
    assert r.code == 3 and "--runner-target host" in r.stderr, r.stderr
    assert not (board.root / DEVICE_ROOT / "bin").exists()


def test_the_architecture_check_by_abi_list_and_uname(host_runner):
    from edgepack.deploy import check_arch

    aarch64 = _aarch64_runner()

    def info(abis: list[str], machine: str | None, target: str | None) -> DeviceInfo:
        return DeviceInfo("R58M", "android", "device", abis=abis, machine=machine,
                          runner_target=target)

    phone = info(["arm64-v8a", "armeabi-v7a", "armeabi"], "aarch64", "android-arm64-v8a")
    check_arch("R58M", phone, aarch64)  # fits
    with pytest.raises(EdgepackError) as e:
        check_arch("R58M", phone, host_runner)
    assert e.value.exit_code == ExitCode.DEVICE
    assert "x86_64" in e.value.message and "aarch64" in e.value.message
    assert "--runner-target android-arm64-v8a" in e.value.message
    # A 32-bit ARM board runs no aarch64 program, and no target edgepack builds fits RISC-V.
    with pytest.raises(EdgepackError, match="32-bit ARM"):
        check_arch("pi", info(["armv7l"], "armv7l", None), aarch64)
    with pytest.raises(EdgepackError, match="no runner target"):
        check_arch("rv", info(["riscv64"], "riscv64", None), host_runner)
    # A device that says nothing edgepack knows is not judged; nor is a virtual phone that
    # reports arm64 but whose kernel (this machine's) runs x86_64.
    check_arch("?", info([], None, None), aarch64)
    check_arch("mips", info(["mips"], "mips", None), aarch64)
    check_arch("vd", info(["arm64-v8a"], "x86_64", "host"), host_runner)
