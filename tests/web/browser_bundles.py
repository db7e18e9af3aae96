"""Small bundles for the browser-as-a-device tests (test_executor*.py, test_cli_browser*.py),
packed through the CLI, and a check that a test left no process of its own running.

Import the fixtures into a test module: `from tests.web.browser_bundles import conv_bundle`.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import onnx_test_data, run_cli, unavailable


def need_browser() -> None:
    """Chromium and Playwright, or skip (fail in CI)."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        unavailable("Playwright for Python is not installed")
    if not (Path("/usr/bin/chromium").exists() or shutil.which("chromium")
            or os.environ.get("EDGEPACK_CHROMIUM")):
        unavailable("no Chromium (Debian's chromium package)")


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium (and its server) for a test module's direct Browser.run calls."""
    from edgepack.web.browser import open_browser

    need_browser()
    with open_browser() as opened:
        yield opened


@pytest.fixture(scope="module")
def conv_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """onnx's pytorch-converted Conv2d (IR 3, opset 6) with its own input set."""
    case = onnx_test_data() / "pytorch-converted" / "test_Conv2d"
    path = tmp_path_factory.mktemp("web") / "conv"
    r = run_cli("pack", case / "model.onnx", "-o", path, "--name", "conv",
                "--inputs-from", case / "test_data_set_0")
    assert r.code == 0, r.stderr
    return path


@pytest.fixture(scope="module")
def erf_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One Erf node: onnxruntime (host and web) runs it, ONNX.js has no Erf on any backend
    (its docs/operators.md)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    root = tmp_path_factory.mktemp("web-erf")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Erf", ["x"], ["y"])], "erf", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = 4
    onnx.save(model, root / "erf.onnx")
    (root / "in").mkdir()
    (root / "in" / "input_0.pb").write_bytes(numpy_helper.from_array(
        np.array([[0.1, -0.5, 1.0, 2.0]], np.float32), "x").SerializeToString())
    r = run_cli("pack", root / "erf.onnx", "-o", root / "erf", "--inputs-from", root / "in")
    assert r.code == 0, r.stderr
    return root / "erf"


def _children(pid: int) -> set[int]:
    """Live processes below `pid` (zombies, already dead, left out)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if fields and fields[0] != "Z":
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def left_running(before: set[int], wait_s: float = 10.0) -> set[int]:
    """This process's descendants that were not there `before` and are still alive after up to
    `wait_s` (Chromium's children take a moment to go)."""
    deadline = time.monotonic() + wait_s
    while True:
        extra = _children(os.getpid()) - before
        if not extra or time.monotonic() > deadline:
            return extra
        time.sleep(0.2)


def own_children() -> set[int]:
    return _children(os.getpid())
