"""pack --ops-allowed / --fix-dim through the CLI: the fast-neural-style net rewritten for a
target without InstanceNormalization, reflect Pad and Upsample, checked against the original,
recorded in the manifest; a failed check leaves no bundle; bad input is one line, exit 2."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import onnx
import pytest

from tests.conftest import EXAMPLES, run_cli

THE_THREE = {"InstanceNormalization", "Pad", "Upsample"}


@pytest.fixture(scope="module")
def fns(tmp_path_factory) -> Path:
    """The example as its docstring exports it: opset 9, so Upsample is still an operator."""
    path = tmp_path_factory.mktemp("fns") / "fast_neural_style.onnx"
    r = run_cli("export", EXAMPLES / "fast_neural_style.py:make_model", "--exporter",
                "torchscript", "--opset", "9", "--input", "input:1x3x64x64:float32",
                "--output-name", "output", "-o", path)
    assert r.code == 0, r.stderr + r.stdout
    ops = collections.Counter(n.op_type for n in onnx.load(path).graph.node)
    assert THE_THREE <= set(ops) and ops["Pad"] == 16
    assert all(a.s == b"reflect" for n in onnx.load(path).graph.node if n.op_type == "Pad"
               for a in n.attribute if a.name == "mode")
    return path


def without_the_three(tmp_path: Path, extra: tuple[str, ...] = ("Resize",)) -> Path:
    cfg = tmp_path / "required_operators.config"
    cfg.write_text("# the tutorial's ONNX.js: no InstanceNormalization, reflect Pad, Upsample\n"
                   "ai.onnx;9,10;Add,Concat,Constant,Conv,Div,Mul,ReduceMean,Relu,Slice,Sqrt,"
                   f"Sub{''.join(',' + e for e in extra)}\n")
    return cfg


def test_fast_neural_style_rewritten_passes_and_is_recorded(fns, tmp_path):
    out = tmp_path / "b"
    r = run_cli("pack", fns, "-o", out, "--random-sets", "2", "--ops-allowed",
                without_the_three(tmp_path))
    assert r.code == 0, r.stderr
    assert "rewritten for required_operators.config: 66 -> " in r.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    rw = manifest["rewrite"]
    assert rw["ops_allowed"] == "required_operators.config" and rw["fixed_dims"] == []
    assert {(x["op"], x["nodes"]) for x in rw["rules"]} == {
        ("Upsample", 2), ("Pad", 16), ("InstanceNormalization", 15)}
    assert rw["nodes_before"] == 66 and rw["nodes_after"] > 66
    assert (rw["opset_before"], rw["opset_after"]) == (9, 10)
    assert 0 < rw["max_abs_error"] < 1e-4
    packed = onnx.load(out / "predict.onnx", load_external_data=False)
    assert not THE_THREE & {n.op_type for n in packed.graph.node}
    assert manifest["model"]["opset_imports"] == {"ai.onnx": 10}
    # The bundle is an ordinary bundle: it runs and passes against its expected outputs.
    run = run_cli("run", out, "--engine", "python", "--iterations", "1", "--json")
    assert run.code == 0, run.stderr
    assert run_cli("inspect", out, "--json").json()["manifest"]["rewrite"] == rw


def test_a_rewrite_beyond_the_tolerance_leaves_no_bundle(fns, tmp_path):
    # Zero tolerance: the decomposed InstanceNormalization rounds differently from onnxruntime's
    # kernel in the last bits, which is exactly what the check must catch.
    out = tmp_path / "b"
    r = run_cli("pack", fns, "-o", out, "--random-sets", "1", "--rtol", "0", "--atol", "0",
                "--ops-allowed", without_the_three(tmp_path))
    assert r.code == 1, r.stderr
    assert "differs from the original" in r.stderr and "output" in r.stderr
    assert not out.exists()
    rejected = tmp_path / "b.rejected"
    kept = onnx.load(rejected)
    assert not THE_THREE & {n.op_type for n in kept.graph.node}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_the_cpu_provider_takes_the_model_as_it_is(fns, tmp_path):
    r = run_cli("pack", fns, "-o", tmp_path / "b", "--ops-allowed", "cpu", "--json")
    assert r.code == 0, r.stderr
    rw = r.json()["manifest"]["rewrite"]
    assert rw["rules"] == [] and rw["nodes_before"] == rw["nodes_after"] == 66
    assert rw["max_abs_error"] == 0.0


def test_nnapi_takes_pad_in_constant_mode_only(fns, tmp_path):
    # NNAPI has Pad, but "only constant mode Pad is supported" (its list in onnxruntime's
    # wheel): the reflect pads are rewritten all the same.
    from edgepack.rewrite import ops_for_ep

    r = run_cli("pack", fns, "-o", tmp_path / "b", "--ops-allowed", "nnapi", "--json")
    assert r.code == 0, r.stderr
    rw = r.json()["manifest"]["rewrite"]
    assert {(x["op"], x["nodes"]) for x in rw["rules"]} >= {("Pad", 16),
                                                             ("InstanceNormalization", 15)}
    ops = {("ai.onnx", n.op_type) for n in onnx.load(tmp_path / "b" / "predict.onnx",
                                                     load_external_data=False).graph.node}
    assert ops <= ops_for_ep("nnapi") and ("ai.onnx", "Pad") not in ops


def test_a_config_for_another_opset_is_refused(fns, tmp_path):
    # A reduced build has the kernels of the opsets its config names; Upsample -> Resize takes
    # the model to opset 10, which this config's build lacks.
    cfg = tmp_path / "ops.config"
    cfg.write_text(without_the_three(tmp_path).read_text().replace(";9,10;", ";9;"))
    r = run_cli("pack", fns, "-o", tmp_path / "b", "--ops-allowed", cfg)
    assert r.code == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "lists ai.onnx opset(s) 9, and the rewritten model is at opset 10" in r.stderr
    assert not (tmp_path / "b").exists()


def test_fix_dim_fixes_the_batch(tmp_path):
    from onnx import TensorProto, helper

    m = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])]),
        opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = tmp_path / "m.onnx"
    onnx.save(m, path)
    r = run_cli("pack", path, "-o", tmp_path / "b", "--fix-dim", "batch=3", "--json")
    assert r.code == 0, r.stderr
    doc = r.json()["manifest"]
    assert doc["inputs"][0]["shape"] == [3, 4] and doc["outputs"][0]["shape"] == [3, 4]
    assert doc["test_sets"][0]["inputs"][0]["shape"] == [3, 4]
    assert doc["rewrite"]["fixed_dims"] == ["batch=3"] and doc["rewrite"]["ops_allowed"] is None
    bad = run_cli("pack", path, "-o", tmp_path / "c", "--fix-dim", "seq=3")
    assert bad.code == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "no symbolic dim or input named 'seq' (symbolic dims: batch" in bad.stderr
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("args, words", [
    (["--ops-allowed", "tpu9000"], "not a file, nor a provider"),
    (["--ops-allowed", "{cfg_bad}"], "malformed operator config"),
    (["--ops-allowed", "{cfg_no_resize}"], "no rule rewrites Resize (2 node(s)"),
    (["--fix-dim", "batch=1"], "no symbolic dim or input named 'batch'"),
    (["--fix-dim", "batch"], "expected NAME=SIZE"),
])
def test_bad_input_is_one_line_and_exit_2(fns, tmp_path, args, words):
    bad = tmp_path / "bad.config"
    bad.write_text("ai.onnx;Add,Conv\n")
    subs = {"{cfg_bad}": str(bad), "{cfg_no_resize}": str(without_the_three(tmp_path, ()))}
    args = [subs.get(a, a) for a in args]
    r = run_cli("pack", fns, "-o", tmp_path / "b", *args)
    assert r.code == 2, r.stderr
    assert words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "b").exists() and not (tmp_path / "b.rejected").exists()
