"""Running an onnxruntime Python session on tensors of any type in edgepack.dtypes.

onnxruntime's Python API takes and returns numpy's own dtypes only: it refuses an ml_dtypes
array (bfloat16, float8, int4, ...) as input ("Numpy_type 256 can't be converted") and cannot
hand such an output back as numpy ("No corresponding Numpy type"). For those, inputs go in as
OrtValues filled with the raw bytes ONNX defines (4-bit types packed, as the runner passes them)
and outputs come out as their bytes, unpacked through the same table. Sessions whose inputs and
outputs are all numpy types run through session.run unchanged.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import numpy as np

from edgepack import dtypes
from edgepack.errors import EdgepackError, short


def _special(row: dtypes.DType | None) -> bool:
    return row is not None and row.module == "ml_dtypes"


def needs_ort_values(session: Any, feeds: dict[str, np.ndarray]) -> bool:
    """Whether session.run cannot carry these feeds or the session's outputs."""
    if any(_special(dtypes.of_array(a)) for a in feeds.values()):
        return True
    return any(_special(dtypes.of_ort_type(o.type)) for o in session.get_outputs())


def prepare(session: Any, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
    """Feeds as session.run or run_session takes them: unchanged, or OrtValues when any
    input or output needs them (built once, outside a timed loop)."""
    if not needs_ort_values(session, feeds):
        return feeds
    import onnxruntime as ort

    values: dict[str, Any] = {}
    for name, array in feeds.items():
        row = dtypes.of_array(array)
        if _special(row):
            assert row is not None
            value = ort.OrtValue.ortvalue_from_shape_and_type(list(array.shape), row.onnx)
            raw = dtypes.pack(array, row)
            if raw:
                ctypes.memmove(value.data_ptr(), raw, len(raw))
            values[name] = value
        else:
            # Not np.ascontiguousarray: it turns a 0-d array into shape (1,).
            if not array.flags.c_contiguous:
                array = array.copy(order="C")
            values[name] = ort.OrtValue.ortvalue_from_numpy(array)
    return values


def run_session(session: Any, feeds: dict[str, Any]) -> list[Any]:
    """session.run(None, feeds) for feeds from prepare(): outputs as numpy arrays, ml_dtypes
    ones included."""
    if not any(type(v).__name__ == "OrtValue" for v in feeds.values()):
        return session.run(None, feeds)
    names = [o.name for o in session.get_outputs()]
    results = session.run_with_ort_values(names, feeds)
    return [_to_numpy(v) for v in results]


def _to_numpy(value: Any) -> Any:
    if not value.is_tensor():
        return value
    row = dtypes.of_ort_type(value.data_type())
    if not _special(row):
        return value.numpy()
    assert row is not None
    shape = value.shape()
    count = int(np.prod(shape, dtype=np.int64))
    size = value.tensor_size_in_bytes()
    raw = ctypes.string_at(value.data_ptr(), size) if size else b""
    return dtypes.unpack(raw, row, count).reshape(shape)


def reference_session(model: Path | bytes, what: str = "this model") -> Any:
    """The session every reference output is computed with (a bundle's expected outputs, a
    rewrite's and a quantization's checks, diagnose's host side): CPU, one thread, sequential,
    deterministic kernels, so that the outputs of one model and input do not depend on the
    machine's load or core count. `model` is a file (external data beside it) or bytes."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.use_deterministic_compute = True
    opts.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types per failure
        raise EdgepackError(f"onnxruntime cannot load {what}: {short(exc)}") from None
