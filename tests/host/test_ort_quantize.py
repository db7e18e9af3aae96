"""pack --format ort|both, --quantize int8|fp16 (issue 13 parts 3 and 4) and
--inputs-from-bundle (part 5), through the CLI, on the host."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgepack.tensors import read_tensor
from tests.conftest import IMAGES, PACK_ARGS, run_cli


def _save(path: Path, nodes, inputs, outputs, inits=()) -> Path:  # noqa: ANN001
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _conv(path: Path) -> Path:
    """A small float CNN: something quantize_static has to quantize (Conv, MatMul)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "W")
    fc = numpy_helper.from_array(rng.standard_normal((8 * 6 * 6, 10)).astype(np.float32), "FC")
    shape = numpy_helper.from_array(np.array([1, 8 * 6 * 6], np.int64), "shape")
    return _save(path, [
        helper.make_node("Conv", ["x", "W"], ["c"]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Reshape", ["r", "shape"], ["f"]),
        helper.make_node("MatMul", ["f", "FC"], ["scores"]),
    ], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 10])], [w, fc, shape])


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def _paths(entries: list[dict]) -> set[str]:
    return {e["path"] for e in entries}


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------------------- --format


def test_format_ort_pushes_the_ort_model_alone_and_runs(tmp_path):
    out = tmp_path / "b"
    r = run_cli("pack", _conv(tmp_path / "m.onnx"), "-o", out, "--format", "ort",
                "--random-sets", "2")
    assert r.code == 0, r.stderr
    m = _manifest(out)
    assert m["model"]["format"] == "ort" and m["model"]["file"] == "predict.ort"
    assert m["model"]["external_data"] is None and m["model"]["onnx_file"] is None
    # An ORT model embeds its weights: no init.bin, no predict.onnx, in the bundle or pushed.
    assert _paths(m["files"]) == {"predict.ort"} | {
        f"test_data_set_{k}/{kind}_0.pb" for k in (0, 1) for kind in ("input", "output")}
    assert not (out / "predict.onnx").exists() and not (out / "init.bin").exists()
    assert _paths(m["host_files"]) == {"required_operators.config"}
    config = (out / "required_operators.config").read_text()
    assert "ai.onnx;17;Conv" in config or "com.microsoft;1;FusedConv" in config
    assert str(tmp_path) not in config and "/tmp" not in config  # no scratch path leaks
    for engine in ("native", "python"):
        r = run_cli("run", out, "--engine", engine, "--iterations", "2", "--json")
        assert r.code == 0, r.stderr
        assert all(v["passed"] for s in r.json()["sets"] for v in s["verdicts"])
    r = run_cli("inspect", out)
    assert r.code == 0 and "format ort" in r.stdout


def test_the_operators_config_is_the_same_whatever_the_scratch_directory(tmp_path):
    # The converter's header names the temporary files it read; the bundle's copy must not.
    # (The ORT file itself is not byte-reproducible: onnxruntime orders some of its tables by
    # memory address.)
    model = _conv(tmp_path / "m.onnx")
    for name in ("a", "b"):
        assert run_cli("pack", model, "-o", tmp_path / name / "bundle", "--format", "ort").code == 0
    config = (tmp_path / "a/bundle/required_operators.config").read_bytes()
    assert config == (tmp_path / "b/bundle/required_operators.config").read_bytes()


def test_format_both_keeps_the_onnx_model_on_the_host(tmp_path):
    out = tmp_path / "b"
    assert run_cli("pack", _conv(tmp_path / "m.onnx"), "-o", out, "--format", "both").code == 0
    m = _manifest(out)
    assert m["model"]["file"] == "predict.ort" and m["model"]["onnx_file"] == "predict.onnx"
    assert "predict.onnx" not in _paths(m["files"]) and "init.bin" not in _paths(m["files"])
    assert {"predict.onnx", "init.bin", "required_operators.config"} <= _paths(m["host_files"])
    assert run_cli("run", out, "--iterations", "1").code == 0


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: m["model"].update(file="predict.onnx"), "is not among the bundle's files"),
    (lambda m: m["model"].update(format="tflite"), "format 'tflite'"),
    (lambda m: m["model"].update(external_data="init.bin"), "holds no ONNX file"),
    (lambda m: m["model"].update(operators_config="../etc/passwd"), "not a plain relative"),
    (lambda m: m["model"].update(operators_config="predict.ort"), "host_files"),
])
def test_hostile_format_fields_are_refused(tmp_path, edit, message):
    out = tmp_path / "b"
    assert run_cli("pack", _conv(tmp_path / "m.onnx"), "-o", out, "--format", "ort").code == 0
    m = _manifest(out)
    edit(m)
    (out / "manifest.json").write_text(json.dumps(m))
    r = run_cli("inspect", out)
    assert r.code == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_bad_format_is_one_line(tmp_path):
    r = run_cli("pack", _conv(tmp_path / "m.onnx"), "-o", tmp_path / "b", "--format", "tflite")
    assert r.code == 2 and "--format must be one of onnx, ort, both" in r.stderr
    assert not (tmp_path / "b").exists()


# ---------------------------------------------------------------------------- --quantize


def test_int8_carries_the_float_reference_and_its_cost(tmp_path):
    out = tmp_path / "b"
    r = run_cli("pack", _conv(tmp_path / "m.onnx"), "-o", out, "--quantize", "int8",
                "--random-sets", "3")
    assert r.code == 0, r.stderr
    assert "accuracy cost of int8" in r.stdout
    m = _manifest(out)
    q = m["quantization"]
    assert q["mode"] == "int8" and "QDQ" in q["method"] and q["calibration_sets"] == 3
    ops = {n.op_type for n in onnx.load(out / "predict.onnx").graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # The float outputs, hashed host files, differ from the quantized expected outputs.
    assert [s["dir"] for s in q["reference"]] == [f"reference/test_data_set_{k}" for k in range(3)]
    host = _paths(m["host_files"])
    for k, ref in enumerate(q["reference"]):
        assert ref["outputs"][0]["file"] in host and ref["outputs"][0]["file"] not in _paths(
            m["files"])
        _, float_out = read_tensor(out / ref["outputs"][0]["file"])
        _, quant_out = read_tensor(out / f"test_data_set_{k}/output_0.pb")
        assert float_out.dtype == quant_out.dtype == np.float32
        assert not np.array_equal(float_out, quant_out)
    (cost,) = q["cost"]
    assert cost["output"] == "scores" and 0.9 < cost["cosine"] <= 1.0 and cost["snr_db"] > 10
    assert cost["top1_agreement"] is not None and cost["top5_agreement"] is not None
    assert cost["max_abs_error"] > 0
    # A device matches the quantized model's own outputs, within a step of the output's scale.
    assert m["outputs"][0]["tolerance"]["atol"] > 1e-4
    assert run_cli("run", out, "--engine", "native", "--iterations", "2").code == 0
    r = run_cli("inspect", out)
    assert r.code == 0 and "accuracy cost of int8" in r.stdout and "SNR dB" in r.stdout


def test_a_reference_file_changed_after_packing_is_caught(tmp_path):
    out = tmp_path / "b"
    assert run_cli("pack", _conv(tmp_path / "m.onnx"), "-o", out, "--quantize", "fp16").code == 0
    ref = out / "reference/test_data_set_0/output_0.pb"
    ref.write_bytes(ref.read_bytes()[:-4] + b"\0\0\0\0")
    r = run_cli("inspect", out)
    assert r.code == 2 and "does not match its manifest hash" in r.stderr


@pytest.mark.parametrize(("edit", "message"), [
    (lambda q: q.update(mode="int4"), "mode 'int4'"),
    (lambda q: q["reference"][0]["outputs"][0].update(file="test_data_set_0/output_0.pb"),
     "among the bundle's host_files"),
    (lambda q: q["reference"].pop(), "0 reference set(s) for 1 test set(s)"),
])
def test_hostile_quantization_fields_are_refused(tmp_path, edit, message):
    out = tmp_path / "b"
    assert run_cli("pack", _conv(tmp_path / "m.onnx"), "-o", out, "--quantize", "fp16").code == 0
    m = _manifest(out)
    edit(m["quantization"])
    (out / "manifest.json").write_text(json.dumps(m))
    r = run_cli("inspect", out, "--no-verify")
    assert r.code == 2 and message in r.stderr, r.stderr


def test_fp16_keeps_float32_io_and_runs_in_ort_format(tmp_path):
    out = tmp_path / "b"
    r = run_cli("pack", _conv(tmp_path / "m.onnx"), "-o", out, "--quantize", "fp16",
                "--format", "ort", "--json")
    assert r.code == 0, r.stderr
    m = r.json()["manifest"]
    assert m["quantization"]["mode"] == "fp16" and m["quantization"]["calibration"] is None
    assert m["inputs"][0]["dtype"] == m["outputs"][0]["dtype"] == "float32"
    assert m["outputs"][0]["tolerance"] == {"rtol": 0.01, "atol": 0.01}
    assert m["model"]["file"] == "predict.ort"
    assert m["quantization"]["cost"][0]["cosine"] > 0.999
    assert run_cli("run", out, "--engine", "native", "--iterations", "1").code == 0


def test_calibrate_on_a_directory_of_images(exported, tmp_path):
    calib = tmp_path / "calib"
    calib.mkdir()
    for name in ("cifar_32.png", "scene_224.png"):
        (calib / name).write_bytes((IMAGES / name).read_bytes())
    out = tmp_path / "b"
    r = run_cli("pack", exported["resnet20"], "-o", out, *PACK_ARGS["resnet20"],
                "--quantize", "int8", "--calibrate", calib, "--resize", "32x32")
    assert r.code == 0, r.stderr
    q = _manifest(out)["quantization"]
    assert q["calibration"] == str(calib) and q["calibration_sets"] == 2


def test_quantizing_a_model_with_nothing_float_is_refused_and_leaves_nothing(tmp_path):
    model = _save(tmp_path / "ints.onnx", [helper.make_node("Add", ["a", "b"], ["c"])],
                  [helper.make_tensor_value_info("a", TensorProto.INT64, [4]),
                   helper.make_tensor_value_info("b", TensorProto.INT64, [4])],
                  [helper.make_tensor_value_info("c", TensorProto.INT64, [4])])
    for mode in ("int8", "fp16"):
        r = run_cli("pack", model, "-o", tmp_path / "b", "--quantize", mode)
        assert r.code == 2, r.stderr
        assert "no float32 inputs or weights" in r.stderr and len(r.stderr.splitlines()) == 1
        assert not (tmp_path / "b").exists() and _leftovers(tmp_path) == []


def test_int8_of_a_model_without_float_weights_is_refused(exported, tmp_path):
    # The iris forest: float inputs, its trees in attributes; nothing static int8 quantizes.
    r = run_cli("pack", exported["iris_forest"], "-o", tmp_path / "b", "--quantize", "int8")
    assert r.code == 2 and "no float32 weights" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()


def test_a_failed_quantization_leaves_no_bundle(tmp_path):
    # The second calibration set does not fit: found once the quantization's scratch and the
    # bundle's staging directory exist.
    calib = tmp_path / "calib"
    for k, shape in enumerate([(1, 3, 8, 8), (1, 3, 9, 9)]):
        (calib / f"test_data_set_{k}").mkdir(parents=True)
        tensor = numpy_helper.from_array(np.zeros(shape, np.float32), "x")
        (calib / f"test_data_set_{k}/input_0.pb").write_bytes(tensor.SerializeToString())
    r = run_cli("pack", _conv(tmp_path / "m.onnx"), "-o", tmp_path / "b", "--quantize", "int8",
                "--calibrate", calib)
    assert r.code == 2 and "wants shape [1, 3, 8, 8]" in r.stderr, r.stderr
    assert not (tmp_path / "b").exists() and _leftovers(tmp_path) == []


@pytest.mark.parametrize(("args", "message"), [
    (["--quantize", "int4"], "--quantize must be one of int8, fp16"),
    (["--quantize", "fp16", "--calibrate", "x"], "--calibrate goes with --quantize int8"),
    (["--quantize", "int8", "--calibrate", "/nonexistent"], "no such directory"),
    (["--map", "a=b"], "--map goes with --inputs-from-bundle"),
])
def test_bad_quantize_options_are_one_line(tmp_path, args, message):
    r = run_cli("pack", _conv(tmp_path / "m.onnx"), "-o", tmp_path / "b", *args)
    assert r.code == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()


# ---------------------------------------------------------------------------- pipelines


def _detector(path: Path) -> Path:
    return _save(path, [helper.make_node("Relu", ["x"], ["feat"]),
                        helper.make_node("Shape", ["x"], ["dims"])],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                 [helper.make_tensor_value_info("feat", TensorProto.FLOAT, [1, 4]),
                  helper.make_tensor_value_info("dims", TensorProto.INT64, [2])])


def _parser(path: Path, name: str = "feat", shape: tuple = (1, 4),
            dtype: int = TensorProto.FLOAT) -> Path:
    return _save(path, [helper.make_node("Neg", [name], ["y"])],
                 [helper.make_tensor_value_info(name, dtype, list(shape))],
                 [helper.make_tensor_value_info("y", dtype, list(shape))])


def test_inputs_from_bundle_match_by_name(tmp_path):
    det = tmp_path / "det"
    assert run_cli("pack", _detector(tmp_path / "det.onnx"), "-o", det,
                   "--random-sets", "2").code == 0
    out = tmp_path / "parser"
    r = run_cli("pack", _parser(tmp_path / "parser.onnx"), "-o", out, "--inputs-from-bundle",
                det)
    assert r.code == 0, r.stderr
    m = _manifest(out)
    assert len(m["test_sets"]) == 2
    for k in range(2):
        _, fed = read_tensor(out / f"test_data_set_{k}/input_0.pb")
        _, expected = read_tensor(det / f"test_data_set_{k}/output_0.pb")
        np.testing.assert_array_equal(fed, expected)
        source = m["test_sets"][k]["inputs"][0]["source"]
        assert source["kind"] == "bundle" and source["preprocess"]["set"] == k
        assert source["preprocess"]["bundle"] == "det" and source["preprocess"]["output"] == "feat"
    assert "bundle det, set 1, output feat" in run_cli("inspect", out).stdout


def test_inputs_from_bundle_with_map(tmp_path):
    det = tmp_path / "det"
    assert run_cli("pack", _detector(tmp_path / "det.onnx"), "-o", det).code == 0
    parser = _parser(tmp_path / "parser.onnx", name="crops")
    r = run_cli("pack", parser, "-o", tmp_path / "p", "--inputs-from-bundle", det)
    assert r.code == 2 and "feeds input(s) crops" in r.stderr and "--map OUT=IN" in r.stderr
    r = run_cli("pack", parser, "-o", tmp_path / "p", "--inputs-from-bundle", det,
                "--map", "feat=crops")
    assert r.code == 0, r.stderr


@pytest.mark.parametrize(("parser_args", "extra", "message"), [
    ({"shape": (1, 5)}, [], "wants shape [1, 5], the file holds [1, 4]"),
    ({"dtype": TensorProto.DOUBLE}, [], "wants float64, the file holds float32"),
    ({}, ["--map", "boxes=feat"], "has no output 'boxes' (its outputs: feat, dims)"),
    ({}, ["--map", "feat=nope"], "the model has no input 'nope'"),
    ({}, ["--map", "feat"], "expected OUT=IN"),
])
def test_inputs_from_bundle_refusals_are_one_line(tmp_path, parser_args, extra, message):
    det = tmp_path / "det"
    assert run_cli("pack", _detector(tmp_path / "det.onnx"), "-o", det).code == 0
    r = run_cli("pack", _parser(tmp_path / "parser.onnx", **parser_args), "-o", tmp_path / "p",
                "--inputs-from-bundle", det, *extra)
    assert r.code == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, \
        r.stderr
    assert not (tmp_path / "p").exists()


def test_inputs_from_a_missing_bundle(tmp_path):
    r = run_cli("pack", _parser(tmp_path / "parser.onnx"), "-o", tmp_path / "p",
                "--inputs-from-bundle", tmp_path / "nope")
    assert r.code == 2 and "no such bundle directory" in r.stderr
