"""The whole model at another opset, for a target whose kernels are per opset.

ONNX.js (and onnxruntime-web's WebGL backend, its engine) picks a kernel by the model's opset,
not by the operator's version: its Upsample runs at opsets 7-8 only, its Reduce* read `axes` as
an attribute (opsets up to 17). The fast-neural-style net at opset 9 is refused for its two
Upsample nodes alone; the same graph at opset 8 runs. The rule converts the model with onnx's
version converter to the nearest opset at which the target takes every node it has a range
for, and the driver's check against the original model proves the conversion kept the numbers.
"""

from __future__ import annotations

from typing import Any

from edgepack.rewrite.graph import ModelRule, key_of
from edgepack.rewrite.spec import OpsAllowed


def _default_opset(model: Any) -> int | None:
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")),
                None)


def _ranged(n: Any, allowed: OpsAllowed) -> bool:
    return n.domain in ("", "ai.onnx") and key_of(n) in allowed.opset_versions


def wrong_opset(n: Any, model: Any, allowed: OpsAllowed | None) -> bool:
    """The target has the node's operator, but not at the model's opset."""
    return (allowed is not None and _ranged(n, allowed) and key_of(n) in allowed.ops
            and not allowed.allows_at(key_of(n), _default_opset(model)))


def _fits(model: Any, allowed: OpsAllowed, opset: int) -> bool:
    return all(allowed.allows_at(key_of(n), opset) for n in model.graph.node
               if _ranged(n, allowed))


def to_target_opset(model: Any, allowed: OpsAllowed | None) -> Any | None:
    import onnx
    import onnx.defs
    from onnx import version_converter

    current = _default_opset(model)
    if allowed is None or current is None:
        return None
    # Nearest first, the lower of two equally near: older opsets are what these runtimes know.
    candidates = sorted((v for v in range(1, onnx.defs.onnx_opset_version() + 1)
                         if v != current and _fits(model, allowed, v)),
                        key=lambda v: (abs(v - current), v))
    for target in candidates:
        try:
            converted = version_converter.convert_version(model, target)
            if not _drop_new_attributes(converted, target):
                continue
            onnx.checker.check_model(converted)
        except Exception:  # noqa: BLE001 - an operator without an adapter: try the next opset
            continue
        # The converter may write other operators (Upsample-9's scales input into the
        # attribute): the result must fit too.
        if _default_opset(converted) == target and _fits(converted, allowed, target):
            return converted
    return None


# Attributes an opset introduced that onnx's converter (1.23) leaves behind when it goes below
# that opset, e.g. ReduceMean-18's noop_with_empty_axes at 17: dropped where their value is the
# default (the meaning is then the older opset's), else the opset is not a candidate.
_NEW_ATTRIBUTES = {("ReduceMean", "noop_with_empty_axes"): (18, 0),
                   ("ReduceMax", "noop_with_empty_axes"): (18, 0),
                   ("ReduceMin", "noop_with_empty_axes"): (18, 0),
                   ("ReduceProd", "noop_with_empty_axes"): (18, 0),
                   ("ReduceLogSum", "noop_with_empty_axes"): (18, 0),
                   ("ReduceLogSumExp", "noop_with_empty_axes"): (18, 0),
                   ("ReduceSumSquare", "noop_with_empty_axes"): (18, 0),
                   ("ReduceL1", "noop_with_empty_axes"): (18, 0),
                   ("ReduceL2", "noop_with_empty_axes"): (18, 0),
                   ("ReduceSum", "noop_with_empty_axes"): (13, 0)}


def _drop_new_attributes(model: Any, opset: int) -> bool:
    for n in model.graph.node:
        for attr in list(n.attribute):
            since = _NEW_ATTRIBUTES.get((n.op_type, attr.name))
            if since is None or opset >= since[0]:
                continue
            if attr.i != since[1]:
                return False
            n.attribute.remove(attr)
    return True


RULES = [ModelRule("opset conversion (onnx version converter)", None, to_target_opset,
                   matches=wrong_opset, for_target=True)]
