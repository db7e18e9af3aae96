"""One table of what each execution provider takes (edgepack/providers.py): `check --ep` and
`pack --ops-allowed` answer from it alike; and `check` of ORT-format bundles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgepack.rewrite import load_ops_allowed
from tests.conftest import run_cli

PROVIDERS = ["cpu", "xnnpack", "nnapi", "coreml"]


def _save(path: Path, nodes, inputs, outputs, inits, opset: int) -> Path:
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _mixed_model(path: Path, opset: int = 13) -> Path:
    """Operators every provider answers differently about: reflect and constant Pad (NNAPI
    takes constant only), Conv -> Relu (XNNPACK: Relu only fused), InstanceNormalization,
    Sigmoid, a pool, Gemm and Softmax."""
    rng = np.random.default_rng(0)
    f32 = np.float32
    inits = [numpy_helper.from_array((rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(f32), "w"),
             numpy_helper.from_array(np.ones(4, f32), "scale"),
             numpy_helper.from_array(np.zeros(4, f32), "bias"),
             numpy_helper.from_array((rng.standard_normal((4, 5)) * 0.3).astype(f32), "fc"),
             numpy_helper.from_array(np.zeros(5, f32), "fcb")]
    if opset >= 11:
        inits.append(numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64),
                                             "pads"))
        pad_in, pad_attrs = ["x", "pads"], {}
    else:
        pad_in, pad_attrs = ["x"], {"pads": [0, 0, 1, 1, 0, 0, 1, 1]}
    nodes = [
        helper.make_node("Pad", pad_in, ["p"], mode="reflect", **pad_attrs),
        helper.make_node("Conv", ["p", "w"], ["c"]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("InstanceNormalization", ["r", "scale", "bias"], ["n"]),
        helper.make_node("Sigmoid", ["n"], ["s"]),
        helper.make_node("Pad", ["s", *pad_in[1:]], ["q"], mode="constant", **pad_attrs),
        helper.make_node("MaxPool", ["q"], ["m"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["m"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["l"]),
        helper.make_node("Softmax", ["l"], ["y"], axis=1),
    ]
    return _save(path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                             [1, 3, 8, 8])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits, opset)


def _conv_relu(path: Path, extra: str | None = None) -> Path:
    w = numpy_helper.from_array(np.full((2, 1, 3, 3), 0.1, np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y" if extra is None else "r"])]
    if extra is not None:
        nodes.append(helper.make_node(extra, ["r"], ["y"]))
    return _save(path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                             [1, 1, 8, 8])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])], [w], 13)


@pytest.mark.parametrize("opset", [13, 10])
def test_check_and_ops_allowed_answer_alike_per_operator(tmp_path, opset):
    # At opset 10 Conv and MaxPool are versions XNNPACK has no kernel for; reflect Pad is one
    # NNAPI does not take; both answers are the table's, through check and through the spec.
    path = _mixed_model(tmp_path / "m.onnx", opset)
    r = run_cli("check", path, "--json")
    assert r.code == 0, r.stderr
    doc = r.json()
    nodes = list(onnx.load(path).graph.node)
    differences = []
    for ep in PROVIDERS:
        allowed = load_ops_allowed(ep)  # what `pack --ops-allowed EP` reads
        for op in doc["operators"]:
            of_op = [n for n in nodes if n.op_type == op["op_type"]]
            spec_says = (allowed.allows_op(op["domain"], op["op_type"], op["opset"])
                         and all(allowed.allows(n) for n in of_op))
            if op["support"][ep]["supported"] != spec_says:
                differences.append((ep, op["op_type"], op["support"][ep], spec_says))
    assert differences == []
    by_op = {o["op_type"]: o["support"] for o in doc["operators"]}
    # The answers the table holds, as both see them.
    assert by_op["Pad"]["nnapi"] == {"supported": False,
                                     "why": "takes mode constant only, not reflect"}
    assert by_op["Relu"]["xnnpack"]["supported"] is True
    assert by_op["Conv"]["xnnpack"]["supported"] is (opset >= 11)
    nnapi = next(e for e in doc["eps"] if e["ep"] == "nnapi")
    assert "ai.onnx:Pad" in nnapi["partitioning"]["unsupported_ops"]  # the reflect one


def test_ops_allowed_xnnpack(tmp_path):
    allowed = load_ops_allowed("xnnpack")
    assert allowed.source == "xnnpack"
    assert allowed.allows_op("", "Conv") and not allowed.allows_op("", "Sigmoid")
    assert not allowed.allows_op("", "Conv", 1) and allowed.allows_op("", "Conv", 11)
    # Relu runs on XNNPACK only fused into its producer; a rewrite never separates the two and
    # could not place a lone one, so the operator set takes it (see rewrite/spec.py).
    assert allowed.allows(helper.make_node("Relu", ["c"], ["r"]))

    ok = run_cli("pack", _conv_relu(tmp_path / "cr.onnx"), "-o", tmp_path / "b",
                 "--ops-allowed", "xnnpack", "--json")
    assert ok.code == 0, ok.stderr
    rw = ok.json()["manifest"]["rewrite"]
    assert rw["ops_allowed"] == "xnnpack" and rw["rules"] == []
    assert rw["nodes_before"] == rw["nodes_after"] == 2

    no = run_cli("pack", _conv_relu(tmp_path / "crs.onnx", "Sigmoid"), "-o", tmp_path / "c",
                 "--ops-allowed", "xnnpack")
    assert no.code == 2 and len(no.stderr.strip().splitlines()) == 1, no.stderr
    assert "no rule rewrites Sigmoid" in no.stderr and not (tmp_path / "c").exists()


def test_both_commands_name_the_same_providers(tmp_path):
    model = _conv_relu(tmp_path / "m.onnx")
    check = run_cli("check", model, "--ep", "tpu9000")
    pack = run_cli("pack", model, "-o", tmp_path / "b", "--ops-allowed", "tpu9000")
    assert check.code == pack.code == 2
    listed = "cpu, xnnpack, nnapi, coreml, wasm, webgl, webgpu, onnxjs"
    assert f"choose from {listed}" in check.stderr
    assert f"({listed})" in pack.stderr
    assert listed in " ".join(run_cli("check", "--help").stdout.split())


# ---------------------------------------------------------------------------- ORT bundles


@pytest.fixture(scope="module")
def conv_relu_sigmoid(tmp_path_factory) -> Path:
    return _conv_relu(tmp_path_factory.mktemp("ort") / "m.onnx", "Sigmoid")


def _pack(model: Path, out: Path, fmt: str) -> Path:
    r = run_cli("pack", model, "-o", out, "--format", fmt, "--random-sets", "1")
    assert r.code == 0, r.stderr
    return out


def test_check_of_an_ort_only_bundle(conv_relu_sigmoid, tmp_path):
    bundle = _pack(conv_relu_sigmoid, tmp_path / "b", "ort")
    r = run_cli("check", bundle, "--json")
    assert r.code == 0, r.stderr
    doc = r.json()
    assert doc["model"] == str(bundle / "predict.ort") and doc["model_format"] == "ort"
    assert doc["bundle"] == "m"
    # The converted graph: onnxruntime fused Conv and Relu for the CPU at pack time.
    ops = {(o["domain"], o["op_type"]) for o in doc["operators"]}
    assert ops == {("com.microsoft", "FusedConv"), ("ai.onnx", "Sigmoid")}
    assert set(doc["opset_imports"]) == {"ai.onnx", "com.microsoft"}
    eps = {e["ep"]: e for e in doc["eps"]}
    assert eps["cpu"]["verdict"] == "runs fully"
    # onnxruntime's own shapes from the ORT file: NNAPI's fixed-shape test passes.
    assert eps["nnapi"]["partitioning"]["nodes_blocked_by_dynamic_shape"] == 0
    assert eps["nnapi"]["partitioning"]["unsupported_ops"] == ["com.microsoft:FusedConv"]
    assert doc["required_operators_config"] == (bundle / "required_operators.config").read_text()
    assert any("could not be analysed" in n and "edgepack check MODEL.onnx" in n
               for n in doc["notes"])
    human = run_cli("check", bundle, "--ep", "nnapi")
    assert human.code == 0 and "note: predict.ort is the only model" in human.stdout


def test_check_of_a_both_format_bundle_reads_its_onnx_file(conv_relu_sigmoid, tmp_path):
    bundle = _pack(conv_relu_sigmoid, tmp_path / "b", "both")
    doc = run_cli("check", bundle, "--ep", "xnnpack", "--json").json()
    assert doc["model"] == str(bundle / "predict.onnx") and doc["model_format"] == "onnx"
    assert [o["op_type"] for o in doc["operators"]] == ["Conv", "Relu", "Sigmoid"]
    assert doc["eps"][0]["summary"] == "runs partly (2 of 3 nodes, 1 partition(s))"
    # The reduced build's config is the bundle's: for predict.ort, what the runner loads.
    assert doc["required_operators_config"] == (bundle / "required_operators.config").read_text()
    assert any("the runner loads predict.ort" in n for n in doc["notes"])


def test_an_ort_file_onnxruntime_cannot_load_is_one_line(conv_relu_sigmoid, tmp_path):
    bundle = _pack(conv_relu_sigmoid, tmp_path / "b", "ort")
    (bundle / "predict.ort").write_bytes(b"\x00not an ORT model")
    r = run_cli("check", bundle)
    assert r.code == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "cannot load this ORT-format model" in r.stderr
    assert "check the model it was packed from" in r.stderr and "Traceback" not in r.stderr


def test_the_reports_prediction_for_an_ort_bundle(conv_relu_sigmoid, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPACK_DB", str(tmp_path / "history.db"))
    bundle = _pack(conv_relu_sigmoid, tmp_path / "b", "ort")
    reports = tmp_path / "reports"
    r = run_cli("bench", bundle, "--device", "host", "--engine", "python", "--ep",
                "cpu,xnnpack", "--repeat", "1", "--iterations", "2", "--report-dir", reports,
                "--json")
    assert r.code == 0, r.stderr
    html = (reports / "report.html").read_text()
    # check's prediction beside what ran: XNNPACK has neither FusedConv nor Sigmoid.
    assert "predicted and measured" in html and "cannot run the model" in html
    assert json.loads((reports / "report.json").read_text())["results"]
