"""Seed corpus and dictionary for bench/fuzz_tensorproto.sh.

Seeds cover every dtype the runner carries (bfloat16, float8, int4/uint4 and float4 included),
in raw_data and in the typed fields, packed and unpacked (onnx's own serializer only writes
packed), string tensors (empty strings, NUL bytes, non-ASCII, bytes that are not UTF-8, the
fields in an unusual order), plus the TensorProto files shipped in the onnx package's backend
test data.

    python bench/fuzz_seeds.py SEED_DIR DICT_FILE
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MAX_SEED = 8192

DTYPES = [
    np.float32, np.float16, np.float64, np.int8, np.uint8, np.int16, np.uint16, np.int32,
    np.int64, np.uint32, np.uint64, np.bool_,
]


def _varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _unpacked(proto: TensorProto) -> bytes:
    """The same tensor with every repeated numeric field written one value per tag."""
    out = bytearray()
    for d in proto.dims:
        out += b"\x08" + _varint(d)
    out += b"\x10" + _varint(proto.data_type)
    for f in proto.float_data:
        out += b"\x25" + np.float32(f).tobytes()
    for v in proto.int32_data:
        out += b"\x28" + _varint(v)
    for v in proto.int64_data:
        out += b"\x38" + _varint(v)
    name = proto.name.encode()
    out += b"\x42" + _varint(len(name)) + name
    for f in proto.double_data:
        out += b"\x51" + np.float64(f).tobytes()
    for v in proto.uint64_data:
        out += b"\x58" + _varint(v)
    return bytes(out)


def seeds() -> list[bytes]:
    rng = np.random.default_rng(0)
    found: list[bytes] = []
    for dt in DTYPES:
        for shape in [(), (0,), (3,), (2, 3), (1, 2, 1, 2)]:
            arr = (rng.standard_normal(shape) * 50).astype(dt)
            raw = numpy_helper.from_array(arr, f"t_{np.dtype(dt).name}")
            found.append(raw.SerializeToString())
            elem = helper.np_dtype_to_tensor_dtype(np.dtype(dt))
            typed = helper.make_tensor(raw.name, elem, list(shape), arr.flatten().tolist())
            found.append(typed.SerializeToString())
            found.append(_unpacked(typed))
    # The types numpy lacks (ml_dtypes'): raw_data (4-bit ones packed two a byte, odd counts
    # included) and int32_data, one entry per element, or per byte of two 4-bit elements.
    import ml_dtypes

    for name in ("bfloat16", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2",
                 "float8_e5m2fnuz", "int4", "uint4", "float4_e2m1fn"):
        dt = np.dtype(getattr(ml_dtypes, name))
        for shape in [(), (0,), (3,), (2, 3), (1, 2, 1, 2)]:
            values = rng.standard_normal(shape) * (3 if name.endswith("int4") else 50)
            arr = values.astype(dt)
            raw = numpy_helper.from_array(arr, f"t_{name}")
            found.append(raw.SerializeToString())
            elem = helper.np_dtype_to_tensor_dtype(dt)
            typed = helper.make_tensor(raw.name, elem, list(shape), arr.flatten().tolist())
            found.append(typed.SerializeToString())
            found.append(_unpacked(typed))
    words = [b"", b"a", b"\x00", b"a\x00b", "é東".encode(), b"\xff\xfe", b"x" * 200]
    for shape in [(), (0,), (3,), (2, 3), (1, 2, 1, 2)]:
        count = int(np.prod(shape))
        arr = np.array([words[i % len(words)] for i in range(count)], dtype=object)
        proto = numpy_helper.from_array(arr.reshape(shape), "t_string")
        found.append(proto.SerializeToString())
        # Name first, dims last: protobuf allows any order, and a reader must too.
        shuffled = b"\x42\x01s\x10\x08" + b"".join(
            b"\x32" + _varint(len(w)) + w for w in arr.tolist()
        ) + b"".join(b"\x08" + _varint(d) for d in shape)
        found.append(shuffled)
    data = Path(onnx.__file__).parent / "backend" / "test" / "data"
    for path in sorted(data.glob("**/*.pb")):
        if path.stat().st_size <= MAX_SEED:
            found.append(path.read_bytes())
    return found


DICT = [
    b"\x08", b"\x0a", b"\x10", b"\x1a", b"\x22", b"\x25", b"\x28", b"\x2a", b"\x32", b"\x38",
    b"\x3a", b"\x42", b"\x4a", b"\x51", b"\x52", b"\x58", b"\x5a", b"\x62", b"\x6a", b"\x70",
    b"\x82\x01", b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", b"\x80\x80\x80\x80\x10",
    # data_type of bfloat16, the float8s, uint4, int4 and float4e2m1
    *(bytes([0x10, t]) for t in range(16, 24)),
]


def main(argv: list[str]) -> int:
    seed_dir, dict_file = Path(argv[1]), Path(argv[2])
    seed_dir.mkdir(parents=True, exist_ok=True)
    for blob in seeds():
        (seed_dir / hashlib.sha1(blob).hexdigest()).write_bytes(blob)
    lines = ["".join(f"\\x{b:02x}" for b in entry) for entry in DICT]
    dict_file.write_text("".join(f'"{line}"\n' for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
