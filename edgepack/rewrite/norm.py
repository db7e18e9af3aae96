"""InstanceNormalization into ReduceMean, Sub, Mul, Add, Sqrt and Div.

y = scale * (x - mean) / sqrt(var + epsilon) + B, mean and variance over every axis after the
channel axis, per sample and channel; scale and B are per channel.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgepack.rewrite.graph import Context, NodeRule, Replacement, attribute, node
from edgepack.rewrite.spec import op_key

_FLOATS = {1: np.float32, 10: np.float16, 11: np.float64}  # TensorProto FLOAT, FLOAT16, DOUBLE


def instance_norm(n: Any, ctx: Context) -> Replacement | None:
    x, scale, bias = n.input[0], n.input[1], n.input[2]
    rank = ctx.rank(x)
    dtype = _FLOATS.get(ctx.elem_type(x) or 0)
    if rank is None or rank < 3 or dtype is None:
        return None  # the axes to reduce follow from the rank; the epsilon's type from x's
    out = Replacement([])
    axes = list(range(2, rank))
    base = n.name or "InstanceNormalization"

    def t(what: str) -> str:
        return ctx.fresh(f"{base}/{what}")

    def reduce_mean(src: str, dst: str) -> Any:
        # ReduceMean's axes moved from an attribute to an input at opset 18.
        if ctx.opset >= 18:
            axes_name = ctx.const(f"{base}/axes", np.array(axes, np.int64), out)
            return node("ReduceMean", [src, axes_name], [dst], t("ReduceMean"), keepdims=1)
        return node("ReduceMean", [src], [dst], t("ReduceMean"), axes=axes, keepdims=1)

    mean, centered, squared, var = t("mean"), t("centered"), t("squared"), t("var")
    var_eps, std, normed = t("var_eps"), t("std"), t("normed")
    eps = ctx.const(f"{base}/epsilon", np.array(attribute(n, "epsilon", 1e-5), dtype), out)
    # Per-channel parameters broadcast against [N, C, D1...]: shape them [C, 1, ...].
    scale_b = _per_channel(scale, rank, ctx, out, base)
    bias_b = _per_channel(bias, rank, ctx, out, base)
    scaled = t("scaled")
    out.nodes += [
        reduce_mean(x, mean),
        node("Sub", [x, mean], [centered], t("Sub")),
        node("Mul", [centered, centered], [squared], t("Mul")),
        reduce_mean(squared, var),
        node("Add", [var, eps], [var_eps], t("Add")),
        node("Sqrt", [var_eps], [std], t("Sqrt")),
        node("Div", [centered, std], [normed], t("Div")),
        node("Mul", [normed, scale_b], [scaled], t("Mul")),
        node("Add", [scaled, bias_b], [n.output[0]], t("Add")),
    ]
    return out


def _per_channel(name: str, rank: int, ctx: Context, out: Replacement, base: str) -> str:
    value = ctx.constant(name)
    trailing = list(range(1, rank - 1))
    if value is not None:
        return ctx.const(f"{name}/per_channel", value.reshape(-1, *[1] * len(trailing)), out)
    # Not a constant (rare): Unsqueeze it; if the target lacks Unsqueeze, the driver says so.
    dst = ctx.fresh(f"{base}/{name}/per_channel")
    if ctx.opset >= 13:
        axes = ctx.const(f"{base}/unsqueeze_axes", np.array(trailing, np.int64), out)
        out.nodes.append(node("Unsqueeze", [name, axes], [dst], ctx.fresh(f"{base}/Unsqueeze")))
    else:
        out.nodes.append(node("Unsqueeze", [name], [dst], ctx.fresh(f"{base}/Unsqueeze"),
                              axes=trailing))
    return dst


RULES = [NodeRule("InstanceNormalization->ReduceMean/Sub/Mul/Add/Sqrt/Div",
                  frozenset({op_key("", "InstanceNormalization")}), instance_norm)]
