"""Upsample into Resize.

Upsample exists up to opset 9 and Resize from opset 10, so the two never share a model: the
rule is onnx's version converter taking the whole model to opset 10 (its Upsample adapter
writes the Resize), and the other rules then work at opset 10.
"""

from __future__ import annotations

from typing import Any

from edgepack.rewrite.graph import ModelRule
from edgepack.rewrite.spec import op_key

RESIZE_OPSET = 10


def upsample_to_resize(model: Any) -> Any | None:
    from onnx import version_converter

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset >= RESIZE_OPSET:
        return None  # a deprecated Upsample-10 model: the converter would not touch it
    try:
        converted = version_converter.convert_version(model, RESIZE_OPSET)
    except Exception:  # noqa: BLE001 - an op without an adapter: the rule does not apply
        return None
    if any(n.op_type == "Upsample" and n.domain in ("", "ai.onnx")
           for n in converted.graph.node):
        return None
    return converted


RULES = [ModelRule("Upsample->Resize (opset 10, onnx version converter)",
                   frozenset({op_key("", "Upsample")}), upsample_to_resize)]
