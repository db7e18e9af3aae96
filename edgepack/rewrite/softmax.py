"""LogSoftmax into Log of Softmax, for targets with Softmax and Log but not LogSoftmax (NNAPI).

onnx's own body for LogSoftmax (x - max - log(sum(exp(x - max)))) needs ReduceMax and
ReduceSum, which such targets lack; the driver prefers this rule when its operators are all
allowed. Log of a Softmax that underflows to 0 is -inf where LogSoftmax is finite: inputs that
far apart fail pack's numeric check (exit 1), never pass silently. Both operators share their
axis semantics at every opset (flattened to 2-D before 13, one axis from 13), so the node's
axis carries over unchanged.
"""

from __future__ import annotations

from typing import Any

from edgepack.rewrite.graph import Context, NodeRule, Replacement, attribute, node
from edgepack.rewrite.spec import op_key


def log_of_softmax(n: Any, ctx: Context) -> Replacement | None:
    base = n.name or "LogSoftmax"
    probs = ctx.fresh(f"{base}/softmax")
    axis = attribute(n, "axis")
    kwargs = {} if axis is None else {"axis": axis}
    return Replacement([
        node("Softmax", [n.input[0]], [probs], ctx.fresh(f"{base}/Softmax"), **kwargs),
        node("Log", [probs], [n.output[0]], ctx.fresh(f"{base}/Log")),
    ])


RULES = [NodeRule("LogSoftmax->Log(Softmax)", frozenset({op_key("", "LogSoftmax")}),
                  log_of_softmax)]
