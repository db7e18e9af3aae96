"""The fuzz script builds and runs (briefly): the long runs are recorded in the issue, this keeps
the harness from rotting."""

from __future__ import annotations

import shutil
import subprocess

from tests.conftest import unavailable
from tests.runner.conftest import REPO


def test_fuzz_script_runs_clean_for_a_few_seconds(tmp_path):
    if shutil.which("clang") is None or shutil.which("cmake") is None:
        unavailable("clang and cmake are needed for libFuzzer")
    proc = subprocess.run(["sh", str(REPO / "bench" / "fuzz_tensorproto.sh"), "5",
                           str(tmp_path)], capture_output=True, text=True, timeout=600)
    if proc.returncode == 2 and "clang_rt.fuzzer" in proc.stdout + proc.stderr:
        unavailable("clang here has no libFuzzer runtime (Debian: libclang-rt-14-dev)")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no findings" in proc.stdout
