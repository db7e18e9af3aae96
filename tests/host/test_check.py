"""`edgepack check`: operators, per-provider verdicts from onnxruntime's own tables, the mobile
package, the reduced build's config and the --fix-dim advice, through the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import run_cli


def _conv_model(path: Path, shape: list, opset: int = 13, extra: str | None = None,
                extra_domain: str = "") -> Path:
    """Conv -> Relu -> Sigmoid (-> `extra`), input of `shape` (strings are symbolic dims)."""
    w = numpy_helper.from_array(np.full((2, 1, 3, 3), 0.1, np.float32), "w")
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Sigmoid", ["r"], ["s"])]
    last = "s"
    if extra:
        nodes.append(helper.make_node(extra, ["s"], ["e"], domain=extra_domain))
        last = "e"
    out_shape = [shape[0], 2, *shape[2:]]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(last, TensorProto.FLOAT, out_shape)], [w])
    opsets = [helper.make_opsetid("", opset)]
    if extra_domain:
        opsets.append(helper.make_opsetid(extra_domain, 1))
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_verdicts_per_provider(tmp_path):
    model = _conv_model(tmp_path / "m.onnx", [1, 1, 8, 8])
    r = run_cli("check", model, "--json")
    assert r.code == 0, r.stderr
    doc = r.json()
    ops = {o["op_type"]: o for o in doc["operators"]}
    assert set(ops) == {"Conv", "Relu", "Sigmoid"}
    assert (ops["Conv"]["domain"], ops["Conv"]["opset"], ops["Conv"]["count"]) == (
        "ai.onnx", 11, 1)  # Conv's version in opset 13 is the one defined at 11
    assert ops["Sigmoid"]["support"]["xnnpack"] == {"supported": False, "why": "no kernel"}
    assert ops["Sigmoid"]["support"]["nnapi"]["supported"] is True
    eps = {e["ep"]: e for e in doc["eps"]}
    assert list(eps) == ["cpu", "xnnpack", "nnapi", "coreml"]
    assert eps["cpu"]["verdict"] == "runs fully"
    assert eps["nnapi"]["verdict"] == "runs fully"
    assert eps["nnapi"]["partitioning"]["partitions"] == 1
    # XNNPACK has Conv (and runs the Relu fused into it) but no Sigmoid.
    x = eps["xnnpack"]
    assert x["verdict"] == "runs partly"
    assert (x["partitioning"]["supported_nodes"], x["partitioning"]["nodes"]) == (2, 3)
    assert x["partitioning"]["unsupported_ops"] == ["ai.onnx:Sigmoid"]
    assert x["summary"] == "runs partly (2 of 3 nodes, 1 partition(s))"
    assert doc["mobile_package"]["runs"] is True
    assert doc["required_operators_config"].splitlines()[2:] == [
        "ai.onnx;11;Conv", "ai.onnx;13;Relu,Sigmoid"]
    assert doc["fix_dims"] == []

    human = run_cli("check", model, "--ep", "xnnpack,nnapi")
    assert human.code == 0
    assert "xnnpack: runs partly (2 of 3 nodes, 1 partition(s))" in human.stdout
    assert "nnapi: runs fully" in human.stdout and "coreml" not in human.stdout
    assert "ai.onnx;13;Relu,Sigmoid" in human.stdout


def test_xnnpack_kernels_start_at_their_version(tmp_path):
    # In opset 10 Conv is version 1; XNNPACK registers its NHWC Conv from version 11.
    model = _conv_model(tmp_path / "old.onnx", [1, 1, 8, 8], opset=10)
    doc = run_cli("check", model, "--ep", "xnnpack", "--json").json()
    conv = next(o for o in doc["operators"] if o["op_type"] == "Conv")
    assert conv["opset"] == 1
    assert conv["support"]["xnnpack"] == {"supported": False,
                                          "why": "needs operator version 11 or later"}
    assert doc["eps"][0]["verdict"] == "cannot"


def test_symbolic_dims_and_the_fix_dim_to_pass(tmp_path):
    model = _conv_model(tmp_path / "dyn.onnx", ["batch", 1, 8, 8])
    doc = run_cli("check", model, "--ep", "nnapi,xnnpack", "--json").json()
    assert [(d["name"], d["value"], d["guessed"], d["option"]) for d in doc["fix_dims"]] == [
        ("batch", 1, True, "--fix-dim batch=1")]
    nnapi = doc["eps"][0]
    # NNAPI needs fixed shapes: nothing runs on it until batch is fixed, then all of it does.
    assert nnapi["verdict"] == "cannot"
    assert nnapi["needs_fixed_dims"] == ["batch"]
    assert nnapi["if_fixed"]["supported_nodes"] == 3
    assert any("--fix-dim batch=1" in reason for reason in nnapi["reasons"])
    assert doc["eps"][1]["needs_fixed_dims"] == []  # XNNPACK takes dynamic shapes

    # A bundle's input sets say what size the dim really is.
    npy = tmp_path / "x.npy"
    np.save(npy, np.zeros((3, 1, 8, 8), np.float32))
    bundle = tmp_path / "b"
    assert run_cli("pack", model, "-o", bundle, "--input", f"input={npy}").code == 0
    r = run_cli("check", bundle, "--ep", "nnapi")
    assert r.code == 0, r.stderr
    assert "`--fix-dim batch=3` to pack (the bundle's input size)" in r.stdout
    assert r.stdout.startswith("bundle dyn ")  # named by its manifest


def test_an_operator_without_a_cpu_kernel(tmp_path):
    model = _conv_model(tmp_path / "custom.onnx", [1, 1, 8, 8], extra="Frobnicate",
                        extra_domain="com.example")
    r = run_cli("check", model, "--json")
    assert r.code == 0, r.stderr  # a verdict, not an error
    doc = r.json()
    eps = {e["ep"]: e for e in doc["eps"]}
    assert eps["cpu"]["verdict"] == "cannot" and eps["cpu"]["reasons"]
    assert doc["mobile_package"]["runs"] is False
    assert doc["required_operators_config"] is None
    assert "com.example:Frobnicate" in eps["nnapi"]["partitioning"]["unsupported_ops"]
    out = tmp_path / "req.config"
    bad = run_cli("check", model, "--write-config", out)
    assert bad.code == 2 and not out.exists()


def test_write_config(tmp_path):
    model = _conv_model(tmp_path / "m.onnx", [1, 1, 8, 8])
    out = tmp_path / "req.config"
    r = run_cli("check", model, "--ep", "cpu", "--write-config", out, "--json")
    assert r.code == 0, r.stderr
    assert out.read_text() == r.json()["required_operators_config"]
    # onnxruntime's own parser reads it back.
    from onnxruntime.tools.reduced_build_config_parser import parse_config

    required, _ = parse_config(str(out))
    assert required["ai.onnx"][13] == {"Relu", "Sigmoid"}


@pytest.mark.parametrize("args, message", [
    (["--ep", "tpu"], "unknown execution provider 'tpu'"),
    (["--ep", ","], "unknown execution provider"),
])
def test_bad_providers(tmp_path, args, message):
    model = _conv_model(tmp_path / "m.onnx", [1, 1, 8, 8])
    r = run_cli("check", model, *args)
    assert r.code == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_bad_models(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a model at all")
    r = run_cli("check", junk)
    assert r.code == 2 and "not a readable ONNX model" in r.stderr
    r = run_cli("check", tmp_path / "missing.onnx")
    assert r.code == 2 and "no such model file or bundle directory" in r.stderr
    r = run_cli("check", tmp_path)  # a directory that is not a bundle
    assert r.code == 2 and "not a bundle" in r.stderr


def test_the_config_computed_from_the_graph_is_onnxruntimes(tmp_path, monkeypatch):
    """Above 2 GiB onnxruntime cannot save the ORT file its config writer reads; the config
    computed from the graph instead must say what onnxruntime's writer says on models it can
    save, and a check that needed it says so."""
    import onnx as onnx_mod

    from edgepack import check

    light = Path(onnx_mod.__file__).parent / "backend/test/data/light"
    models = [light / "light_squeezenet.onnx", light / "light_inception_v1.onnx"]
    conv = tmp_path / "conv.onnx"
    _conv_model(conv, [1, 3, 8, 8], opset=17)
    models.append(conv)
    for path in models:
        theirs = check.check_model(path, ["cpu"]).required_operators_config
        basic = tmp_path / f"basic-{path.name}"
        assert check._basic_session(path, basic) is None
        assert theirs is not None
        ours = check._config_from_graph(check._analyzed_model(basic, True)[0], path.name)
        assert ours.splitlines()[2:] == theirs.splitlines()[2:], path.name

    monkeypatch.setattr(check, "_required_operators_config", lambda *a: None)
    report = check.check_model(conv, ["cpu"])
    assert report.required_operators_config is not None
    assert any("schema versions" in n for n in report.notes)
