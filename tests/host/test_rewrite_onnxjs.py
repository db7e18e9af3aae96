"""The rules `pack --ops-allowed onnxjs` needs (issue 17): the opset conversion (ONNX.js picks
kernels by the model's opset: Upsample 7-8, Reduce* with an axes attribute up to 17) and
DepthToSpace as Reshape/Transpose/Reshape; each checked numerically against onnxruntime, and
the fast-neural-style net through the CLI."""

from __future__ import annotations

import collections
import json

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgepack.errors import EdgepackError
from edgepack.rewrite import load_ops_allowed, transform_model
from edgepack.rewrite.driver import RULES
from edgepack.rewrite.spec import op_key
from tests.conftest import EXAMPLES, run_cli
from tests.host.test_rewrite import f32, model, run, vi


def rewritten_for(m, target: str, rules=None):
    """`m` rewritten for `target`; every node allowed at the result's opset, outputs as
    before; returns the result."""
    feeds = {i.name: f32(*[d.dim_value for d in i.type.tensor_type.shape.dim])
             for i in m.graph.input}
    before = run(m, feeds)
    spec = load_ops_allowed(target)
    copy = onnx.ModelProto()
    copy.CopyFrom(m)
    result = transform_model(copy, spec, [], rules)
    opsets = {o.domain: o.version for o in result.model.opset_import}
    for n in result.model.graph.node:
        assert spec.allows(n, opsets), n.op_type
    onnx.checker.check_model(result.model)
    for b, a in zip(before, run(result.model, feeds), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    return result


def without(name_part: str):
    return [r for r in RULES if name_part not in r.name]


def upsample9():
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    return model([helper.make_node("Upsample", ["x", "scales"], ["u"], mode="nearest"),
                  helper.make_node("Relu", ["u"], ["y"])],
                 [vi("x", [1, 2, 3, 4])], [vi("y", [1, 2, 6, 8])], [scales], opset=9)


def test_upsample_at_opset_9_goes_to_opset_8_for_onnxjs():
    r = rewritten_for(upsample9(), "onnxjs")
    assert [n.op_type for n in r.model.graph.node] == ["Upsample", "Relu"]
    assert (r.record.opset_before, r.record.opset_after) == (9, 8)
    assert [(x.rule, x.op, x.nodes) for x in r.record.rules] == [
        ("opset conversion (onnx version converter)", "Upsample", 1)]


def test_without_the_opset_rule_onnxjs_gets_a_resize_it_lacks():
    with pytest.raises(EdgepackError, match="no rule rewrites Resize"):
        rewritten_for(upsample9(), "onnxjs", without("opset conversion"))


def test_reduce_mean_with_axes_input_goes_to_opset_17():
    axes = numpy_helper.from_array(np.array([2, 3], np.int64), "axes")
    # noop_with_empty_axes=0 written out, as PyTorch's exporter writes it (ResNet-20's mean).
    m = model([helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=1,
                                noop_with_empty_axes=0)],
              [vi("x", [1, 2, 4, 4])], [vi("y", [1, 2, 1, 1])], [axes], opset=18)
    r = rewritten_for(m, "onnxjs")
    (node,) = r.model.graph.node
    assert r.record.opset_after == 17 and list(node.input) == ["x"]
    # onnx's converter leaves ReduceMean-18's noop_with_empty_axes behind: it is dropped.
    assert sorted(a.name for a in node.attribute) == ["axes", "keepdims"]


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_to_space_becomes_reshape_transpose_reshape(mode):
    m = model([helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=2, mode=mode)],
              [vi("x", [1, 8, 3, 5])], [vi("y", [1, 2, 6, 10])], opset=13)
    r = rewritten_for(m, "onnxjs")
    assert [n.op_type for n in r.model.graph.node] == ["Reshape", "Transpose", "Reshape"]
    with pytest.raises(EdgepackError, match="no rule rewrites DepthToSpace"):
        rewritten_for(m, "onnxjs", without("DepthToSpace"))


def test_depth_to_space_of_unknown_shape_is_left_to_the_error():
    m = model([helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=2)],
              [vi("x", ["n", 8, 3, 5])], [vi("y", ["n", 2, 6, 10])], opset=13)
    with pytest.raises(EdgepackError, match="no rule rewrites DepthToSpace"):
        transform_model(m, load_ops_allowed("onnxjs"), [])


def test_a_target_without_opset_ranges_never_converts():
    # The CPU's table has no per-opset ranges: the opset rule has nothing to do with it.
    r = transform_model(upsample9(), load_ops_allowed("cpu"), [])
    assert r.record.opset_after == 9 and r.record.rules == []
    assert op_key("", "Upsample") in load_ops_allowed("onnxjs").ops


def test_fast_neural_style_packed_for_onnxjs(tmp_path):
    fns = tmp_path / "fns.onnx"
    r = run_cli("export", EXAMPLES / "fast_neural_style.py:make_model", "--exporter",
                "torchscript", "--opset", "9", "--input", "input:1x3x32x32:float32",
                "--output-name", "output", "-o", fns)
    assert r.code == 0, r.stderr + r.stdout
    out = tmp_path / "b"
    r = run_cli("pack", fns, "-o", out, "--random-sets", "1", "--ops-allowed", "onnxjs")
    assert r.code == 0, r.stderr
    rw = json.loads((out / "manifest.json").read_text())["rewrite"]
    assert (rw["opset_before"], rw["opset_after"]) == (9, 8)
    assert {(x["op"], x["nodes"]) for x in rw["rules"]} == {("Upsample", 2)}
    # Reflect Pad and InstanceNormalization stay: ONNX.js 0.1.8 has both.
    ops = collections.Counter(n.op_type for n in onnx.load(out / "predict.onnx",
                                                           load_external_data=False).graph.node)
    assert ops["Pad"] == 16 and ops["InstanceNormalization"] == 15 and ops["Upsample"] == 2
    assert rw["max_abs_error"] == 0.0
    doc = run_cli("check", out, "--ep", "onnxjs", "--json").json()
    assert doc["eps"][0]["verdict"] == "runs fully"
