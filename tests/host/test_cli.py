"""The entry point itself: help, version, start-up cost, torch kept out."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import run_cli, run_cli_subprocess


def test_help_lists_the_commands():
    r = run_cli_subprocess("--help")
    assert r.code == 0
    for command in ("export", "pack", "inspect", "run"):
        assert command in r.stdout


def test_help_imports_no_torch_numpy_or_onnx():
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "edgepack", "--help"],
                          capture_output=True, text=True)
    assert proc.returncode == 0
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    for heavy in ("torch", "numpy", "onnx", "onnxruntime", "adbutils", "scipy"):
        assert heavy not in imported, heavy


def test_version():
    r = run_cli("--version")
    assert r.code == 0 and r.stdout.startswith("edgepack ")


def test_console_script_is_installed():
    proc = subprocess.run(["edgepack", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and "edgepack" in proc.stdout
