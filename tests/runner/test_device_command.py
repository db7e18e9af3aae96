"""The runner's device command line under the userlands devices have: Android's mksh with
toybox's applets alone on PATH, and a POSIX sh with GNU coreutils. Stand-in runners (small C
programs) crash at once, hang, or ignore SIGTERM; the exit status the command ends with is what
deploy reads to say what happened."""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from edgepack.runner.local import device_command
from edgepack.runner.result import RunConfig
from tests.conftest import unavailable

_RUNNERS = {
    "crash": "#include <signal.h>\nint main(void) { raise(SIGSEGV); return 0; }\n",
    "hang": "#include <unistd.h>\nint main(void) { for (;;) pause(); }\n",
    "stubborn": "#include <signal.h>\n#include <unistd.h>\n"
                "int main(void) { signal(SIGTERM, SIG_IGN); for (;;) pause(); }\n",
}


@pytest.fixture(params=["mksh+toybox", "sh+coreutils"])
def userland(request, tmp_path) -> tuple[str, str]:
    """(shell, PATH) of a device's userland."""
    if request.param == "sh+coreutils":
        return "/bin/sh", "/usr/bin:/bin"
    mksh, toybox = shutil.which("mksh"), shutil.which("toybox")
    if not (mksh and toybox):
        unavailable("mksh and toybox are not installed (apt-get install mksh toybox)")
    bin_dir = tmp_path / "system-bin"
    bin_dir.mkdir()
    for name in subprocess.run([toybox], capture_output=True, text=True).stdout.split():
        (bin_dir / name).symlink_to(toybox)
    (bin_dir / "sh").symlink_to(mksh)
    return mksh, str(bin_dir)


def _runner(tmp_path: Path, kind: str) -> Path:
    """A runner directory whose edgepack-runner behaves as `kind`."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        unavailable("no C compiler (apt-get install gcc)")
    directory = tmp_path / f"runner {kind}"
    directory.mkdir()
    (directory / "r.c").write_text(_RUNNERS[kind])
    subprocess.run([cc, "-O1", "-o", str(directory / "edgepack-runner"), str(directory / "r.c")],
                   check=True)
    return directory


def _run(userland: tuple[str, str], command: str, one_cpu: bool = False) -> int:
    shell, path = userland
    cpu = min(os.sched_getaffinity(0))
    return subprocess.run([shell, "-c", command], env={"PATH": path}, capture_output=True,
                          timeout=60, preexec_fn=(lambda: os.sched_setaffinity(0, {cpu}))
                          if one_cpu else None).returncode


def test_a_runner_that_crashes_at_once_is_reported_as_crashed(userland, tmp_path):
    """toybox 0.8.9's timeout (Debian 12; Android 14 and older carry such toyboxes) loses the
    status of a command that dies before timeout is ready for it, and exits 127. On one CPU the
    runner, just exec'd, runs to its end before timeout does: most runs lost the status so,
    when the runner was timeout's child in a process group of its own."""
    runner = _runner(tmp_path, "crash")
    command = device_command(str(runner), "/m", "/i", None, RunConfig(cpu_affinity="1"))
    codes = collections.Counter(_run(userland, command, one_cpu=True) for _ in range(100))
    assert codes == {128 + 11: 100}, codes


@pytest.mark.parametrize("kind, code, seconds", [("hang", 124, 1), ("stubborn", 137, 6)])
def test_a_hung_runner_is_killed_on_the_device(userland, tmp_path, kind, code, seconds):
    runner = _runner(tmp_path, kind)
    command = device_command(str(runner), "/m", "/i", None, RunConfig(timeout_s=1))
    start = time.monotonic()
    assert _run(userland, command) == code
    assert seconds - 0.5 < time.monotonic() - start < seconds + 5
    left = subprocess.run(["pgrep", "-f", str(runner)], capture_output=True, text=True).stdout
    assert not left.strip(), left
