"""ONNX.js (and onnxruntime-web's WebGL backend, its engine) read every int64 constant as a
32-bit number and refuse the model when one does not fit: PyTorch's open-ended slice
(`x[:, 2:]`) ends at 2**63 - 1, which is why the face detector cannot run on WebGL. `check`
must foresee it, and what it foresees must be what ONNX.js does."""

from __future__ import annotations

import json
import os
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgepack.web.browser import WebRunError, open_browser
from tests.conftest import run_cli, unavailable


def _slice_model(path: Path, end: int) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])
    inits = [numpy_helper.from_array(np.array([2], np.int64), "starts"),
             numpy_helper.from_array(np.array([end], np.int64), "ends"),
             numpy_helper.from_array(np.array([1], np.int64), "axes")]
    graph = helper.make_graph([helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["y"])],
                              "g", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 10)])
    model.ir_version = 7
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("ep", ["onnxjs", "webgl"])
def test_check_names_an_int64_constant_beyond_32_bits(tmp_path, ep):
    wide = _slice_model(tmp_path / "wide.onnx", 2**63 - 1)
    r = run_cli("check", wide, "--ep", ep, "--json")
    assert r.code == 0, r.stderr
    report = next(e for e in json.loads(r.stdout)["eps"] if e["ep"] == ep)
    assert report["verdict"] == "cannot", report
    assert any("9223372036854775807" in why and "32 bits" in why for why in report["reasons"])
    narrow = _slice_model(tmp_path / "narrow.onnx", 6)
    r = run_cli("check", narrow, "--ep", ep, "--json")
    report = next(e for e in json.loads(r.stdout)["eps"] if e["ep"] == ep)
    assert report["verdict"] == "runs fully", report


def test_onnxjs_does_what_check_foresees(tmp_path):
    if not Path("/usr/bin/chromium").exists() and not os.environ.get("EDGEPACK_CHROMIUM"):
        unavailable("no Chromium (apt-get install chromium)")
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    with ExitStack() as stack:
        browser = stack.enter_context(open_browser())
        ran = browser.run(_slice_model(tmp_path / "narrow.onnx", 6), [{"x": x}], ep="onnxjs")
        assert np.array_equal(ran.outputs[0]["y"], x[:, 2:])
        with pytest.raises(WebRunError) as failed:
            browser.run(_slice_model(tmp_path / "wide.onnx", 2**63 - 1), [{"x": x}],
                        ep="onnxjs")
    assert "int64" in failed.value.message


def test_pack_for_onnxjs_brings_slice_bounds_inside_32_bits(tmp_path):
    """`pack --ops-allowed onnxjs` clamps the bound (Slice clamps it to the axis anyway), the
    rewrite is checked against the original, and check then has nothing to say."""
    wide = _slice_model(tmp_path / "wide.onnx", 2**63 - 1)
    r = run_cli("pack", wide, "-o", tmp_path / "b", "--random-sets", "1", "--ops-allowed",
                "onnxjs")
    assert r.code == 0, r.stderr
    assert "Slice bounds -> int32" in r.stdout + r.stderr
    model = onnx.load(str(tmp_path / "b" / "predict.onnx"))
    (ends,) = [numpy_helper.to_array(t) for t in model.graph.initializer if t.name == "ends"]
    assert ends.tolist() == [2**31 - 1]
    r = run_cli("check", tmp_path / "b", "--ep", "onnxjs", "--json")
    report = next(e for e in json.loads(r.stdout)["eps"] if e["ep"] == "onnxjs")
    assert report["verdict"] == "runs fully", report


def test_a_bound_shared_with_another_node_is_copied_not_changed():
    from edgepack.rewrite.int32 import clamp_slice_bounds

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "z")]
    big = numpy_helper.from_array(np.array([2**63 - 1], np.int64), "big")
    graph = helper.make_graph(
        [helper.make_node("Slice", ["x", "one", "big"], ["y"]),
         helper.make_node("Add", ["x", "x"], ["s"]),
         helper.make_node("Reshape", ["s", "shape"], ["z"]),
         helper.make_node("Identity", ["big"], ["kept"])],
        "g", [x], outs,
        [big, numpy_helper.from_array(np.array([1], np.int64), "one"),
         numpy_helper.from_array(np.array([2, 6], np.int64), "shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    assert clamp_slice_bounds(model) == 1
    values = {t.name: numpy_helper.to_array(t).tolist() for t in model.graph.initializer}
    assert values["big"] == [2**63 - 1]  # the Identity still reads the original
    assert model.graph.node[0].input[2] != "big"
    assert values[model.graph.node[0].input[2]] == [2**31 - 1]
