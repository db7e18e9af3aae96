"""The rewrite rules one by one (edgepack/rewrite/), each on a small graph: the rewritten graph
holds only allowed operators and computes what the original computes (onnxruntime, both)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgepack.errors import EdgepackError, ExitCode
from edgepack.rewrite import FixDim, OpsAllowed, load_ops_allowed, parse_fix_dim, transform_model
from edgepack.rewrite.driver import RULES
from edgepack.rewrite.graph import NodeRule
from edgepack.rewrite.spec import op_key

BASIC = ["Add", "Sub", "Mul", "Div", "Sqrt", "ReduceMean", "Slice", "Concat", "Relu", "Identity",
         "Resize", "Conv", "Constant"]


def allowed(*ops: str, modes: dict | None = None) -> OpsAllowed:
    return OpsAllowed("test", frozenset(op_key("", o) for o in ops), modes or {})


def model(nodes, inputs, outputs, inits=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def run(m, feeds):
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def same_after_rewrite(m, feeds, ops, *, atol=1e-5, **kw):
    """Rewrite `m` for `ops`; every node allowed, outputs as before; returns the record."""
    before = run(m, feeds)
    original_ops = {n.op_type for n in m.graph.node}
    spec = allowed(*ops, **kw)
    copy = onnx.ModelProto()
    copy.CopyFrom(m)  # transform_model rewrites in place
    result = transform_model(copy, spec, [])
    for n in result.model.graph.node:
        assert spec.allows(n), n.op_type
    onnx.checker.check_model(result.model)
    after = run(result.model, feeds)
    for b, a in zip(before, after, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=atol)
    assert result.record.nodes_before >= 1
    assert original_ops - set(ops)  # the test really needed a rule
    return result


def f32(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def vi(name, shape, t=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, t, shape)


# ---------------------------------------------------------------------------- InstanceNorm


@pytest.mark.parametrize("opset", [9, 17, 18, 21])
@pytest.mark.parametrize("rank", [3, 4])
def test_instance_norm_decomposes_at_every_opset(opset, rank):
    # ReduceMean's axes are an attribute before opset 18 and an input from 18.
    shape = [2, 3] + [5] * (rank - 2)
    scale = numpy_helper.from_array(f32(3, seed=1) + 1.5, "scale")
    bias = numpy_helper.from_array(f32(3, seed=2), "bias")
    m = model([helper.make_node("InstanceNormalization", ["x", "scale", "bias"], ["y"],
                                epsilon=1e-3)],
              [vi("x", shape)], [vi("y", shape)], [scale, bias], opset)
    r = same_after_rewrite(m, {"x": f32(*shape) * 4 + 2}, BASIC)
    assert {n.op_type for n in r.model.graph.node} == {"ReduceMean", "Sub", "Mul", "Add", "Sqrt",
                                                        "Div"}
    assert [(x.op, x.nodes) for x in r.record.rules] == [("InstanceNormalization", 1)]


def test_instance_norm_with_scale_computed_at_run_time_unsqueezes_it():
    m = model([helper.make_node("Relu", ["s"], ["s2"]),
               helper.make_node("InstanceNormalization", ["x", "s2", "b"], ["y"])],
              [vi("x", [1, 2, 4, 4]), vi("s", [2]), vi("b", [2])], [vi("y", [1, 2, 4, 4])])
    feeds = {"x": f32(1, 2, 4, 4), "s": f32(2, seed=3), "b": f32(2, seed=4)}
    same_after_rewrite(m, feeds, [*BASIC, "Unsqueeze"])
    with pytest.raises(EdgepackError, match="no rule rewrites Unsqueeze"):
        transform_model(m, allowed(*BASIC), [])


# ---------------------------------------------------------------------------- Pad


@pytest.mark.parametrize("opset", [9, 10, 11, 18])
@pytest.mark.parametrize("mode", ["reflect", "edge"])
@pytest.mark.parametrize("pads", [[0, 0, 1, 1, 0, 0, 1, 1], [0, 0, 3, 2, 0, 0, 1, 4],
                                  [0, 0, 0, 0, 0, 0, 0, 0]])
def test_pad_becomes_slices_and_concats(opset, mode, pads):
    shape = [1, 2, 6, 7]
    out = [shape[i] + pads[i] + pads[i + 4] for i in range(4)]
    if opset < 11:
        nodes, inits = [helper.make_node("Pad", ["x"], ["y"], mode=mode, pads=pads)], []
    else:
        nodes = [helper.make_node("Pad", ["x", "p"], ["y"], mode=mode)]
        inits = [numpy_helper.from_array(np.array(pads, np.int64), "p")]
    m = model(nodes, [vi("x", shape)], [vi("y", out)], inits, opset)
    r = same_after_rewrite(m, {"x": f32(*shape)}, BASIC, atol=0)
    assert "Pad" not in {n.op_type for n in r.model.graph.node}


def test_pad_with_axes_input():
    nodes = [helper.make_node("Pad", ["x", "p", "", "axes"], ["y"], mode="reflect")]
    inits = [numpy_helper.from_array(np.array([2, 1], np.int64), "p"),
             numpy_helper.from_array(np.array([-1], np.int64), "axes")]
    m = model(nodes, [vi("x", [2, 3, 5])], [vi("y", [2, 3, 8])], inits, 18)
    same_after_rewrite(m, {"x": f32(2, 3, 5)}, BASIC, atol=0)


def test_pad_taken_in_constant_mode_only_is_rewritten_for_reflect_only():
    spec = allowed(*BASIC, "Pad", modes={op_key("", "Pad"): frozenset({"constant"})})
    nodes = [helper.make_node("Pad", ["x"], ["a"], mode="reflect", pads=[0, 1, 0, 1]),
             helper.make_node("Pad", ["a"], ["y"], mode="constant", pads=[0, 1, 0, 1])]
    m = model(nodes, [vi("x", [2, 3])], [vi("y", [2, 7])], opset=10)
    result = transform_model(m, spec, [])
    assert [n.attribute[0].s for n in result.model.graph.node if n.op_type == "Pad"] == \
        [b"constant"]
    np.testing.assert_array_equal(run(result.model, {"x": f32(2, 3)})[0],
                                  run(model(nodes, [vi("x", [2, 3])], [vi("y", [2, 7])],
                                            opset=10), {"x": f32(2, 3)})[0])


def test_constant_pad_has_no_rule():
    m = model([helper.make_node("Pad", ["x"], ["y"], mode="constant", pads=[1, 1])],
              [vi("x", [3])], [vi("y", [5])], opset=10)
    with pytest.raises(EdgepackError) as err:
        transform_model(m, allowed(*BASIC), [])
    assert err.value.exit_code == ExitCode.BAD_INPUT
    assert "no rule rewrites Pad (1 node(s)" in err.value.message


# ---------------------------------------------------------------------------- Upsample


def test_upsample_becomes_resize_through_the_version_converter():
    scales = numpy_helper.from_array(np.array([1, 1, 2, 3], np.float32), "scales")
    m = model([helper.make_node("Upsample", ["x", "scales"], ["y"], mode="nearest")],
              [vi("x", [1, 2, 3, 4])], [vi("y", [1, 2, 6, 12])], [scales], opset=9)
    r = same_after_rewrite(m, {"x": f32(1, 2, 3, 4)}, BASIC, atol=0)
    assert [n.op_type for n in r.model.graph.node] == ["Resize"]
    assert (r.record.opset_before, r.record.opset_after) == (9, 10)


# ---------------------------------------------------------------------------- functions


@pytest.mark.parametrize("op, attrs, opset, extra", [
    ("HardSwish", {}, 22, ["HardSigmoid"]),
    ("HardSwish", {}, 22, ["Max", "Min", "Constant", "CastLike"]),  # HardSigmoid's body too
    ("Mish", {}, 22, ["Softplus", "Tanh"]),
    ("Gelu", {"approximate": "tanh"}, 20, ["Pow", "Tanh", "Constant", "CastLike", "Sum"]),
    ("Gelu", {}, 20, ["Erf", "Constant", "CastLike", "Sum"]),
    ("Celu", {"alpha": 0.5}, 17, ["Elu", "Constant"]),
])
def test_an_operator_onnx_defines_as_a_function_becomes_its_body(op, attrs, opset, extra):
    m = model([helper.make_node(op, ["x"], ["y"], **attrs)], [vi("x", [2, 5])], [vi("y", [2, 5])],
              opset=opset)
    r = same_after_rewrite(m, {"x": f32(2, 5) * 3}, [*BASIC, *extra])
    assert op not in {n.op_type for n in r.model.graph.node}
    assert r.record.rules[0].rule == "function body (onnx schema)"


def test_layer_normalization_by_its_context_dependent_body():
    shape = [2, 3, 8]
    inits = [numpy_helper.from_array(f32(8, seed=5), "s"),
             numpy_helper.from_array(f32(8, seed=6), "b")]
    m = model([helper.make_node("LayerNormalization", ["x", "s", "b"], ["y"], axis=-1,
                                epsilon=1e-3)],
              [vi("x", shape)], [vi("y", shape)], inits, opset=17)
    ops = [*BASIC, "Cast", "Shape", "Size", "Range", "Less", "Where", "Flatten", "Pow",
           "Reciprocal", "Reshape", "Expand", "ConstantOfShape", "Squeeze", "Unsqueeze",
           "Neg", "CastLike"]
    r = same_after_rewrite(m, {"x": f32(*shape) * 2}, ops, atol=1e-5)
    assert "LayerNormalization" not in {n.op_type for n in r.model.graph.node}


def test_group_normalization_needs_its_input_type():
    shape = [2, 4, 3, 3]
    inits = [numpy_helper.from_array(f32(4, seed=5), "s"),
             numpy_helper.from_array(f32(4, seed=6), "b")]
    m = model([helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=2)],
              [vi("x", shape)], [vi("y", shape)], inits, opset=21)
    ops = [*BASIC, "Cast", "Shape", "Reshape", "Flatten", "Unsqueeze", "Size", "ConstantOfShape",
           "Pow", "Reciprocal", "Expand", "CastLike", "InstanceNormalization", "Sub", "Range",
           "Squeeze", "Neg", "Gather", "Concat", "ReduceSumSquare", "ReduceSum"]
    # InstanceNormalization may come out of GroupNormalization's body; then the norm rule runs:
    # the fixed point of the two.
    ops.remove("InstanceNormalization")
    same_after_rewrite(m, {"x": f32(*shape)}, ops, atol=1e-5)


def test_functions_the_model_defines_are_inlined_nested_ones_too():
    inner = helper.make_function("my.fn", "Double", ["a"], ["b"],
                                 [helper.make_node("Add", ["a", "a"], ["b"])],
                                 [helper.make_opsetid("", 17)])
    outer = helper.make_function("my.fn", "DoubleRelu", ["a"], ["b"],
                                 [helper.make_node("Double", ["a"], ["t"], domain="my.fn"),
                                  helper.make_node("Relu", ["t"], ["b"])],
                                 [helper.make_opsetid("", 17), helper.make_opsetid("my.fn", 1)])
    graph = helper.make_graph([helper.make_node("DoubleRelu", ["x"], ["y"], domain="my.fn")],
                              "g", [vi("x", [4])], [vi("y", [4])])
    m = helper.make_model(graph, functions=[inner, outer], opset_imports=[
        helper.make_opsetid("", 17), helper.make_opsetid("my.fn", 1)])
    m.ir_version = 8
    r = same_after_rewrite(m, {"x": f32(4)}, ["Add", "Relu"])
    assert [n.op_type for n in r.model.graph.node] == ["Add", "Relu"]
    assert [x.op for x in r.record.rules] == ["my.fn:DoubleRelu"]


# ---------------------------------------------------------------------------- folding


def test_constants_fold_into_initializers():
    shape = numpy_helper.from_array(np.array([2, 3], np.int64), "shape")
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["w"],
                              value=numpy_helper.from_array(np.array([0.5], np.float32))),
             helper.make_node("Constant", [], ["c"], value_float=2.0),
             helper.make_node("Mul", ["x", "w"], ["xw"]),
             helper.make_node("Add", ["xw", "c"], ["y"])]
    m = model(nodes, [vi("x", [2, 3])], [vi("y", [2, 3])], [shape])
    r = same_after_rewrite(m, {"x": f32(2, 3)}, ["Mul", "Add"])
    assert [n.op_type for n in r.model.graph.node] == ["Mul", "Add"]


# ---------------------------------------------------------------------------- the driver


def test_nothing_to_rewrite_leaves_the_model_alone():
    m = model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [2])], [vi("y", [2])])
    r = transform_model(m, allowed("Relu"), [])
    assert r.record.rules == [] and r.record.nodes_after == 1


def test_no_rule_names_the_operator_and_what_was_rewritten():
    nodes = [helper.make_node("Pad", ["x"], ["a"], mode="reflect", pads=[1, 1]),
             helper.make_node("Softmax", ["a"], ["y"])]
    m = model(nodes, [vi("x", [3])], [vi("y", [5])], opset=10)
    with pytest.raises(EdgepackError) as err:
        transform_model(m, allowed(*BASIC), [])
    msg = err.value.message
    assert err.value.exit_code == ExitCode.BAD_INPUT and "\n" not in msg
    assert "no rule rewrites Softmax" in msg and "rewritten so far: Pad x1" in msg


def test_rules_that_undo_each_other_stop():
    # Two rules that turn Relu into Abs and back: without the bound the driver would spin.
    def swap(to):
        def rewrite(n, ctx):
            from edgepack.rewrite.graph import Replacement
            return Replacement([helper.make_node(to, list(n.input), list(n.output))])
        return rewrite

    rules = [NodeRule("a", frozenset({op_key("", "Relu")}), swap("Abs")),
             NodeRule("b", frozenset({op_key("", "Abs")}), swap("Relu"))]
    m = model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [2])], [vi("y", [2])])
    with pytest.raises(EdgepackError) as err:
        transform_model(m, allowed("Neg"), [], rules=rules)
    assert err.value.exit_code == ExitCode.INTERNAL and "did not settle" in err.value.message


def test_rules_are_tried_in_order_and_specific_ones_first():
    names = [r.name for r in RULES]
    assert names.index("function body (onnx schema)") == len(names) - 1


# ---------------------------------------------------------------------------- the spec


def test_a_reduced_build_config_is_read_with_onnxruntimes_parser(tmp_path):
    cfg = tmp_path / "required_operators.config"
    cfg.write_text("# from create_reduced_build_config\nai.onnx;9,10;Add,Conv\n"
                   "com.microsoft;1;FusedConv\n")
    spec = load_ops_allowed(str(cfg))
    assert spec.ops == {("ai.onnx", "Add"), ("ai.onnx", "Conv"), ("com.microsoft", "FusedConv")}
    assert spec.source == "required_operators.config"
    assert spec.allows(helper.make_node("Add", ["a", "b"], ["c"]))
    assert not spec.allows(helper.make_node("Add", ["a", "b"], ["c"], domain="com.microsoft"))


@pytest.mark.parametrize("text", ["Add,Conv\n", "ai.onnx;nine;Add\n", "ai.onnx;9;Add;Mul\n",
                                  "ai.onnx;9;Add{\"inputs\"\n", "ai.onnx;9;Add Mul\n",
                                  "# nothing\n", "!no_ops_specified_means_all_ops_are_required\n"])
def test_a_malformed_config_is_one_line_of_bad_input(tmp_path, text):
    cfg = tmp_path / "ops.config"
    cfg.write_text(text)
    with pytest.raises(EdgepackError) as err:
        load_ops_allowed(str(cfg))
    assert err.value.exit_code == ExitCode.BAD_INPUT and "\n" not in err.value.message


def test_provider_names():
    cpu = load_ops_allowed("cpu")
    assert cpu.allows_op("", "InstanceNormalization") and cpu.allows_op("", "Conv")
    with pytest.raises(EdgepackError, match="not a file, nor a provider"):
        load_ops_allowed("tpu9000")
    with pytest.raises(EdgepackError, match="no such file"):
        load_ops_allowed("missing/ops.config")


# ---------------------------------------------------------------------------- --fix-dim


def dynamic_model():
    return model([helper.make_node("Relu", ["x"], ["y"])],
                 [vi("x", ["batch", 3, "len"])], [vi("y", ["batch", 3, "len"])])


def test_fix_dim_by_label_and_by_input_shape():
    r = transform_model(dynamic_model(), None, [parse_fix_dim("batch=1")])
    dims = r.model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value or d.dim_param for d in dims] == [1, 3, "len"]
    assert r.record.fixed_dims == ["batch=1"] and r.record.rules == []
    r = transform_model(dynamic_model(), None, [parse_fix_dim("x=2x3x7")])
    assert [d.dim_value for d in r.model.graph.output[0].type.tensor_type.shape.dim] == [2, 3, 7]


@pytest.mark.parametrize("text", ["batch", "batch=0", "=1", "batch=one", "x=2x3x"])
def test_fix_dim_syntax(text):
    with pytest.raises(EdgepackError, match="--fix-dim"):
        parse_fix_dim(text)


@pytest.mark.parametrize("fix, words", [(FixDim("seq", (1,)), "no symbolic dim or input named"),
                                        (FixDim("x", (1, 3)), "Rank mismatch"),
                                        (FixDim("batch", (1, 2)), "takes one size")])
def test_fix_dim_of_what_the_model_lacks(fix, words):
    with pytest.raises(EdgepackError, match=words) as err:
        transform_model(dynamic_model(), None, [fix])
    assert err.value.exit_code == ExitCode.BAD_INPUT


# ---------------------------------------------------------------------------- small ones


def variadic(op, n_inputs):
    # Broadcasting shapes: the chain must broadcast as the variadic operator does.
    shapes = [[2, 3], [3], [1, 3], [2, 1]][:n_inputs]
    names = [f"x{i}" for i in range(n_inputs)]
    pairs = list(zip(names, shapes, strict=True))
    m = model([helper.make_node(op, names, ["y"])], [vi(n, s) for n, s in pairs],
              [vi("y", [2, 3])], opset=13)
    return m, {n: f32(*s, seed=i) for i, (n, s) in enumerate(pairs)}


@pytest.mark.parametrize("op, n_inputs", [("Sum", 3), ("Sum", 1), ("Mean", 3), ("Mean", 2)])
def test_sum_and_mean_become_adds(op, n_inputs):
    m, feeds = variadic(op, n_inputs)
    r = same_after_rewrite(m, feeds, ["Add", "Div", "Identity"], atol=1e-6)
    assert all(len(n.input) <= 2 for n in r.model.graph.node)


@pytest.mark.parametrize("op", ["Max", "Min"])
def test_max_and_min_of_many_become_binary_chains(op):
    # A target with binary Max only cannot be said in an operator list: the rule on its own.
    from edgepack.rewrite.graph import Context
    from edgepack.rewrite.variadic import variadic_to_binary

    m, feeds = variadic(op, 4)
    before = run(m, feeds)[0]
    rep = variadic_to_binary(m.graph.node[0], Context(m))
    del m.graph.node[:]
    m.graph.node.extend(rep.nodes)
    assert [len(n.input) for n in m.graph.node] == [2, 2, 2]
    np.testing.assert_array_equal(run(m, feeds)[0], before)


def test_dropout_becomes_identity_unless_its_mask_is_read():
    m = model([helper.make_node("Dropout", ["x"], ["y"], ratio=0.5)], [vi("x", [4])],
              [vi("y", [4])], opset=10)
    r = same_after_rewrite(m, {"x": f32(4)}, ["Identity"], atol=0)
    assert [n.op_type for n in r.model.graph.node] == ["Identity"]
    unread = model([helper.make_node("Dropout", ["x"], ["y", "mask"])], [vi("x", [4])],
                   [vi("y", [4])], opset=10)  # a mask named but read by nothing
    same_after_rewrite(unread, {"x": f32(4)}, ["Identity"], atol=0)
    masked = model([helper.make_node("Dropout", ["x"], ["y", "mask"])], [vi("x", [4])],
                   [vi("y", [4]), vi("mask", [4], TensorProto.BOOL)], opset=10)
    with pytest.raises(EdgepackError, match="no rule rewrites Dropout"):
        transform_model(masked, allowed("Identity"), [])


def test_the_rule_whose_operators_are_all_allowed_wins():
    # LogSoftmax has a function body (ReduceMax, ReduceSum...) and a Log(Softmax) rule: a
    # target with Softmax and Log (NNAPI) gets the second, one with the reductions the first.
    m = model([helper.make_node("LogSoftmax", ["x"], ["y"], axis=-1)], [vi("x", [2, 10])],
              [vi("y", [2, 10])], opset=13)
    feeds = {"x": f32(2, 10) * 3}
    r = same_after_rewrite(m, feeds, ["Softmax", "Log"])
    assert [n.op_type for n in r.model.graph.node] == ["Softmax", "Log"]
    body_ops = ["ReduceMax", "ReduceSum", "Exp", "Log", "Sub", "Constant", "CastLike"]
    r = same_after_rewrite(m, feeds, body_ops)
    assert "Softmax" not in {n.op_type for n in r.model.graph.node}
