"""The device lock on the virtual device: the first command of a locked section rides on the
take, the last ones on the release, and neither runs outside the lock."""

from __future__ import annotations

import pytest

from edgepack.devices.adb import DEVICE_ROOT, AdbDevice
from edgepack.devices.lock import device_lock
from edgepack.errors import EdgepackError, ExitCode

ROOT = DEVICE_ROOT.lstrip("/")


def test_then_runs_under_the_lock_and_release_commands_before_the_release(virtual_device):
    device = AdbDevice(virtual_device.serial)
    lock_dir = virtual_device.root / ROOT / ".lock"
    with device_lock(device, DEVICE_ROOT, 60,
                     then=f"ls {DEVICE_ROOT}/.lock; echo 'two words'") as held:
        assert held.then_output is not None
        assert held.then_output.split("\n")[:2] == ["owner", "since"]
        assert "two words" in held.then_output
        assert lock_dir.is_dir()
        held.on_release(f"cat {DEVICE_ROOT}/.lock/owner > {DEVICE_ROOT}/seen-at-release")
    assert not lock_dir.exists()
    seen = (virtual_device.root / ROOT / "seen-at-release").read_text()
    assert seen.strip()  # the owner file was still there when the release commands ran


def test_a_failing_then_still_holds_and_releases(virtual_device):
    device = AdbDevice(virtual_device.serial)
    with device_lock(device, DEVICE_ROOT, 60, then="false; exit_code_of_a_typo_xyz") as held:
        assert held.then_output is not None
        assert (virtual_device.root / ROOT / ".lock").is_dir()
    assert not (virtual_device.root / ROOT / ".lock").exists()


def test_then_never_runs_when_the_device_is_held(virtual_device):
    device = AdbDevice(virtual_device.serial)
    marker = virtual_device.root / ROOT / "then-ran"
    with device_lock(device, DEVICE_ROOT, 60):
        # The holder here is this very process, alive and holding: not taken over.
        with pytest.raises(EdgepackError) as info:
            with device_lock(device, DEVICE_ROOT, 60, then=f"touch {DEVICE_ROOT}/then-ran"):
                pass
        assert info.value.exit_code == ExitCode.DEVICE and "locked" in info.value.message
        assert not marker.exists()
