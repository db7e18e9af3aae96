"""Fixtures every test module shares: the CLI driven in-process, example models, test data."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
IMAGES = EXAMPLES / "images"


def unavailable(reason: str) -> None:
    """A tool the test needs is missing: skip on a developer's machine, fail in CI (CI set),
    where scripts/setup.sh --dev installs everything and a skip would hide a broken setup."""
    if os.environ.get("CI"):
        pytest.fail(f"needed in CI: {reason}")
    pytest.skip(reason)


def onnx_test_data() -> Path:
    import onnx

    return Path(onnx.__file__).parent / "backend" / "test" / "data"


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self):  # noqa: ANN201 - any JSON value
        import json

        return json.loads(self.stdout)


def run_cli(*args: str | os.PathLike[str]) -> CliResult:
    """Run `edgepack ARGS` in this process through the real entry point (exit-code mapping
    included)."""
    from edgepack.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return CliResult(code, out.getvalue(), err.getvalue())


def run_cli_subprocess(*args: str | os.PathLike[str], **kwargs) -> CliResult:  # noqa: ANN003
    proc = subprocess.run(
        [sys.executable, "-m", "edgepack", *map(str, args)],
        capture_output=True, text=True, **kwargs,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cli():
    return run_cli


# Exported once per session: export runs torch and takes seconds per model.
EXPORTS = {
    "resnet20": ("resnet20.py:make_model", ["input:1x3x32x32:float32"], ["input:0:batch"]),
    "super_resolution": ("super_resolution.py:make_model", ["input:1x1x224x224:float32"], []),
    "mnist": ("mnist.py:make_model", ["input:1x1x28x28:float32"], []),
}


@pytest.fixture(scope="session")
def exported(tmp_path_factory) -> dict[str, Path]:
    """The tutorial models as ONNX files, exported through the CLI, plus the iris forest."""
    out = tmp_path_factory.mktemp("exported")
    models: dict[str, Path] = {}
    for name, (ref, inputs, dynamic) in EXPORTS.items():
        path = out / f"{name}.onnx"
        args = ["export", EXAMPLES / ref, "-o", path]
        for i in inputs:
            args += ["--input", i]
        for d in dynamic:
            args += ["--dynamic", d]
        result = run_cli(*args)
        assert result.code == 0, result.stderr + result.stdout
        models[name] = path
    sys.path.insert(0, str(EXAMPLES))
    try:
        import iris_forest
    finally:
        sys.path.remove(str(EXAMPLES))
    models["iris_forest"] = out / "iris_forest.onnx"
    models["iris_forest"].write_bytes(iris_forest.make_onnx(zipmap=False))
    models["iris_zipmap"] = out / "iris_zipmap.onnx"
    models["iris_zipmap"].write_bytes(iris_forest.make_onnx(zipmap=True))
    return models


# How each example is fed when packed: the tutorials' own kinds of input.
PACK_ARGS = {
    "resnet20": ["--input", f"input={IMAGES / 'cifar_32.png'}", "--mean", "0.49,0.48,0.45",
                 "--std", "0.25,0.24,0.26", "--random-sets", "1"],
    "super_resolution": ["--input", f"input={IMAGES / 'scene_320x240.jpg'}", "--color", "y"],
    "mnist": ["--input", f"input={IMAGES / 'digit_7.png'}", "--input",
              f"input={IMAGES / 'digit_0.png'}", "--color", "gray", "--mean", "0.1307",
              "--std", "0.3081"],
    "iris_forest": [],
}


@pytest.fixture(scope="session")
def bundles(exported, tmp_path_factory) -> dict[str, Path]:
    """Every example packed into a bundle through the CLI."""
    out = tmp_path_factory.mktemp("bundles")
    result: dict[str, Path] = {}
    for name, extra in PACK_ARGS.items():
        path = out / name
        r = run_cli("pack", exported[name], "-o", path, *extra)
        assert r.code == 0, r.stderr + r.stdout
        result[name] = path
    return result
