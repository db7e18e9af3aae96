"""Reflect and edge Pad into Slice and Concat, for targets without Pad or without those modes.

Pads are applied axis by axis on the already padded tensor, as numpy (and so ONNX) pads, which
fills the corners right. Reflect mirrors without repeating the border element: on the left it
takes x[p], ..., x[1], on the right x[n-2], ..., x[n-1-p]; edge repeats x[0] or x[n-1]. Negative
starts and ends keep the slices free of the axis length, so no shape needs to be known.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgepack.rewrite.graph import Context, NodeRule, Replacement, attribute, node
from edgepack.rewrite.spec import node_mode, op_key

_END = np.iinfo(np.int64).max


def pad_to_slices(n: Any, ctx: Context) -> Replacement | None:
    mode = node_mode(n)
    if mode not in ("reflect", "edge"):
        return None
    x = n.input[0]
    if ctx.opset < 11:  # pads became an input at opset 11
        pads = attribute(n, "pads", attribute(n, "paddings"))
        axes = None
    else:
        pads = ctx.constant(n.input[1]) if len(n.input) > 1 else None
        axes = ctx.constant(n.input[3]) if len(n.input) > 3 and n.input[3] else None
    if pads is None:
        return None
    pads = [int(p) for p in np.asarray(pads).ravel()]
    if any(p < 0 for p in pads) or len(pads) % 2:
        return None  # cropping pads: not this rule's
    half = len(pads) // 2
    if axes is None:
        axes_list = list(range(half))
    else:
        rank = ctx.rank(x)
        if rank is None:
            return None
        axes_list = [int(a) % rank for a in np.asarray(axes).ravel()]
    out = Replacement([])
    base = n.name or "Pad"
    current = x
    todo = [(a, pads[i], pads[i + half]) for i, a in enumerate(axes_list)
            if pads[i] or pads[i + half]]
    if not todo:
        out.nodes.append(node("Identity", [x], [n.output[0]], ctx.fresh(f"{base}/Identity")))
        return out
    for k, (axis, before, after) in enumerate(todo):
        parts = [*_side(current, axis, before, mode, True, ctx, out, base), current,
                 *_side(current, axis, after, mode, False, ctx, out, base)]
        dst = n.output[0] if k == len(todo) - 1 else ctx.fresh(f"{base}/padded_{axis}")
        out.nodes.append(node("Concat", parts, [dst], ctx.fresh(f"{base}/Concat"), axis=axis))
        current = dst
    return out


def _side(x: str, axis: int, width: int, mode: str, left: bool, ctx: Context,
          out: Replacement, base: str) -> list[str]:
    """The names of the slices that make one side's padding, in order along the axis."""
    if width == 0:
        return []
    if mode == "edge":
        one = _slice(x, axis, 0, 1, 1, ctx, out, base) if left else \
            _slice(x, axis, -1, _END, 1, ctx, out, base)
        return [one] * width  # Concat takes the same input more than once
    if width == 1:
        return [_slice(x, axis, 1, 2, 1, ctx, out, base) if left
                else _slice(x, axis, -2, -1, 1, ctx, out, base)]
    if ctx.opset >= 10:  # one reversed slice
        return [_slice(x, axis, width, 0, -1, ctx, out, base) if left
                else _slice(x, axis, -2, -2 - width, -1, ctx, out, base)]
    # Slice has no steps before opset 10: one element at a time, mirrored.
    if left:
        return [_slice(x, axis, i, i + 1, 1, ctx, out, base) for i in range(width, 0, -1)]
    return [_slice(x, axis, -1 - j, -j, 1, ctx, out, base) for j in range(1, width + 1)]


def _slice(x: str, axis: int, start: int, end: int, step: int, ctx: Context,
           out: Replacement, base: str) -> str:
    dst = ctx.fresh(f"{base}/slice")
    name = ctx.fresh(f"{base}/Slice")
    if ctx.opset >= 10:  # starts, ends, axes and steps became inputs at opset 10
        ins = [x] + [ctx.const(f"{base}/{what}", np.array([v], np.int64), out)
                     for what, v in (("starts", start), ("ends", end), ("axes", axis),
                                     ("steps", step))]
        out.nodes.append(node("Slice", ins, [dst], name))
    else:
        out.nodes.append(node("Slice", [x], [dst], name, starts=[start], ends=[end],
                              axes=[axis]))
    return dst


RULES = [NodeRule("Pad(reflect|edge)->Slice/Concat", frozenset({op_key("", "Pad")}),
                  pad_to_slices)]
