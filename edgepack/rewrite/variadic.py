"""Sum, Max, Min and Mean of any number of inputs into chains of two-input Add, Max, Min (and a
Div for Mean): some targets take the binary forms only. Broadcasting is associative, so the
chain computes what the variadic operator does."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgepack.rewrite.graph import Context, NodeRule, Replacement, node
from edgepack.rewrite.norm import _FLOATS
from edgepack.rewrite.spec import op_key

_BINARY = {"Sum": "Add", "Max": "Max", "Min": "Min", "Mean": "Add"}


def variadic_to_binary(n: Any, ctx: Context) -> Replacement | None:
    inputs = [i for i in n.input if i]
    op = _BINARY[n.op_type]
    base = n.name or n.op_type
    out = Replacement([])
    if not inputs:
        return None
    if len(inputs) == 1:  # of one input, each of them is that input
        out.nodes.append(node("Identity", inputs, [n.output[0]], ctx.fresh(f"{base}/Identity")))
        return out
    if n.op_type in ("Max", "Min") and len(inputs) == 2:
        return None  # already binary: the target lacks the operator itself
    mean_dtype = _FLOATS.get(ctx.elem_type(inputs[0]) or 0) if n.op_type == "Mean" else None
    if n.op_type == "Mean" and mean_dtype is None:
        return None
    acc = inputs[0]
    for k, name in enumerate(inputs[1:], start=2):
        last = k == len(inputs) and n.op_type != "Mean"
        dst = n.output[0] if last else ctx.fresh(f"{base}/partial")
        out.nodes.append(node(op, [acc, name], [dst], ctx.fresh(f"{base}/{op}")))
        acc = dst
    if n.op_type == "Mean":
        count = ctx.const(f"{base}/count", np.array(len(inputs), mean_dtype), out)
        out.nodes.append(node("Div", [acc, count], [n.output[0]], ctx.fresh(f"{base}/Div")))
    return out


RULES = [NodeRule("variadic->binary chain",
                  frozenset(op_key("", o) for o in _BINARY), variadic_to_binary)]
