"""numpy arrays <-> serialized onnx.TensorProto files, and the dtype names used everywhere.

Bundles keep tensors in the ONNX test-data layout (`input_<i>.pb`, `output_<i>.pb`), so any tool
that reads ONNX test data (onnx_test_runner, onnxruntime_perf_test, edgepack-runner) reads them.

Reading has a fast path for the files edgepack and its runner write (shape, type, name and
`raw_data`, nothing else): a few lines of protobuf wire format, so that deploying and comparing
never import onnx, whose import costs more than a redeploy's device work. Anything else (typed
repeated fields, external data, segments, unusual types) goes to onnx itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgepack.errors import EdgepackError
from edgepack.fileio import atomic_write_bytes

# ONNX element types (TensorProto.DataType) edgepack moves between host and device, by their
# numpy names; the runner supports exactly these.
DTYPES: dict[int, str] = {
    1: "float32",
    10: "float16",
    11: "float64",
    3: "int8",
    2: "uint8",
    5: "int16",
    4: "uint16",
    6: "int32",
    12: "uint32",
    7: "int64",
    13: "uint64",
    9: "bool",
}

# TensorProto field numbers the fast path understands; any other data field sends the file to
# onnx (float_data 4, int32_data 5, string_data 6, int64_data 7, double_data 10, uint64_data 11,
# segment 3, external_data 13, data_location 14).
_DIMS, _DATA_TYPE, _NAME, _DOC, _RAW = 1, 2, 8, 12, 9


def dtype_name(elem_type: int) -> str:
    """numpy name of an ONNX element type; unusual ones keep their ONNX name."""
    if elem_type in DTYPES:
        return DTYPES[elem_type]
    from onnx import TensorProto

    return TensorProto.DataType.Name(elem_type).lower()


def read_tensor(path: Path) -> tuple[str, np.ndarray]:
    """Read a TensorProto file; returns (name, array). The name may be empty."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise EdgepackError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise EdgepackError(f"{path}: is a directory, expected a TensorProto (.pb) file") from None
    fast = decode_raw_tensor(data)
    if fast is not None:
        return fast
    return _read_with_onnx(path, data)


def decode_raw_tensor(data: bytes) -> tuple[str, np.ndarray] | None:
    """(name, array) of a TensorProto holding only dims, data_type, name, doc_string and
    raw_data of a type in DTYPES; None for anything else, malformed bytes included."""
    dims: list[int] = []
    elem_type = 0
    name = ""
    raw: bytes | None = None
    pos, end = 0, len(data)
    try:
        while pos < end:
            key, pos = _varint(data, pos)
            field, wire = key >> 3, key & 7
            if wire == 0:
                value, pos = _varint(data, pos)
                if field == _DIMS:
                    dims.append(value)
                elif field == _DATA_TYPE:
                    elem_type = value
                else:
                    return None
            elif wire == 2:
                length, pos = _varint(data, pos)
                if pos + length > end:
                    return None
                chunk = data[pos:pos + length]
                pos += length
                if field == _DIMS:  # packed dims
                    p = 0
                    while p < len(chunk):
                        value, p = _varint(chunk, p)
                        dims.append(value)
                elif field == _NAME:
                    name = chunk.decode("utf-8")
                elif field == _RAW:
                    raw = chunk
                elif field != _DOC:
                    return None
            else:
                return None
    except (IndexError, UnicodeDecodeError):
        return None
    if raw is None or elem_type not in DTYPES or any(d >= 2**62 for d in dims):
        return None
    dtype = np.dtype(DTYPES[elem_type]).newbyteorder("<")
    count = int(np.prod(dims, dtype=np.int64)) if dims else 1
    if count * dtype.itemsize != len(raw):
        return None
    array = np.frombuffer(raw, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))
    return name, array


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise IndexError("varint too long")


def _read_with_onnx(path: Path, data: bytes) -> tuple[str, np.ndarray]:
    from onnx import TensorProto, numpy_helper

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


def _is_empty(proto: object) -> bool:
    return not any(
        getattr(proto, f) for f in (
            "float_data", "int32_data", "int64_data", "double_data", "uint64_data",
            "string_data", "data_type",
        )
    )


def tensor_bytes(name: str, array: np.ndarray) -> bytes:
    """Serialize an array as a named TensorProto, always with raw_data (deterministic bytes)."""
    from onnx import numpy_helper

    array = np.asarray(array)
    # Not np.ascontiguousarray: it turns a 0-d array into shape (1,).
    if not array.flags.c_contiguous:
        array = array.copy(order="C")
    proto = numpy_helper.from_array(array, name=name)
    return proto.SerializeToString(deterministic=True)


def write_tensor(path: Path, name: str, array: np.ndarray) -> None:
    atomic_write_bytes(Path(path), tensor_bytes(name, array))
