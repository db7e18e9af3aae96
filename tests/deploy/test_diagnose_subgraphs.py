"""diagnose and a model with subgraphs (issue 15): the nodes of If/Loop/Scan bodies cannot be
exposed as outputs, and the report says which were not searched."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import run_cli


def _model_with_if(path):
    w = numpy_helper.from_array(np.random.RandomState(0).rand(16, 16).astype(np.float32), "W")
    floor = numpy_helper.from_array(np.array(-1e9, np.float32), "floor")
    out = [helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, 16])]
    # The bodies read `a` from the main graph by name, not through the If's inputs.
    then = helper.make_graph([helper.make_node("Relu", ["a"], ["t0"], name="then_relu"),
                              helper.make_node("Neg", ["t0"], ["r"], name="then_neg")],
                             "then", [], out)
    other = helper.make_graph([helper.make_node("Abs", ["a"], ["r"], name="else_abs")],
                              "else", [], out)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["a"], name="mm"),
             helper.make_node("ReduceSum", ["x"], ["s"], name="sum", keepdims=0),
             helper.make_node("Greater", ["s", "floor"], ["cond"], name="greater"),
             helper.make_node("If", ["cond"], ["r"], name="branch", then_branch=then,
                              else_branch=other),
             helper.make_node("Add", ["r", "a"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
                              [w, floor])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def test_nodes_inside_subgraphs_are_reported_as_not_searched(tmp_path):
    _model_with_if(tmp_path / "if.onnx")
    r = run_cli("pack", tmp_path / "if.onnx", "-o", tmp_path / "b", "--random-sets", "1")
    assert r.code == 0, r.stderr
    for budget, strategy in (("256", "all-at-once"), ("0.00001", "bisect")):
        r = run_cli("diagnose", tmp_path / "b", "--device", "host", "--budget", budget,
                    "--json")
        assert r.code == 0, r.stderr
        doc = r.json()
        assert doc["strategy"] == strategy and doc["first_divergent"] is None
        [held] = doc["not_searched"]
        assert (held["node"], held["op_type"]) == ("branch", "If")
        assert sorted(held["inner_nodes"]) == ["else_abs", "then_neg", "then_relu"]
        assert any("3 node(s) inside subgraphs were not searched" in n and "branch (If, 3)" in n
                   for n in doc["notes"]), doc["notes"]
    r = run_cli("diagnose", tmp_path / "b", "--device", "host")
    assert r.code == 0, r.stderr
    assert "not searched" in r.stdout and "then_relu" in r.stdout
