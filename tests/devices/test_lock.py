"""The device lock on the virtual device: the first command of a locked section rides on the
take, the last ones on the release, and neither runs outside the lock."""

from __future__ import annotations

import contextlib
import os
import threading
import time

import pytest

from edgepack.devices.adb import DEVICE_ROOT, AdbDevice
from edgepack.devices.lock import device_lock
from edgepack.errors import EdgepackError, ExitCode
from tests.devices.pausing import PauseOn

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


# ---------------------------------------------------------------------------- atomic take


@pytest.fixture(params=["phone", "board"])
def lock_device(request, virtual_devices):  # noqa: ANN001, ANN201
    """A phone (mksh and toybox, when installed) and a Linux board (a POSIX sh and coreutils,
    whose mv moves into an existing directory by renameat2 rather than toybox's stat-then-rename):
    the gap before a rename behaves differently in each."""
    return virtual_devices.start(linux_board=request.param == "board")


def _owner(attached) -> str:  # noqa: ANN001
    path = attached.root / ROOT / ".lock" / "owner"
    return path.read_text().strip() if path.exists() else ""


def _refused(device: AdbDevice, **kwargs) -> EdgepackError:  # noqa: ANN003
    with pytest.raises(EdgepackError) as info:
        with device_lock(device, DEVICE_ROOT, 60, **kwargs):
            pass
    assert info.value.exit_code == ExitCode.DEVICE
    return info.value


@pytest.mark.parametrize("made", ["mkdir only", "owner, no lease yet"])
def test_a_half_made_lock_is_never_taken(virtual_device, made):
    """Another deploy caught between making `.lock` and writing its lease (as an older edgepack
    took its lock) holds the device: a second deploy must not take it as lapsed."""
    lock = f"{DEVICE_ROOT}/.lock"
    virtual_device.adb.shell(f"mkdir -p {lock}" + (
        "" if made == "mkdir only" else f" && echo 'tok otherhost 42' > {lock}/owner"))
    device = AdbDevice(virtual_device.serial)
    error = _refused(device)
    assert "locked by another deploy" in error.message
    assert (virtual_device.root / ROOT / ".lock").is_dir()
    if made != "mkdir only":
        assert "otherhost pid 42" in error.message and _owner(virtual_device) == "tok otherhost 42"
    # The user's word still takes it, and the release leaves nothing behind.
    with device_lock(device, DEVICE_ROOT, 60, break_lock=True):
        assert _owner(virtual_device).split()[-1] == str(os.getpid())
    assert not (virtual_device.root / ROOT / ".lock").exists()
    assert sorted(p.name for p in (virtual_device.root / ROOT).iterdir()) == []


def test_a_lock_taken_in_the_gap_before_the_rename_is_not_taken_again(lock_device):
    """Deploy A stands between seeing no `.lock` and renaming its own into place; B takes the
    device in that gap. A's rename must not win too (mv onto an existing directory moves into
    it), nor leave anything inside B's lock."""
    pause = PauseOn(lock_device, ("mv",))
    outcome: list[object] = []

    def take_a() -> None:
        try:
            with device_lock(AdbDevice(lock_device.serial), DEVICE_ROOT, 60):
                outcome.append("taken")
        except EdgepackError as exc:
            outcome.append(exc)

    a = threading.Thread(target=take_a)
    a.start()
    try:
        assert ".lock" in pause.wait_paused(20)
        with device_lock(AdbDevice(lock_device.serial), DEVICE_ROOT, 60):
            b_owner = _owner(lock_device)
            pause.go()
            a.join(60)
            assert len(outcome) == 1 and isinstance(outcome[0], EdgepackError), outcome
            assert "locked by another deploy" in outcome[0].message
            assert _owner(lock_device) == b_owner
            inside = {p.name for p in (lock_device.root / ROOT / ".lock").iterdir()}
            assert not [n for n in inside if n.startswith(".lock")], inside
    finally:
        pause.restore()
        a.join(60)
    assert not (lock_device.root / ROOT / ".lock").exists()


@pytest.mark.parametrize("pause_in", [("mkdir",), ("mv", "rm")], ids=["gap-1", "gap-2"])
@pytest.mark.parametrize("how", ["lapsed", "break-lock"])
def test_two_takeovers_of_one_lock_never_both_win(lock_device, how, pause_in):
    """Two deploys take over the same lock at once (its lease ran out, or both pass
    --break-lock): A stops inside its takeover, at its first step on the lock's directory
    (gap-1) or its first rename or removal there (gap-2); B goes through. Exactly one of them
    holds the device afterwards, the lock on it is the winner's, and the first holder's late
    release leaves it alone."""
    serial = lock_device.serial
    breaking = how == "break-lock"
    first = contextlib.ExitStack()  # X: alive and holding (break-lock), or its lease long gone
    first.enter_context(device_lock(AdbDevice(serial), DEVICE_ROOT, 3600 if breaking else -10))
    pause = PauseOn(lock_device, pause_in)
    a_holds, a_may_release = threading.Event(), threading.Event()
    a_outcome: list[object] = []

    def take_a() -> None:
        try:
            with device_lock(AdbDevice(serial), DEVICE_ROOT, 60, break_lock=breaking):
                a_outcome.append(_owner(lock_device))
                a_holds.set()
                a_may_release.wait(60)
        except EdgepackError as exc:
            a_outcome.append(exc)

    a = threading.Thread(target=take_a)
    a.start()
    b = contextlib.ExitStack()
    try:
        pause.wait_paused(20)
        try:
            b.enter_context(device_lock(AdbDevice(serial), DEVICE_ROOT, 60,
                                        break_lock=breaking))
            b_owner = _owner(lock_device)
        except EdgepackError as exc:
            assert "locked by another deploy" in exc.message
            b_owner = None
        pause.go()
        deadline = time.monotonic() + 60
        while not (a_holds.is_set() or a_outcome) and time.monotonic() < deadline:
            time.sleep(0.02)
        a_won = a_holds.is_set()
        assert a_won != (b_owner is not None), (a_outcome, b_owner)
        winner = a_outcome[0] if a_won else b_owner
        if not a_won:
            assert "locked by another deploy" in a_outcome[0].message
        assert _owner(lock_device) == winner
        first.close()  # X's release, too late: the lock is not X's now
        assert _owner(lock_device) == winner
    finally:
        pause.restore()
        a_may_release.set()
        a.join(60)
        b.close()
        first.close()
    assert not (lock_device.root / ROOT / ".lock").exists()
