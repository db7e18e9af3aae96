"""Operators that do nothing at inference: Dropout (not in training mode, its mask unused)
becomes an Identity."""

from __future__ import annotations

from typing import Any

from edgepack.rewrite.graph import Context, NodeRule, Replacement, node
from edgepack.rewrite.spec import op_key


def dropout_to_identity(n: Any, ctx: Context) -> Replacement | None:
    if len(n.output) > 1 and n.output[1] in ctx.read:
        return None  # its mask is read: not a no-op
    if len(n.input) > 2 and n.input[2]:  # training_mode (opset 12): must be a constant false
        mode = ctx.constant(n.input[2])
        if mode is None or bool(mode):
            return None
    return Replacement([node("Identity", [n.input[0]], [n.output[0]],
                             ctx.fresh(f"{n.name or 'Dropout'}/Identity"))])


RULES = [NodeRule("Dropout->Identity (inference)", frozenset({op_key("", "Dropout")}),
                  dropout_to_identity)]
