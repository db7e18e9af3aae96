"""`--fix-dim NAME=VALUE`: a symbolic dim made fixed (NNAPI and CoreML take fixed shapes only),
or `--fix-dim INPUT=D0xD1x...`: one input's whole shape, with onnxruntime's own helpers
(onnxruntime.tools.onnx_model_utils: make_dim_param_fixed, make_input_shape_fixed)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from edgepack.errors import EdgepackError, short

_SHAPE = re.compile(r"[1-9][0-9]*(?:[x,][1-9][0-9]*)*")


@dataclass(frozen=True)
class FixDim:
    name: str  # a dim_param, or an input's name
    sizes: tuple[int, ...]  # one size for a dim_param; an input's whole shape otherwise

    def text(self) -> str:
        return f"{self.name}={'x'.join(map(str, self.sizes))}"


def parse_fix_dim(text: str) -> FixDim:
    name, sep, value = text.partition("=")
    name, value = name.strip(), value.strip()
    if not sep or not name or not _SHAPE.fullmatch(value):
        raise EdgepackError(f"--fix-dim {text}: expected NAME=SIZE (a symbolic dim, e.g. "
                            "batch=1) or INPUT=D0xD1x... (an input's shape), sizes >= 1")
    return FixDim(name, tuple(int(v) for v in re.split(r"[x,]", value)))


def symbolic_dims(model: Any) -> list[str]:
    """The dim_params of the model's inputs and outputs, in order of first appearance."""
    found: list[str] = []
    for v in (*model.graph.input, *model.graph.output):
        if v.type.HasField("tensor_type"):
            for d in v.type.tensor_type.shape.dim:
                if d.HasField("dim_param") and d.dim_param not in found:
                    found.append(d.dim_param)
    return found


def fix_dims(model: Any, fixes: list[FixDim]) -> None:
    """Fix every dim asked for, in place; an unknown name is bad input (exit 2)."""
    from edgepack.providers import ort_tool

    # Not `from onnxruntime.tools...`: that package's __init__ imports torch when installed.
    utils = ort_tool("onnx_model_utils")
    fix_output_shapes = utils.fix_output_shapes
    make_dim_param_fixed = utils.make_dim_param_fixed
    make_input_shape_fixed = utils.make_input_shape_fixed

    initializers = {t.name for t in model.graph.initializer}
    inputs = [v.name for v in model.graph.input if v.name not in initializers]
    for fix in fixes:
        params = symbolic_dims(model)
        if fix.name in params and len(fix.sizes) == 1:
            make_dim_param_fixed(model.graph, fix.name, fix.sizes[0])
        elif fix.name in params and fix.name not in inputs:
            raise EdgepackError(f"--fix-dim {fix.text()}: {fix.name!r} is a symbolic dim and "
                                "takes one size")
        elif fix.name in inputs:
            try:
                make_input_shape_fixed(model.graph, fix.name, list(fix.sizes))
            except ValueError as exc:
                raise EdgepackError(f"--fix-dim {fix.text()}: {short(exc)}") from None
        else:
            known = ", ".join(params) or "none"
            raise EdgepackError(f"--fix-dim {fix.text()}: the model has no symbolic dim or "
                                f"input named {fix.name!r} (symbolic dims: {known}; inputs: "
                                f"{', '.join(inputs)})")
    try:
        fix_output_shapes(model)
    except Exception:  # noqa: BLE001 - cosmetic: outputs keep their symbolic dims, runs agree
        pass
