"""String tensors on the host side: TensorProto files (edgepack.tensors) and input values
(edgepack.inputs), from .pb, .npy and seeded random words."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto, numpy_helper

from edgepack.errors import EdgepackError
from edgepack.inputs import ImageOptions, load_value, random_value
from edgepack.onnx_model import TensorSpec
from edgepack.tensors import (
    STRING,
    array_dtype,
    decode_raw_tensor,
    read_tensor,
    string_bytes,
    tensor_bytes,
    write_tensor,
)
from tests.conftest import onnx_test_data, run_cli

WORDS = ["monday", "", "é ü 東京", "a\x00b", "\x00", "tail\x00"]


@pytest.mark.parametrize("shape", [(), (0,), (6,), (2, 3), (1, 0, 2)])
def test_strings_write_onnx_bytes_and_read_back_as_str(tmp_path, shape):
    count = int(np.prod(shape))
    values = (WORDS * 2)[:count]
    as_str = np.array(values, dtype=object).reshape(shape)
    as_bytes = np.array([v.encode() for v in values], dtype=object).reshape(shape)
    reference = numpy_helper.from_array(as_bytes, "w").SerializeToString()
    # str or bytes elements, the same bytes: deterministic, and what onnx itself writes.
    assert tensor_bytes("w", as_str) == tensor_bytes("w", as_bytes) == reference
    path = tmp_path / "w.pb"
    write_tensor(path, "w", as_str)
    name, array = read_tensor(path)
    assert name == "w" and array.dtype == object and array.shape == shape
    assert array_dtype(array) == STRING
    assert all(type(v) is str for v in array.ravel().tolist())
    assert array.tolist() == as_str.tolist()
    assert decode_raw_tensor(reference) is None  # its contract: raw_data tensors only


def test_numpy_fixed_width_strings_are_strings():
    assert tensor_bytes("u", np.array(["ab", "é"])) == \
        tensor_bytes("u", np.array(["ab", "é"], dtype=object))
    assert tensor_bytes("s", np.array([b"ab", b"c"])) == \
        tensor_bytes("s", np.array(["ab", "c"], dtype=object))


def test_bytes_that_are_not_utf8_survive_a_read_and_a_write(tmp_path):
    proto = TensorProto(name="raw", data_type=TensorProto.STRING, dims=[3],
                        string_data=[b"\xff\xfe", b"ok", b"\xc3"])
    path = tmp_path / "raw.pb"
    path.write_bytes(proto.SerializeToString())
    name, array = read_tensor(path)
    assert [string_bytes(v) for v in array.tolist()] == [b"\xff\xfe", b"ok", b"\xc3"]
    assert tensor_bytes(name, array) == proto.SerializeToString()


def test_reading_strings_does_not_import_onnx(tmp_path):
    path = tmp_path / "w.pb"
    write_tensor(path, "w", np.array(WORDS, dtype=object))
    code = ("import sys; from edgepack.tensors import read_tensor; "
            f"_, a = read_tensor({str(path)!r}); "
            "print(len(a), 'onnx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(len(WORDS)), "False"]


def test_string_tensors_that_do_not_add_up_are_refused(tmp_path):
    path = tmp_path / "bad.pb"
    for proto in (
        TensorProto(data_type=TensorProto.STRING, dims=[3], string_data=[b"a"]),
        TensorProto(data_type=TensorProto.STRING, dims=[1 << 40], string_data=[b"a", b"b"]),
    ):
        path.write_bytes(proto.SerializeToString())
        with pytest.raises(EdgepackError, match="cannot be read as an array"):
            read_tensor(path)
    with pytest.raises(EdgepackError, match="str or bytes, not int"):
        tensor_bytes("x", np.array(["a", 3], dtype=object))


def test_dims_whose_product_wraps_around_are_refused(tmp_path):
    # 2^32 x 2^32 elements wrap to 0 in int64: the empty raw_data looked like a match and
    # reshape raised a ValueError (a traceback) instead of a refusal.
    proto = TensorProto(data_type=TensorProto.FLOAT, dims=[1 << 32, 1 << 32], raw_data=b"")
    path = tmp_path / "wrap.pb"
    path.write_bytes(proto.SerializeToString())
    assert decode_raw_tensor(path.read_bytes()) is None
    with pytest.raises(EdgepackError):
        read_tensor(path)


SPEC = TensorSpec("x", STRING, ("n",))


def test_npy_str_arrays_feed_string_inputs_and_pickles_are_refused(tmp_path):
    good = tmp_path / "words.npy"
    np.save(good, np.array(["héllo", "", "a\x00b"]))
    value = load_value(good, SPEC, ImageOptions())
    assert value.array.dtype == object and value.array.tolist() == ["héllo", "", "a\x00b"]
    assert all(type(v) is str for v in value.array.tolist())
    raw = tmp_path / "raw.npy"
    np.save(raw, np.array([b"ab", b"c"]))
    assert load_value(raw, SPEC, ImageOptions()).array.tolist() == ["ab", "c"]
    pickled = tmp_path / "objects.npy"
    np.save(pickled, np.array(["a", "b"], dtype=object), allow_pickle=True)
    with pytest.raises(EdgepackError, match="pickled object array"):
        load_value(pickled, SPEC, ImageOptions())
    numbers = tmp_path / "numbers.npy"
    np.save(numbers, np.zeros(2, np.float32))
    with pytest.raises(EdgepackError, match="wants string, the file holds float32"):
        load_value(numbers, SPEC, ImageOptions())


def test_pb_strings_feed_string_inputs(tmp_path):
    path = tmp_path / "w.pb"
    write_tensor(path, "x", np.array(WORDS, dtype=object))
    assert load_value(path, SPEC, ImageOptions()).array.tolist() == WORDS
    with pytest.raises(EdgepackError, match="wants float32, the file holds string"):
        load_value(path, TensorSpec("x", "float32", ("n",)), ImageOptions())


def test_random_words_are_seeded():
    a = random_value(TensorSpec("x", STRING, ("n", 3)), 7, {"n": 2})
    b = random_value(TensorSpec("x", STRING, ("n", 3)), 7, {"n": 2})
    c = random_value(TensorSpec("x", STRING, ("n", 3)), 8, {"n": 2})
    assert a.array.shape == (2, 3) and a.array.dtype == object
    assert a.array.tolist() == b.array.tolist() != c.array.tolist()
    assert all(w.isascii() and w.isalpha() and w.islower() and 1 <= len(w) <= 8
               for w in a.array.ravel().tolist())
    assert a.source.kind == "random" and "ASCII" in a.source.preprocess["distribution"]
    scalar = random_value(TensorSpec("s", STRING, ()), 0, {})
    assert scalar.array.shape == () and isinstance(scalar.array.item(), str)


def test_pack_refuses_numbers_for_a_string_input_in_one_line(tmp_path):
    model = onnx_test_data() / "simple" / "test_strnorm_model_nostopwords_nochangecase"
    numbers = tmp_path / "numbers.npy"
    np.save(numbers, np.zeros(2, np.float32))
    r = run_cli("pack", model / "model.onnx", "-o", tmp_path / "b", "--input", f"x={numbers}")
    assert r.code == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "wants string, the file holds float32" in r.stderr
    assert not (tmp_path / "b").exists()
