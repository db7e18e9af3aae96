"""Slice bounds beyond 32 bits, brought inside, for runtimes that read int64 as 32-bit.

ONNX.js (and onnxruntime-web's WebGL backend, its engine) converts every int64 constant to a
JavaScript number and refuses the model when one does not fit in int32. PyTorch writes an
open-ended slice (`x[:, 2:]`) with end 2**63 - 1 and a reversed one with -2**63, so such a model
never loads there although nothing in it needs 64 bits. Slice clamps its starts and ends to the
axis ([0, dim], or [-1, dim - 1] stepping back), and no axis has 2**31 elements, so clamping
those bounds to int32 computes the same slice. Only Slice's starts and ends are touched: in any
other tensor a value beyond 32 bits may mean something, and `check` names it instead. The
driver's numeric check against the original model still runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

INT32 = (-(2**31), 2**31 - 1)
NAME = "Slice bounds -> int32"


def clamp_slice_bounds(model: Any) -> int:
    """Clamp the constant int64 starts/ends of every Slice (opset 10+, where they are inputs)
    to int32, in place; returns how many Slice nodes changed. A constant another node also
    reads is copied under a fresh name rather than changed under that node."""
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    readers: dict[str, int] = {}
    for n in graph.node:
        for name in n.input:
            readers[name] = readers.get(name, 0) + 1
    taken = {t.name for t in graph.initializer} | {o for n in graph.node for o in n.output}
    changed = 0
    for n in graph.node:
        if n.op_type != "Slice" or n.domain not in ("", "ai.onnx") or len(n.input) < 3:
            continue
        touched = False
        for position in (1, 2):
            tensor = inits.get(n.input[position])
            if tensor is None or tensor.data_type != TensorProto.INT64 or \
                    tensor.data_location == TensorProto.EXTERNAL:
                continue
            values = numpy_helper.to_array(tensor)
            clamped = np.clip(values, *INT32).astype(np.int64)
            if np.array_equal(clamped, values):
                continue
            name = tensor.name
            if readers.get(name, 0) > 1:
                base, k = f"{name}/int32", 0
                name = base
                while name in taken:
                    k += 1
                    name = f"{base}_{k}"
                taken.add(name)
                graph.initializer.append(numpy_helper.from_array(clamped, name))
                inits[name] = graph.initializer[-1]
                n.input[position] = name
            else:
                tensor.CopyFrom(numpy_helper.from_array(clamped, name))
            touched = True
        changed += touched
    return changed
