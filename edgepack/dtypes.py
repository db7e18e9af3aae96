"""Every ONNX tensor element type edgepack carries, in one table.

Each row says, for one TensorProto.DataType: edgepack's name for it (numpy's name, or
ml_dtypes' for the types numpy lacks: bfloat16, the float8s, int4, uint4, int2, uint2, float4),
what kind of value it holds (how it is compared and printed), how many bits an element takes
(4-bit and 2-bit types are packed two and four a byte, the first element in the lowest bits, as
ONNX stores them), which typed TensorProto field carries it when raw_data does not, and its
default comparison tolerance. Reading and writing tensors, compare, pack, the Python engine and
reports look types up here, so that a new type is one row (and one case in the runner's
tensorproto.c).

Importing this module costs nothing: numpy and ml_dtypes are imported when a numpy dtype is
first asked for, so option parsing may use the names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class Tol:
    """A default tolerance (bundle.schema.Tolerance is built from it; this module stays free
    of imports)."""

    rtol: float
    atol: float


EXACT = Tol(0.0, 0.0)


@dataclass(frozen=True)
class DType:
    onnx: int  # TensorProto.DataType
    name: str  # edgepack's (numpy's or ml_dtypes') name
    kind: str  # "float" | "int" | "bool" | "string": how values are compared and printed
    bits: int  # per element; 4 and 2: packed 2 and 4 a byte, low bits first; 0 for strings
    field: str  # the typed TensorProto field that carries it when raw_data does not
    tolerance: Tol  # default: loose enough for another CPU's kernels, tight enough for a bug
    module: str = "numpy"  # where the numpy dtype comes from: "numpy" or "ml_dtypes"

    @property
    def onnx_name(self) -> str:
        """ONNX's lower-case spelling, as onnxruntime writes it in "tensor(...)"."""
        return _ONNX_NAMES[self.onnx]

    @property
    def packed(self) -> bool:
        return 0 < self.bits < 8

    def nbytes(self, count: int) -> int:
        """Bytes `count` elements take in raw_data (4-bit types: ceil(count / 2), 2-bit:
        ceil(count / 4))."""
        return (count * self.bits + 7) // 8

    def numpy(self) -> np.dtype:
        """The numpy dtype of arrays of this type (unpacked: one element a byte for 4-bit and
        2-bit types)."""
        return _numpy_dtype(self.name, self.module)


def _ulp_tol(mantissa_bits: int, smallest_subnormal: float) -> Tol:
    # One unit in the last place relative, and one subnormal step absolute: kernels that compute
    # in float32 and round once may differ by that much, a wrong op by far more.
    return Tol(2.0 ** -mantissa_bits, smallest_subnormal)


TABLE: tuple[DType, ...] = (
    DType(1, "float32", "float", 32, "float_data", Tol(1e-3, 1e-4)),
    DType(2, "uint8", "int", 8, "int32_data", EXACT),
    DType(3, "int8", "int", 8, "int32_data", EXACT),
    DType(4, "uint16", "int", 16, "int32_data", EXACT),
    DType(5, "int16", "int", 16, "int32_data", EXACT),
    DType(6, "int32", "int", 32, "int32_data", EXACT),
    DType(7, "int64", "int", 64, "int64_data", EXACT),
    DType(8, "string", "string", 0, "string_data", EXACT),
    DType(9, "bool", "bool", 8, "int32_data", EXACT),
    DType(10, "float16", "float", 16, "int32_data", Tol(1e-2, 1e-2)),
    DType(11, "float64", "float", 64, "double_data", Tol(1e-7, 1e-9)),
    DType(12, "uint32", "int", 32, "uint64_data", EXACT),
    DType(13, "uint64", "int", 64, "uint64_data", EXACT),
    # bfloat16 keeps 7 mantissa bits: one ulp is 2^-7 (0.8 %) relative.
    DType(16, "bfloat16", "float", 16, "int32_data", Tol(1e-2, 1e-2), "ml_dtypes"),
    DType(17, "float8_e4m3fn", "float", 8, "int32_data", _ulp_tol(3, 2.0 ** -9), "ml_dtypes"),
    DType(18, "float8_e4m3fnuz", "float", 8, "int32_data", _ulp_tol(3, 2.0 ** -10), "ml_dtypes"),
    DType(19, "float8_e5m2", "float", 8, "int32_data", _ulp_tol(2, 2.0 ** -16), "ml_dtypes"),
    DType(20, "float8_e5m2fnuz", "float", 8, "int32_data", _ulp_tol(2, 2.0 ** -17), "ml_dtypes"),
    DType(21, "uint4", "int", 4, "int32_data", EXACT, "ml_dtypes"),
    DType(22, "int4", "int", 4, "int32_data", EXACT, "ml_dtypes"),
    DType(23, "float4_e2m1fn", "float", 4, "int32_data", _ulp_tol(1, 0.5), "ml_dtypes"),
    # Powers of two only (a scale's type): one ulp is a factor of 2.
    DType(24, "float8_e8m0fnu", "float", 8, "int32_data", _ulp_tol(0, 2.0 ** -127),
          "ml_dtypes"),
    DType(25, "uint2", "int", 2, "int32_data", EXACT, "ml_dtypes"),
    DType(26, "int2", "int", 2, "int32_data", EXACT, "ml_dtypes"),
)

_ONNX_NAMES = {
    1: "float", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
    8: "string", 9: "bool", 10: "float16", 11: "double", 12: "uint32", 13: "uint64",
    16: "bfloat16", 17: "float8e4m3fn", 18: "float8e4m3fnuz", 19: "float8e5m2",
    20: "float8e5m2fnuz", 21: "uint4", 22: "int4", 23: "float4e2m1", 24: "float8e8m0",
    25: "uint2", 26: "int2",
}
BY_ONNX: dict[int, DType] = {d.onnx: d for d in TABLE}
BY_NAME: dict[str, DType] = {d.name: d for d in TABLE}
BY_ONNX_NAME: dict[str, DType] = {d.onnx_name: d for d in TABLE}
STRING = "string"


@cache
def _numpy_dtype(name: str, module: str) -> np.dtype:
    import numpy as np

    if module == "ml_dtypes":
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, name))
    return np.dtype(name)


def of_ort_type(text: str) -> DType | None:
    """The row of an onnxruntime type string, "tensor(bfloat16)"; None for non-tensors and
    types outside the table."""
    if not (text.startswith("tensor(") and text.endswith(")")):
        return None
    return BY_ONNX_NAME.get(text[7:-1])


def lookup(name: str) -> DType | None:
    return BY_NAME.get(name)


def of_onnx(elem_type: int) -> DType | None:
    return BY_ONNX.get(elem_type)


def name_of(elem_type: int) -> str:
    """edgepack's name of an ONNX element type; types not in the table keep ONNX's lower-case
    name (complex64, float8e8m0, ...), which no array ever has, so they are refused where an
    array must match."""
    row = BY_ONNX.get(elem_type)
    if row is not None:
        return row.name
    from onnx import TensorProto

    try:
        return TensorProto.DataType.Name(elem_type).lower()
    except ValueError:
        return f"type{elem_type}"


def of_array(array: Any) -> DType | None:
    """The row of an array's dtype; strings (object, str and bytes arrays) are STRING."""
    dt = array.dtype
    if dt.kind in "OUS":
        return BY_NAME[STRING]
    return BY_NAME.get(dt.name)


def array_name(array: Any) -> str:
    """edgepack's dtype name for an array (numpy's name for types outside the table)."""
    row = of_array(array)
    return row.name if row is not None else array.dtype.name


def kind_of(name: str) -> str:
    """"float", "int", "bool", "string", or "other" for names outside the table."""
    row = BY_NAME.get(name)
    return row.kind if row is not None else "other"


def default_tolerance(name: str) -> Tol:
    row = BY_NAME.get(name)
    return row.tolerance if row is not None else EXACT


def show(value: Any, name: str) -> str:
    """One element as reports print it: floats to 6 significant digits (nan, inf, -inf
    spelled out), integers and booleans exactly."""
    kind = kind_of(name)
    if kind == "float":
        x = float(value)
        if math.isnan(x):
            return "nan"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return f"{x:.6g}"
    if kind == "int":
        return str(int(value))
    if kind == "bool":
        return str(bool(value))
    return str(value)


# ---------------------------------------------------------------------------- packing


def unpack(raw: bytes, row: DType, count: int) -> np.ndarray:
    """raw_data bytes -> a flat array of `count` elements of `row`'s numpy dtype."""
    import numpy as np

    data = np.frombuffer(raw, dtype=np.uint8)
    if row.packed:
        per = 8 // row.bits
        mask = (1 << row.bits) - 1
        values = np.empty(data.size * per, dtype=np.uint8)
        for k in range(per):
            values[k::per] = (data >> (k * row.bits)) & mask
        return values[:count].view(row.numpy()).copy()
    dtype = row.numpy()
    if dtype.itemsize > 1 and dtype.kind in "iufb":
        # raw_data is little-endian whatever the host is.
        return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype)
    return np.frombuffer(raw, dtype=dtype).copy()


def pack(array: np.ndarray, row: DType) -> bytes:
    """A C-contiguous array -> raw_data bytes (little-endian; 4-bit and 2-bit types packed
    8 / bits elements a byte, the first in the lowest bits, zero bits after the last)."""
    import numpy as np

    flat = np.ascontiguousarray(array).reshape(-1)
    if row.packed:
        per = 8 // row.bits
        values = flat.view(np.uint8) & ((1 << row.bits) - 1)
        if values.size % per:
            values = np.concatenate([values, np.zeros(per - values.size % per, np.uint8)])
        out = np.zeros(values.size // per, dtype=np.uint8)
        for k in range(per):
            out |= values[k::per] << (k * row.bits)
        return out.tobytes()
    if flat.dtype.itemsize > 1 and flat.dtype.kind in "iuf":
        flat = flat.astype(flat.dtype.newbyteorder("<"))
    return flat.tobytes()
