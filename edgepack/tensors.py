"""numpy arrays <-> serialized onnx.TensorProto files, and the dtype names used everywhere.

Bundles keep tensors in the ONNX test-data layout (`input_<i>.pb`, `output_<i>.pb`), so any tool
that reads ONNX test data (onnx_test_runner, onnxruntime_perf_test, edgepack-runner) reads them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from edgepack.errors import EdgepackError
from edgepack.fileio import atomic_write_bytes

# ONNX element types edgepack moves between host and device, by their numpy names; the runner
# supports exactly these.
DTYPES: dict[int, str] = {
    TensorProto.FLOAT: "float32",
    TensorProto.FLOAT16: "float16",
    TensorProto.DOUBLE: "float64",
    TensorProto.INT8: "int8",
    TensorProto.UINT8: "uint8",
    TensorProto.INT16: "int16",
    TensorProto.UINT16: "uint16",
    TensorProto.INT32: "int32",
    TensorProto.UINT32: "uint32",
    TensorProto.INT64: "int64",
    TensorProto.UINT64: "uint64",
    TensorProto.BOOL: "bool",
}


def dtype_name(elem_type: int) -> str:
    """numpy name of an ONNX element type; unusual ones keep their ONNX name."""
    if elem_type in DTYPES:
        return DTYPES[elem_type]
    return TensorProto.DataType.Name(elem_type).lower()


def read_tensor(path: Path) -> tuple[str, np.ndarray]:
    """Read a TensorProto file; returns (name, array). The name may be empty."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise EdgepackError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise EdgepackError(f"{path}: is a directory, expected a TensorProto (.pb) file") from None
    proto = TensorProto()
    try:
        proto.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError, and others on garbage
        raise EdgepackError(f"{path}: not a serialized onnx.TensorProto ({exc})") from None
    if not proto.dims and not proto.raw_data and _is_empty(proto):
        raise EdgepackError(f"{path}: not a serialized onnx.TensorProto (it holds no tensor)")
    try:
        array = numpy_helper.to_array(proto)
    except Exception as exc:
        raise EdgepackError(f"{path}: TensorProto cannot be read as an array ({exc})") from None
    return proto.name, array


def _is_empty(proto: TensorProto) -> bool:
    return not any(
        (
            proto.float_data, proto.int32_data, proto.int64_data, proto.double_data,
            proto.uint64_data, proto.string_data, proto.data_type,
        )
    )


def tensor_bytes(name: str, array: np.ndarray) -> bytes:
    """Serialize an array as a named TensorProto, always with raw_data (deterministic bytes)."""
    proto = numpy_helper.from_array(np.ascontiguousarray(array), name=name)
    return proto.SerializeToString(deterministic=True)


def write_tensor(path: Path, name: str, array: np.ndarray) -> None:
    atomic_write_bytes(Path(path), tensor_bytes(name, array))


def model_value_dtype(value: onnx.ValueInfoProto) -> str:
    return dtype_name(value.type.tensor_type.elem_type)
