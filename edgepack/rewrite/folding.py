"""Nodes that compute constants, folded into initializers: Constant, and ConstantOfShape of a
constant shape (onnx's light/ models build every weight so). Initializers are not operators,
so a target needs neither."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgepack.rewrite.graph import Context, NodeRule, Replacement, attribute
from edgepack.rewrite.spec import op_key


def constant_to_initializer(n: Any, ctx: Context) -> Replacement | None:
    from onnx import numpy_helper

    if _is_graph_output(n.output[0], ctx):
        return None  # a graph output that is an initializer: not every runtime produces it
    value = ctx.constant(n.output[0])
    if value is None:  # value_float, value_ints...: no TensorProto, but a value all the same
        for name in ("value_float", "value_floats", "value_int", "value_ints"):
            v = attribute(n, name)
            if v is not None:
                value = np.array(v, np.float32 if "float" in name else np.int64)
        if value is None:
            return None
    return Replacement([], [numpy_helper.from_array(value, n.output[0])])


def constant_of_shape(n: Any, ctx: Context) -> Replacement | None:
    from onnx import numpy_helper

    shape = ctx.constant(n.input[0])
    if shape is None or _is_graph_output(n.output[0], ctx):
        return None
    fill = attribute(n, "value")
    fill_value = numpy_helper.to_array(fill).ravel() if fill is not None else \
        np.zeros(1, np.float32)
    array = np.full([int(d) for d in shape.ravel()], fill_value[0], dtype=fill_value.dtype)
    return Replacement([], [numpy_helper.from_array(array, n.output[0])])


def _is_graph_output(name: str, ctx: Context) -> bool:
    return name in {o.name for o in ctx.model.graph.output}


RULES = [
    NodeRule("Constant->initializer", frozenset({op_key("", "Constant")}),
             constant_to_initializer),
    NodeRule("ConstantOfShape->initializer", frozenset({op_key("", "ConstantOfShape")}),
             constant_of_shape),
]
