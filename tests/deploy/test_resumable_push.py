"""Resumable pushes: a push that broke off keeps its verified prefix on the device, and the next
one sends only the rest. Real adb server, real virtual device, real kills."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgepack.devices.adb import AdbDevice
from edgepack.devices.staging import PART_SUFFIX, LocalFile, segment_size, sync_dir
from edgepack.errors import EdgepackError, ExitCode
from tests.conftest import REPO

MiB = 2**20
REMOTE = "/data/local/tmp/edgepack/resume"


def make_file(path: Path, size: int, seed: int = 0) -> LocalFile:
    rng = np.random.default_rng(seed)
    digest = hashlib.sha256()
    with open(path, "wb") as fh:
        left = size
        while left:
            block = rng.integers(0, 256, min(left, 16 * MiB), dtype=np.uint8).tobytes()
            fh.write(block)
            digest.update(block)
            left -= len(block)
    return LocalFile(path.name, path, digest.hexdigest(), size)


def on_device(root: Path, name: str) -> Path:
    return root / REMOTE.lstrip("/") / name


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(MiB):
            digest.update(block)
    return digest.hexdigest()


class Counted:
    """A TransferProgress that counts the bytes push sends."""

    def __init__(self) -> None:
        self.sent = 0
        self.planned = 0

    def start(self, label, total_bytes):  # noqa: ANN001, ANN201
        self.planned += total_bytes

        def advance(n: int) -> None:
            self.sent += n

        return advance

    def finish(self) -> None:
        pass


PUSH = """
import sys
from pathlib import Path
from edgepack.devices.adb import AdbDevice
from edgepack.errors import EdgepackError, ExitCode
from edgepack.devices.staging import LocalFile, sync_dir

serial, path, sha, remote = sys.argv[1:]
p = Path(path)
sync_dir(AdbDevice(serial), [LocalFile(p.name, p, sha, p.stat().st_size)], remote, "big")
"""


def test_a_push_killed_half_way_resumes(virtual_device, adb_env, tmp_path):
    """The issue's figure: a 256 MiB file, the pushing process killed at half-way; the retry
    sends at most 55 % of the bytes, and the file arrives whole."""
    f = make_file(tmp_path / "weights.bin", 256 * MiB)
    part = on_device(virtual_device.root, "." + f.rel + PART_SUFFIX)
    # Slow enough that half-way is seen, as over USB.
    virtual_device.device.faults.bandwidth = 96 * MiB
    proc = subprocess.Popen([sys.executable, "-c", PUSH, virtual_device.serial, str(f.path),
                             f.sha256, REMOTE], cwd=REPO, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if part.exists() and part.stat().st_size >= f.size // 2:
            break
        time.sleep(0.01)
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    virtual_device.device.faults.bandwidth = None
    kept = part.stat().st_size
    assert f.size // 2 <= kept < f.size
    # Nothing that looks complete: only the hidden part (and maybe a segment) is there.
    assert not on_device(virtual_device.root, f.rel).exists()

    counted = Counted()
    t0 = time.perf_counter()
    stats = sync_dir(AdbDevice(virtual_device.serial), [f], REMOTE, "big", counted)
    took = time.perf_counter() - t0
    share = counted.sent / f.size
    print(f"\n256 MiB push killed at {kept / MiB:.1f} MiB kept; the retry sent "
          f"{counted.sent / MiB:.1f} MiB = {share:.1%} of the file in {took:.2f} s "
          f"(segment {segment_size(f.size) / MiB:g} MiB)")
    assert share <= 0.55
    assert counted.sent == stats.bytes_pushed == f.size - kept == counted.planned
    assert stats.bytes_resumed == kept
    assert sha256(on_device(virtual_device.root, f.rel)) == f.sha256
    assert not list(on_device(virtual_device.root, "").glob("*" + PART_SUFFIX))


def test_a_part_that_is_no_prefix_is_pushed_again(virtual_device, adb_env, tmp_path):
    f = make_file(tmp_path / "w.bin", 20 * MiB, seed=1)
    other = make_file(tmp_path / "other.bin", 9 * MiB, seed=2)
    part = on_device(virtual_device.root, "." + f.rel + PART_SUFFIX)
    part.parent.mkdir(parents=True)
    part.write_bytes(other.path.read_bytes())  # a part of some other file
    counted = Counted()
    stats = sync_dir(AdbDevice(virtual_device.serial), [f], REMOTE, "w", counted)
    assert counted.sent == f.size and stats.bytes_resumed == 0
    assert sha256(on_device(virtual_device.root, f.rel)) == f.sha256
    assert not part.exists()


def test_a_whole_part_is_only_moved_into_place(virtual_device, adb_env, tmp_path):
    """Killed after the last byte, before the rename: nothing is sent again."""
    f = make_file(tmp_path / "w.bin", 12 * MiB, seed=3)
    part = on_device(virtual_device.root, "." + f.rel + PART_SUFFIX)
    part.parent.mkdir(parents=True)
    part.write_bytes(f.path.read_bytes())
    counted = Counted()
    stats = sync_dir(AdbDevice(virtual_device.serial), [f], REMOTE, "w", counted)
    assert counted.sent == 0 and stats.bytes_resumed == f.size and stats.files_pushed == 1
    assert sha256(on_device(virtual_device.root, f.rel)) == f.sha256


def test_a_lost_connection_mid_push_resumes(virtual_device, adb_env, tmp_path):
    """The device drops off while the pieces are joined at 12 MiB and comes back: the retry
    finds the prefix it kept and sends the rest."""
    f = make_file(tmp_path / "w.bin", 40 * MiB, seed=4)
    assert segment_size(f.size) == 4 * MiB
    faults = virtual_device.device.faults
    faults.vanish_on_command = rf"\" = {12 * MiB} \]"
    faults.revive_after = 1.0
    device = AdbDevice(virtual_device.serial)
    with pytest.raises(EdgepackError) as caught:
        sync_dir(device, [f], REMOTE, "w")
    assert caught.value.exit_code == ExitCode.DEVICE
    print(f"\n{caught.value.message}")
    assert not on_device(virtual_device.root, f.rel).exists()
    adb_env.wait_for_state(virtual_device.serial, "device", 30)
    counted = Counted()
    stats = sync_dir(device, [f], REMOTE, "w", counted)
    assert stats.bytes_resumed >= 8 * MiB and counted.sent == f.size - stats.bytes_resumed
    assert sha256(on_device(virtual_device.root, f.rel)) == f.sha256
