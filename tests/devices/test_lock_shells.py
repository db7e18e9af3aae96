"""The device lock's commands under the shells and tools devices have: Android's mksh with
toybox's applets alone on PATH (a phone), and a POSIX sh with GNU coreutils (a Linux board). The
commands run here, on a directory, through the same device_lock a deploy uses."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgepack.devices.base import ShellResult
from edgepack.devices.lock import device_lock, release_held_locks, take_command
from edgepack.errors import EdgepackError, ExitCode
from tests.conftest import unavailable


@dataclass
class LocalDevice:
    """A directory of this machine as a device: every command is `SHELL -c COMMAND` with only
    the userland's PATH."""

    serial: str
    shell_program: str
    path: str

    def shell(self, command: str, timeout: float | None = None) -> ShellResult:
        p = subprocess.run([self.shell_program, "-c", command], env={"PATH": self.path},
                           capture_output=True, text=True, timeout=timeout or 60)
        return ShellResult(p.returncode, p.stdout, p.stderr)


@pytest.fixture(params=["mksh+toybox", "sh+coreutils"])
def device(request, tmp_path) -> LocalDevice:
    if request.param == "sh+coreutils":
        return LocalDevice(request.param, "/bin/sh", "/usr/bin:/bin")
    mksh, toybox = shutil.which("mksh"), shutil.which("toybox")
    if not (mksh and toybox):
        unavailable("mksh and toybox are not installed (apt-get install mksh toybox)")
    bin_dir = tmp_path / "toybox-bin"
    bin_dir.mkdir()
    applets = subprocess.run([toybox], capture_output=True, text=True).stdout.split()
    for name in applets:
        (bin_dir / name).symlink_to(toybox)
    return LocalDevice(request.param, mksh, str(bin_dir))


@pytest.fixture
def root(tmp_path) -> Path:
    return tmp_path / "dev root" / "edgepack"  # a space: every path is quoted


def owner(root: Path) -> str:
    path = root / ".lock" / "owner"
    return path.read_text().strip() if path.exists() else ""


def refused(device: LocalDevice, root: Path, **kwargs) -> EdgepackError:  # noqa: ANN003
    with pytest.raises(EdgepackError) as info:
        with device_lock(device, str(root), 60, **kwargs):
            pass
    assert info.value.exit_code == ExitCode.DEVICE, info.value.message
    assert "locked by another deploy" in info.value.message
    return info.value


def test_take_hold_release(device, root):
    with device_lock(device, str(root), 60, then="echo then-ran") as held:
        assert held.then_output == "then-ran\n"
        names = sorted(p.name for p in (root / ".lock").iterdir())
        assert names == ["owner", "since", f"token.{held.token}", "until"]
        assert owner(root).split()[0] == held.token
        until = int((root / ".lock" / "until").read_text())
        assert until - int((root / ".lock" / "since").read_text()) == 60
        error = refused(device, root)  # this process holds it, alive
        assert f"pid {os.getpid()}" in error.message
    assert sorted(p.name for p in root.iterdir()) == []  # nothing beside it either


def test_a_lapsed_lock_is_taken_over_and_its_late_release_is_harmless(device, root):
    lapsed = device_lock(device, str(root), -10)
    lapsed.__enter__()
    try:
        with device_lock(device, str(root), 60) as held:
            assert owner(root).split()[0] == held.token
            lapsed.__exit__(None, None, None)
            assert owner(root).split()[0] == held.token
    finally:
        lapsed.__exit__(None, None, None)
    assert not (root / ".lock").exists()


def test_a_half_made_or_old_lock(device, root):
    """A `.lock` without a lease is held; --break-lock takes it, an older edgepack's lock
    (owner and until, no token file) included."""
    (root / ".lock").mkdir(parents=True)
    refused(device, root)
    with device_lock(device, str(root), 60, break_lock=True) as held:
        assert owner(root).split()[0] == held.token
    (root / ".lock").mkdir()
    (root / ".lock" / "owner").write_text("tok otherhost 42\n")
    (root / ".lock" / "until").write_text("1\n")  # lapsed long ago
    with device_lock(device, str(root), 60) as held:
        assert owner(root).split()[0] == held.token
    assert not (root / ".lock").exists()


def test_a_lock_made_in_the_gap_before_the_rename(device, root, tmp_path):
    """mv is replaced by one that first lets a competitor take the lock completely (its own
    take command, under the same shell), then does the rename it was asked for: the fixed
    interleaving of two takes that both saw no lock."""
    state = tmp_path / "gap"
    state.mkdir()
    competitor = take_command(str(root), "c0ffee", "c0ffee otherhost 7", 600)
    (state / "competitor").write_text(competitor)
    real_mv = shutil.which("mv", path=device.path)
    assert real_mv
    q = shlex.quote
    wrapper_dir = tmp_path / "gap-bin"
    wrapper_dir.mkdir()
    (wrapper_dir / "mv").write_text(
        f"#!{device.shell_program}\n"
        f"case \"$2\" in */.lock) if mkdir {q(str(state / 'fired'))} 2>/dev/null; then "
        f"{q(device.shell_program)} -c \"$(cat {q(str(state / 'competitor'))})\" >/dev/null; "
        "fi ;; esac\n"
        f"exec {q(real_mv)} \"$@\"\n")
    (wrapper_dir / "mv").chmod(0o755)
    gap = LocalDevice(device.serial, device.shell_program, f"{wrapper_dir}:{device.path}")
    error = refused(gap, root)
    assert (state / "fired").is_dir()  # the competitor did go first, in the gap
    assert "otherhost pid 7" in error.message
    assert owner(root) == "c0ffee otherhost 7"
    assert sorted(p.name for p in (root / ".lock").iterdir()) == [
        "owner", "since", "token.c0ffee", "until"]
    assert sorted(p.name for p in root.iterdir()) == [".lock"]


def test_the_guard_runs_a_command_only_while_the_lock_is_held(device, root):
    with device_lock(device, str(root), 60) as held:
        ok = device.shell(held.guard("echo ran"))
        assert (ok.exit_code, ok.stdout) == (0, "ran\n")
        held.check_guard(device.serial, ok, "the run")
        with device_lock(device, str(root), 60, break_lock=True):
            lost = device.shell(held.guard("echo ran"))
            assert lost.exit_code == 3 and "ran" not in lost.stdout
            with pytest.raises(EdgepackError, match="no longer holds the device lock"):
                held.check_guard(device.serial, lost, "the run")


def test_an_interrupt_releases_the_locks_worker_threads_hold(device, root):
    """A bench's workers hold their locks inside deploys no KeyboardInterrupt reaches: the
    interrupt path releases them (release commands first), the worker's own late release
    touches nothing, and a worker that takes a lock after that gives it back at once."""
    holding, left, may_leave, may_retry = (threading.Event() for _ in range(4))
    late: list[object] = []

    def worker() -> None:
        with device_lock(device, str(root), 600) as held:
            held.on_release(f"rm -rf {shlex.quote(str(root / 'runs' / 'r1'))}")
            holding.set()
            may_leave.wait(30)
        left.set()
        may_retry.wait(30)
        try:
            with device_lock(device, str(root), 600):
                late.append("taken")
        except EdgepackError as exc:
            late.append(exc)

    (root / "runs" / "r1").mkdir(parents=True)
    t = threading.Thread(target=worker)
    t.start()
    try:
        assert holding.wait(30)
        assert release_held_locks([t]) == 1
        assert not (root / ".lock").exists() and not (root / "runs" / "r1").exists()
        with device_lock(device, str(root), 60) as mine:  # the device is free for others
            may_leave.set()
            assert left.wait(30)
            assert owner(root).split()[0] == mine.token  # the worker's exit left it alone
        may_retry.set()
        t.join(30)
    finally:
        may_leave.set()
        may_retry.set()
        t.join(30)
    assert len(late) == 1 and isinstance(late[0], EdgepackError), late
    assert "interrupted" in late[0].message
    assert not (root / ".lock").exists()
