"""The runner's TensorProto reader and writer for the types numpy lacks (bfloat16, float8, int4,
uint4, int2, uint2, float4, float8e8m0), run as tp_tool under ASan and UBSan: each in raw_data
and in int32_data (packed and one value per tag), odd element counts of the packed types
included, written back byte-identical to onnx's own serializer."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper, numpy_helper

from edgepack import dtypes
from tests.runner.test_tensorproto import _field, _ld, _varint, tool, unpacked

ML_DTYPES = [d.name for d in dtypes.TABLE if d.module == "ml_dtypes"]
# Odd counts (5, 3) leave a packed byte half (or three quarters) empty.
SHAPES = [(), (0,), (5,), (2, 3), (1, 3, 1)]


def sample(row: dtypes.DType, shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(row.onnx)
    if row.kind == "int":
        high = 2 ** (row.bits - 1)
        return rng.integers(-high if row.name.startswith("int") else 0, high, shape).astype(
            row.numpy())
    return (rng.standard_normal(shape) * 4).astype(row.numpy())


@pytest.mark.parametrize("name", ML_DTYPES)
def test_new_dtypes_round_trip_in_every_encoding(tp_tool, tmp_path, name):
    row = dtypes.BY_NAME[name]
    for shape in SHAPES:
        arr = sample(row, shape)
        reference = numpy_helper.from_array(arr, f"t_{name}").SerializeToString()
        typed = helper.make_tensor(f"t_{name}", row.onnx, list(shape), arr.flatten().tolist())
        assert not typed.raw_data and typed.int32_data or arr.size == 0
        for label, data in [("raw", reference), ("typed", typed.SerializeToString()),
                            ("unpacked", unpacked(typed))]:
            code, doc, written = tool(tp_tool, data, tmp_path)
            assert code == 0, (label, shape, doc)
            assert doc == {"name": f"t_{name}", "dtype": name, "dims": list(shape),
                           "nbytes": row.nbytes(arr.size)}, (label, shape)
            assert written == reference, (label, shape)


def _int4(dims: list[int], values: list[int]) -> bytes:
    out = b"".join(_field(1, 0) + _varint(d) for d in dims) + _field(2, 0) + _varint(22)
    return out + _ld(5, b"".join(_varint(v) for v in values))


@pytest.mark.parametrize(("data", "reason"), [
    # 5 int4 elements take 3 bytes, so 3 int32_data entries: one per element is refused.
    (_int4([5], [1, 2, 3, 4, 5]), "int32_data holds 5 values but dims and data_type need 3"),
    (_int4([5], [1, 2]), "int32_data holds 2 values but dims and data_type need 3"),
    (_field(1, 0) + b"\x05" + _field(2, 0) + b"\x16" + _ld(9, b"\x00" * 2),
     "raw_data holds 2 bytes but dims and data_type need 3"),
    (_field(1, 0) + b"\x03" + _field(2, 0) + b"\x10" + _ld(9, b"\x00" * 3),
     "raw_data holds 3 bytes but dims and data_type need 6"),
    (_field(1, 0) + _varint(1 << 62) + _field(1, 0) + b"\x04" + _field(2, 0) + b"\x16"
     + _ld(9, b""), "too large"),
    (_field(2, 0) + b"\x0e" + _ld(9, b"\x00" * 8), "data type 14 is not supported"),
])
def test_packed_and_new_dtypes_size_checks(tp_tool, tmp_path, data, reason):
    code, doc, written = tool(tp_tool, data, tmp_path)
    assert code == 1, doc
    assert reason in doc["error"], doc
    assert written is None
