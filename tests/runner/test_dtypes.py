"""edgepack.dtypes, the one table of ONNX element types, and what reads it: tensors.py's reader
and writer, default tolerances, compare, random inputs, and pack/run of bfloat16, float8 and
int4 models and of a model with no inputs."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgepack import dtypes
from edgepack.bundle.schema import Tolerance, default_tolerance
from edgepack.compare import compare_output
from edgepack.inputs import random_value
from edgepack.onnx_model import TensorSpec
from edgepack.tensors import array_dtype, decode_raw_tensor, read_tensor, tensor_bytes
from tests.conftest import run_cli


def test_every_row_matches_onnx():
    """Each row's number, numpy dtype and storage field are onnx's own."""
    for row in dtypes.TABLE:
        if row.kind == "string":
            continue
        assert helper.tensor_dtype_to_np_dtype(row.onnx) == row.numpy(), row.name
        assert helper.tensor_dtype_to_field(row.onnx) == row.field, row.name
        assert TensorProto.DataType.Name(row.onnx).lower() == row.onnx_name, row.name
        assert dtypes.array_name(np.zeros(1, row.numpy())) == row.name


@pytest.mark.parametrize("name", [d.name for d in dtypes.TABLE if d.kind != "string"])
def test_tensor_files_round_trip_as_onnx_writes_them(tmp_path, name):
    row = dtypes.BY_NAME[name]
    for shape in [(), (0,), (5,), (2, 3)]:
        rng = np.random.default_rng(0)
        arr = (rng.standard_normal(shape) * 3).astype(row.numpy())
        data = tensor_bytes("t", arr)
        assert data == numpy_helper.from_array(arr, "t").SerializeToString(), (name, shape)
        decoded = decode_raw_tensor(data)  # the fast path, without onnx
        assert decoded is not None and decoded[0] == "t"
        assert decoded[1].dtype == arr.dtype and decoded[1].shape == arr.shape
        assert decoded[1].tobytes() == arr.tobytes(), (name, shape)
        # int32_data, as onnx's helper writes it, goes through onnx and reads the same.
        typed = helper.make_tensor("t", row.onnx, list(shape), arr.flatten().tolist())
        (tmp_path / "t.pb").write_bytes(typed.SerializeToString())
        _, back = read_tensor(tmp_path / "t.pb")
        assert back.dtype == arr.dtype and back.tobytes() == arr.tobytes(), (name, shape)


def test_default_tolerances_fit_each_type():
    assert default_tolerance("float32") == Tolerance(1e-3, 1e-4)
    assert default_tolerance("float16") == Tolerance(1e-2, 1e-2)
    assert default_tolerance("bfloat16") == Tolerance(1e-2, 1e-2)
    assert default_tolerance("float8_e4m3fn").rtol == 2.0 ** -3
    assert default_tolerance("float8_e5m2").rtol == 2.0 ** -2
    for exact in ("int4", "uint4", "int8", "int64", "bool", "string"):
        assert default_tolerance(exact) == Tolerance(0.0, 0.0), exact


def test_bfloat16_compares_as_a_float_within_its_precision():
    expected = np.array([1.0, 2.0, 100.0], ml_dtypes.bfloat16)
    one_ulp = np.array([1.0078125, 2.0, 100.0], ml_dtypes.bfloat16)  # 1 + 2^-7
    tol = default_tolerance("bfloat16")
    v = compare_output("y", expected, one_ulp, tol)
    assert v.passed and v.expected_dtype == "bfloat16" and v.metrics.max_abs_error > 0
    wrong = np.array([1.0, 2.5, 100.0], ml_dtypes.bfloat16)
    v = compare_output("y", expected, wrong, tol)
    assert not v.passed and "expected 2, got 2.5" in v.reason
    nan = np.array([np.nan, 2.0, 100.0], ml_dtypes.bfloat16)
    assert not compare_output("y", expected, nan, tol).passed
    assert compare_output("y", nan, nan.copy(), tol).passed


def test_float8_tolerance_is_one_ulp_of_its_mantissa():
    expected = np.array([1.0, 3.0], ml_dtypes.float8_e4m3fn)
    ulp = np.array([1.125, 3.0], ml_dtypes.float8_e4m3fn)
    two = np.array([1.25, 3.0], ml_dtypes.float8_e4m3fn)
    tol = default_tolerance("float8_e4m3fn")
    assert compare_output("y", expected, ulp, tol).passed
    assert not compare_output("y", expected, two, tol).passed


def test_int4_compares_exactly_in_its_values():
    expected = np.array([-8, 7, 0, 1, -1], ml_dtypes.int4)
    v = compare_output("q", expected, expected.copy(), default_tolerance("int4"))
    assert v.passed and v.reason == "within tolerance"
    off = np.array([-8, 7, 0, 1, 0], ml_dtypes.int4)
    v = compare_output("q", expected, off, default_tolerance("int4"))
    assert not v.passed and v.reason == "1 of 5 elements differ; worst at [4]: expected -1, got 0"
    as_int8 = expected.astype(np.int8)
    v = compare_output("q", expected, as_int8, default_tolerance("int4"))
    assert not v.passed and v.reason == "dtype differs: expected int4, got int8"


def test_random_values_of_the_new_types_fit_them():
    for name, low, high in [("int4", 0, 7), ("uint4", 0, 7), ("int2", 0, 1)]:
        value = random_value(TensorSpec("q", name, [64]), 0, {})
        assert array_dtype(value.array) == name
        as_int = value.array.astype(np.int16)
        assert as_int.min() >= low and as_int.max() <= high, name
    value = random_value(TensorSpec("x", "bfloat16", [2, 3]), 0, {})
    assert array_dtype(value.array) == "bfloat16" and value.array.shape == (2, 3)


# ---------------------------------------------------------------------------- end to end


def _model(path, nodes, inputs, outputs, initializers=(), opset=21):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path))
    return path


def typed_model(path):
    """float32 x -> a bfloat16 (Cast), an int4 (QuantizeLinear), a float8 (Cast) output, and
    bfloat16 b -> its transpose: numpy-less types both in and out."""
    f, bf = TensorProto.FLOAT, TensorProto.BFLOAT16
    return _model(path, [
        helper.make_node("Cast", ["x"], ["as_bf16"], to=bf),
        helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["as_int4"]),
        helper.make_node("Cast", ["x"], ["as_f8"], to=TensorProto.FLOAT8E4M3FN),
        helper.make_node("Transpose", ["b"], ["b_t"]),
    ], [helper.make_tensor_value_info("x", f, [2, 3]),
        helper.make_tensor_value_info("b", bf, [2, 3])],
        [helper.make_tensor_value_info("as_bf16", bf, [2, 3]),
         helper.make_tensor_value_info("as_int4", TensorProto.INT4, [2, 3]),
         helper.make_tensor_value_info("as_f8", TensorProto.FLOAT8E4M3FN, [2, 3]),
         helper.make_tensor_value_info("b_t", bf, [3, 2])],
        [numpy_helper.from_array(np.array(0.5, np.float32), "scale"),
         numpy_helper.from_array(np.array(0, ml_dtypes.int4), "zero")])


def constant_model(path):
    """No inputs at all: a constant generator."""
    value = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "v")
    return _model(path, [helper.make_node("Constant", [], ["y"], value=value)], [],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])


@pytest.mark.parametrize("engine", ["python", "native"])
def test_bfloat16_int4_float8_model_packs_and_runs(host_runner, tmp_path, engine):
    model = typed_model(tmp_path / "typed.onnx")
    bundle = tmp_path / "b"
    r = run_cli("pack", model, "-o", bundle, "--random-sets", "2", "--json")
    assert r.code == 0, r.stderr
    manifest = (bundle / "manifest.json").read_text()
    for name in ("bfloat16", "int4", "float8_e4m3fn"):
        assert f'"dtype": "{name}"' in manifest, name
    _, q = read_tensor(bundle / "test_data_set_0" / "output_1.pb")
    assert q.dtype == ml_dtypes.int4 and q.shape == (2, 3)
    r = run_cli("run", bundle, "--engine", engine, "--iterations", "1", "--json")
    assert r.code == 0, r.stderr
    doc = r.json()
    for s in doc["sets"]:
        assert [t["dtype"] for t in s["runner"]["outputs"]] == \
            ["bfloat16", "int4", "float8_e4m3fn", "bfloat16"]
        assert all(v["passed"] for v in s["verdicts"]), s["verdicts"]
        tolerances = {v["name"]: v["tolerance"] for v in s["verdicts"]}
        assert tolerances["as_bf16"] == {"rtol": 1e-2, "atol": 1e-2}
        assert tolerances["as_int4"] == {"rtol": 0.0, "atol": 0.0}


def test_a_wrong_int4_output_fails_the_run(host_runner, tmp_path):
    model = typed_model(tmp_path / "typed.onnx")
    bundle = tmp_path / "b"
    assert run_cli("pack", model, "-o", bundle).code == 0
    out = bundle / "test_data_set_0" / "output_1.pb"
    _, q = read_tensor(out)
    flipped = q.copy().reshape(-1)
    flipped[0] = np.array(int(flipped[0].astype(np.int8)) ^ 1, np.int8).astype(ml_dtypes.int4)
    from edgepack.tensors import write_tensor

    write_tensor(out, "as_int4", flipped.reshape(q.shape))
    # The bundle's files are checksummed: refresh the manifest's entry the way a tamper would
    # not, so that the comparison itself is what fails.
    import hashlib
    import json

    doc = json.loads((bundle / "manifest.json").read_text())
    for f in doc["files"]:
        if f["path"] == "test_data_set_0/output_1.pb":
            f["sha256"] = hashlib.sha256(out.read_bytes()).hexdigest()
            f["size"] = out.stat().st_size
    (bundle / "manifest.json").write_text(json.dumps(doc, indent=2))
    r = run_cli("run", bundle, "--engine", "native", "--iterations", "1", "--json")
    assert r.code == 1, r.stderr
    failed = [v for v in r.json()["sets"][0]["verdicts"] if not v["passed"]]
    assert [v["name"] for v in failed] == ["as_int4"]
    assert failed[0]["reason"].startswith("1 of 6 elements differ; worst at [0, 0]")


@pytest.mark.parametrize("how", ["inputs-from", "no input options", "random sets"])
def test_a_model_with_no_inputs_packs_and_runs(host_runner, tmp_path, how):
    model = constant_model(tmp_path / "const.onnx")
    bundle = tmp_path / "b"
    args: list = ["pack", model, "-o", bundle]
    if how == "inputs-from":
        data = tmp_path / "case" / "test_data_set_0"
        data.mkdir(parents=True)
        (data / "output_0.pb").write_bytes(tensor_bytes("y", np.zeros((2, 3), np.float32)))
        args += ["--inputs-from", tmp_path / "case"]
    elif how == "random sets":
        args += ["--random-sets", "2"]
    r = run_cli(*args)
    assert r.code == 0, r.stderr
    sets = sorted(bundle.glob("test_data_set_*"))
    assert sets and not list(bundle.glob("test_data_set_*/input_*.pb"))
    for engine in ("native", "python"):
        r = run_cli("run", bundle, "--engine", engine, "--iterations", "1", "--json")
        assert r.code == 0, (engine, r.stderr)
        s = r.json()["sets"][0]
        assert s["runner"]["inputs"] == [] and s["verdicts"][0]["passed"]


def test_nan_in_a_bfloat16_output_is_found_like_a_float32_one(tmp_path):
    """pack refuses expected outputs holding NaN unless asked, bfloat16 ones included (numpy
    files bfloat16 under kind "V", not "f")."""
    model = typed_model(tmp_path / "typed.onnx")
    x = tmp_path / "x.npy"
    np.save(x, np.array([[np.nan, 1, 2], [3, 4, 5]], np.float32))
    b = tmp_path / "b.pb"
    (b).write_bytes(tensor_bytes("b", np.ones((2, 3), ml_dtypes.bfloat16)))
    r = run_cli("pack", model, "-o", tmp_path / "out", "--input", f"x={x}", "--input", f"b={b}")
    assert r.code == 2
    assert "the expected output 'as_bf16' holds 1 NaN or inf value(s)" in r.stderr


def test_inputs_from_a_directory_without_inputs_still_refused_for_a_model_with_inputs(tmp_path):
    model = typed_model(tmp_path / "typed.onnx")
    (tmp_path / "empty").mkdir()
    r = run_cli("pack", model, "-o", tmp_path / "b", "--inputs-from", tmp_path / "empty")
    assert r.code == 2
    assert "no input_<i>.pb files in it" in r.stderr
