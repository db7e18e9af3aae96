"""numpy arrays <-> serialized onnx.TensorProto files, and the dtype names used everywhere.

Bundles keep tensors in the ONNX test-data layout (`input_<i>.pb`, `output_<i>.pb`), so any tool
that reads ONNX test data (onnx_test_runner, onnxruntime_perf_test, edgepack-runner) reads them.

Reading has a fast path for the files edgepack and its runner write (shape, type, name and
`raw_data`, or `string_data` for strings, nothing else): a few lines of protobuf wire format, so
that deploying and comparing never import onnx, whose import costs more than a redeploy's device
work. Anything else (typed repeated fields, external data, segments, unusual types) goes to onnx
itself.

String tensors (ONNX's STRING, dtype name `string`) are numpy object arrays of `str`, the
representation onnxruntime's Python API takes and returns: read_tensor decodes each element of
`string_data` as UTF-8 with the "surrogateescape" error handler, so bytes that are not UTF-8
survive a read and a write unchanged (`string_bytes` gives any element's exact bytes back).
write_tensor takes object arrays of str or bytes, and numpy's own str and bytes arrays.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from edgepack import dtypes
from edgepack.errors import EdgepackError
from edgepack.fileio import atomic_write_bytes

# TensorProto field numbers the fast path understands; any other data field sends the file to
# onnx (float_data 4, int32_data 5, int64_data 7, double_data 10, uint64_data 11, segment 3,
# external_data 13, data_location 14).
_DIMS, _DATA_TYPE, _STRINGS, _NAME, _DOC, _RAW = 1, 2, 6, 8, 12, 9


STRING = dtypes.STRING  # ONNX's STRING element type; numpy holds it as an object array
_STRING_TYPE = 8  # TensorProto.STRING


def array_dtype(array: np.ndarray) -> str:
    """The dtype name edgepack records for an array: numpy's name (ml_dtypes' for bfloat16,
    float8, int4 and the like), except that string tensors (object arrays of str or bytes, as
    onnx and onnxruntime hand them out, or numpy's own fixed-width str and bytes) are `string`,
    ONNX's own name, as model specs spell it."""
    return dtypes.array_name(array)


def dtype_name(elem_type: int) -> str:
    """edgepack's name of an ONNX element type; types outside edgepack.dtypes keep their ONNX
    name."""
    return dtypes.name_of(elem_type)


def read_tensor(path: Path) -> tuple[str, np.ndarray]:
    """Read a TensorProto file; returns (name, array). The name may be empty."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise EdgepackError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise EdgepackError(f"{path}: is a directory, expected a TensorProto (.pb) file") from None
    fast = _decode(data)
    if fast is not None:
        return fast
    return _read_with_onnx(path, data)


def decode_raw_tensor(data: bytes) -> tuple[str, np.ndarray] | None:
    """(name, array) of a TensorProto holding only dims, data_type, name, doc_string and
    raw_data of a numeric type in edgepack.dtypes; None for anything else, malformed bytes
    included."""
    decoded = _decode(data)
    if decoded is None or decoded[1].dtype.kind == "O":
        return None
    return decoded


def _decode(data: bytes) -> tuple[str, np.ndarray] | None:
    """decode_raw_tensor, and also STRING tensors held in string_data."""
    dims: list[int] = []
    elem_type = 0
    name = ""
    raw: bytes | None = None
    strings: list[bytes] = []
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
                elif field == _STRINGS:
                    strings.append(chunk)
                elif field != _DOC:
                    return None
            else:
                return None
    except (IndexError, UnicodeDecodeError):
        return None
    if any(d >= 2**62 for d in dims):
        return None
    # math.prod, not np.prod: int64 wraps, and dims whose product wraps to the element count
    # found would pass the check below and fail in reshape.
    count = math.prod(dims)
    if elem_type == _STRING_TYPE:
        if raw is not None or len(strings) != count:
            return None
        array = np.empty(len(strings), dtype=object)
        array[:] = [s.decode("utf-8", "surrogateescape") for s in strings]
        return name, array.reshape(dims)
    row = dtypes.of_onnx(elem_type)
    if raw is None or strings or row is None or row.kind == STRING:
        return None
    if row.nbytes(count) != len(raw):
        return None
    return name, dtypes.unpack(raw, row, count).reshape(dims)


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
    if array.dtype.kind in "OS":
        array = as_strings(array)
    return proto.name, array


def _is_empty(proto: object) -> bool:
    return not any(
        getattr(proto, f) for f in (
            "float_data", "int32_data", "int64_data", "double_data", "uint64_data",
            "string_data", "data_type",
        )
    )


def string_bytes(value: object) -> bytes:
    """The exact bytes of one element of a string tensor, as a TensorProto carries them."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    raise EdgepackError(
        f"string tensors hold str or bytes, not {type(value).__name__} ({value!r:.40})"
    )


def as_strings(array: np.ndarray) -> np.ndarray:
    """A string tensor (object array of str or bytes, or numpy's fixed-width str or bytes) as
    the object array of str that read_tensor returns and onnxruntime takes; EdgepackError when
    an element is neither str nor bytes."""
    array = np.asarray(array)
    flat = np.empty(array.size, dtype=object)
    flat[:] = [
        string_bytes(v).decode("utf-8", "surrogateescape") if not isinstance(v, str) else str(v)
        for v in array.ravel().tolist()
    ]
    return flat.reshape(array.shape)


def tensor_bytes(name: str, array: np.ndarray) -> bytes:
    """Serialize an array as a named TensorProto, with raw_data, or string_data for strings
    (deterministic bytes)."""
    array = np.asarray(array)
    if array_dtype(array) == STRING:
        from onnx import numpy_helper

        # numpy_helper keeps bytes as they are and encodes str strictly; giving it bytes keeps
        # surrogate-escaped elements (bytes that were not UTF-8) byte for byte.
        encoded = np.empty(array.size, dtype=object)
        encoded[:] = [string_bytes(v) for v in array.ravel().tolist()]
        array = encoded.reshape(array.shape)
        return numpy_helper.from_array(array, name=name).SerializeToString(deterministic=True)
    row = dtypes.of_array(array)
    if row is None:
        raise EdgepackError(f"tensor {name!r} is {array.dtype.name}, which ONNX has no type for")
    # The fields in field-number order, as protobuf's deterministic serialization writes them:
    # the same bytes as onnx.numpy_helper.from_array(array, name) and as the runner writes.
    # Written here because numpy_helper predates some of the types and packs none the same way
    # on every onnx version.
    out = bytearray()
    for d in array.shape:
        out += b"\x08" + _put_varint(int(d))
    out += b"\x10" + _put_varint(row.onnx)
    if name:
        encoded_name = name.encode("utf-8")
        out += b"\x42" + _put_varint(len(encoded_name)) + encoded_name
    raw = dtypes.pack(array, row)
    out += b"\x4a" + _put_varint(len(raw)) + raw
    return bytes(out)


def _put_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def write_tensor(path: Path, name: str, array: np.ndarray) -> None:
    atomic_write_bytes(Path(path), tensor_bytes(name, array))
