"""DepthToSpace into Reshape, Transpose and Reshape, for targets without it (ONNX.js).

The operator's own definition: x [N, C, H, W] with block size b is viewed as six dims, permuted,
and folded back to [N, C/b², H·b, W·b]. DCR (the default) takes the block from the front of the
channels, [N, b, b, C/b², H, W] permuted (0, 3, 4, 1, 5, 2); CRD (PyTorch's pixel_shuffle) from
the back, [N, C/b², b, b, H, W] permuted (0, 1, 4, 2, 5, 3). The shapes are written as
constants, so the input's shape must be known (a symbolic dim: the rule declines; `--fix-dim`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgepack.rewrite.graph import Context, NodeRule, Replacement, attribute, node
from edgepack.rewrite.spec import op_key


def _static_shape(ctx: Context, name: str) -> list[int] | None:
    tp = ctx.types.get(name)
    if tp is None or not tp.HasField("tensor_type") or not tp.tensor_type.HasField("shape"):
        return None
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tp.tensor_type.shape.dim]
    return None if any(d is None for d in dims) else [int(d) for d in dims]


def depth_to_space(n: Any, ctx: Context) -> Replacement | None:
    shape = _static_shape(ctx, n.input[0])
    b = int(attribute(n, "blocksize", 0))
    mode = attribute(n, "mode", b"DCR")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if shape is None or len(shape) != 4 or b < 1 or shape[1] % (b * b) or \
            mode not in ("DCR", "CRD"):
        return None
    batch, channels, height, width = shape
    depth = channels // (b * b)
    if mode == "DCR":
        six, perm = [batch, b, b, depth, height, width], [0, 3, 4, 1, 5, 2]
    else:
        six, perm = [batch, depth, b, b, height, width], [0, 1, 4, 2, 5, 3]
    out = Replacement([])
    base = n.name or "DepthToSpace"
    viewed, permuted = ctx.fresh(f"{base}/six"), ctx.fresh(f"{base}/permuted")
    out.nodes += [
        node("Reshape", [n.input[0], ctx.const(f"{base}/six_shape", np.array(six, np.int64), out)],
             [viewed], ctx.fresh(f"{base}/Reshape")),
        node("Transpose", [viewed], [permuted], ctx.fresh(f"{base}/Transpose"), perm=perm),
        node("Reshape", [permuted, ctx.const(f"{base}/shape", np.array(
            [batch, depth, height * b, width * b], np.int64), out)], [n.output[0]],
             ctx.fresh(f"{base}/Reshape")),
    ]
    return out


RULES = [NodeRule("DepthToSpace->Reshape/Transpose/Reshape",
                  frozenset({op_key("", "DepthToSpace")}), depth_to_space)]
