"""Hostile and unusual bundles: manifests that point outside the bundle, symlinks, debug
metadata that must not reach devices, weights held in Constant nodes, non-finite expected
outputs (issue 9, items 1, 6, 7 and 9)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgepack.bundle import INIT, NODE_MAP, PREDICT, PackOptions, load_bundle, pack
from edgepack.errors import EdgepackError, ExitCode
from edgepack.inputs import InputRequest
from tests.conftest import run_cli


def _mlp(path: Path) -> Path:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 64)).astype(np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    out = tmp_path / "b"
    pack(_mlp(tmp_path / "mlp.onnx"), out, InputRequest(), PackOptions())
    return out


def _edit_manifest(bundle: Path, edit) -> None:  # noqa: ANN001 - a callable on the document
    doc = json.loads((bundle / "manifest.json").read_text())
    edit(doc)
    (bundle / "manifest.json").write_text(json.dumps(doc))


# ---------------------------------------------------------------------------- 1. paths


def _set(path: list, value):  # noqa: ANN001, ANN202
    def edit(doc):  # noqa: ANN001, ANN202
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return edit


HOSTILE = [
    (["test_sets", 0, "dir"], "../../../tsd"),
    (["test_sets", 0, "dir"], "/data/local/tmp/tsd"),
    (["test_sets", 0, "dir"], "test_data_set_0/.."),
    (["test_sets", 0, "dir"], "..\\..\\tsd"),
    (["test_sets", 0, "dir"], ""),
    (["test_sets", 0, "dir"], "./test_data_set_0"),
    (["test_sets", 0, "inputs", 0, "file"], "../../etc/passwd"),
    (["test_sets", 0, "outputs", 0, "file"], "test_data_set_0/../../x/output_0.pb"),
    (["files", 0, "path"], "../init.bin"),
    (["files", 0, "path"], "/etc/passwd"),
    (["files", 0, "path"], "C:/init.bin"),
    (["files", 0, "path"], "a//b"),
    (["model", "file"], "../predict.onnx"),
    (["model", "external_data"], "/tmp/init.bin"),
    (["model", "file"], "predict.onnx\x00.txt"),
]


@pytest.mark.parametrize("where, value", HOSTILE, ids=[f"{'.'.join(map(str, w))}={v!r}"
                                                       for w, v in HOSTILE])
def test_a_path_leaving_the_bundle_is_refused_where_the_manifest_is_read(bundle_dir, where,
                                                                          value):
    _edit_manifest(bundle_dir, _set(where, value))
    for args in (["inspect", bundle_dir], ["inspect", bundle_dir, "--no-verify"],
                 ["run", bundle_dir, "--device", "host", "--engine", "python"],
                 # Refused before any device is asked for: the serial does not exist.
                 ["deploy", bundle_dir, "--device", "no-such-serial"]):
        r = run_cli(*args)
        assert r.code == ExitCode.BAD_INPUT, (args, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert repr(value) in r.stderr or (value == "" and "empty" in r.stderr), r.stderr


def test_manifest_fields_of_the_wrong_type_are_refused(bundle_dir):
    _edit_manifest(bundle_dir, _set(["test_sets", 0, "dir"], 5))
    r = run_cli("inspect", bundle_dir)
    assert r.code == 2 and "malformed manifest" in r.stderr


def test_a_file_listed_twice_or_a_tampered_tolerance_is_refused(bundle_dir):
    doc = json.loads((bundle_dir / "manifest.json").read_text())
    twice = json.loads(json.dumps(doc))
    twice["files"].append(twice["files"][0])
    (bundle_dir / "manifest.json").write_text(json.dumps(twice))
    assert "twice" in run_cli("inspect", bundle_dir).stderr
    doc["outputs"][0]["tolerance"]["atol"] = -1
    (bundle_dir / "manifest.json").write_text(json.dumps(doc))
    r = run_cli("inspect", bundle_dir)
    assert r.code == 2 and "tolerance" in r.stderr


def test_a_symlinked_directory_or_file_in_a_bundle_is_refused(bundle_dir, tmp_path):
    outside = tmp_path / "outside"
    shutil.copytree(bundle_dir / "test_data_set_0", outside)
    shutil.rmtree(bundle_dir / "test_data_set_0")
    (bundle_dir / "test_data_set_0").symlink_to(outside)
    for args in (["inspect", bundle_dir], ["inspect", bundle_dir, "--no-verify"]):
        r = run_cli(*args)
        assert r.code == 2 and "symbolic link" in r.stderr, r.stderr
    # A file: the same bytes, so the hash would pass.
    (bundle_dir / "test_data_set_0").unlink()
    shutil.copytree(outside, bundle_dir / "test_data_set_0")
    shutil.copy(bundle_dir / INIT, tmp_path / "init.copy")
    (bundle_dir / INIT).unlink()
    (bundle_dir / INIT).symlink_to(tmp_path / "init.copy")
    r = run_cli("inspect", bundle_dir)
    assert r.code == 2 and "symbolic link" in r.stderr and INIT in r.stderr


def test_bundles_of_schema_1_still_load(bundle_dir):
    def downgrade(doc):  # noqa: ANN001, ANN202
        doc["schema_version"] = 1
        doc.pop("host_files")
        for s in doc["test_sets"]:
            for t in s["inputs"] + s["outputs"]:
                t.pop("nonfinite")
    _edit_manifest(bundle_dir, downgrade)
    b = load_bundle(bundle_dir, verify=False)
    assert b.manifest.schema_version == 1 and b.manifest.host_files == []


# ---------------------------------------------------------------------------- 6. debug info


def _with_debug_metadata(path: Path) -> Path:
    """What a dynamo export leaves on nodes: module names, FX nodes, stack traces with
    absolute host paths."""
    model = onnx.load(str(_mlp(path)))
    node = model.graph.node[0]
    node.name = "node_MatMul_0"
    node.doc_string = "made at /home/alice/project/model.py:12"
    for key, value in (
        ("namespace", ": model.Net/fc: torch.nn.modules.linear.Linear"),
        ("pkg.torch.onnx.class_hierarchy", "['model.Net', 'torch.nn.modules.linear.Linear']"),
        ("pkg.torch.onnx.stack_trace",
         'File "/home/alice/venv/lib/python3.11/site-packages/torch/nn/modules/linear.py"'),
    ):
        entry = node.metadata_props.add()
        entry.key, entry.value = key, value
    graph_meta = model.graph.metadata_props.add()
    graph_meta.key, graph_meta.value = "pkg.torch.export.graph_signature", "p_fc_weight"
    model.graph.doc_string = "graph built in /home/alice"
    model.doc_string = "exported on alice's laptop"
    onnx.save(model, path)
    return path


def test_debug_metadata_stays_on_the_host(tmp_path):
    from edgepack.deploy import _staged_dirs
    from edgepack.runner.cache import RunnerBuild

    out = tmp_path / "b"
    pack(_with_debug_metadata(tmp_path / "m.onnx"), out, InputRequest(), PackOptions())
    raw = (out / PREDICT).read_bytes()
    assert b"/home/alice" not in raw and b"namespace" not in raw and b"stack_trace" not in raw
    predict = onnx.load(str(out / PREDICT), load_external_data=False)
    assert not predict.graph.node[0].metadata_props and not predict.graph.node[0].doc_string
    # What a diagnosis needs (which module a node came from) is kept on the host.
    node_map = json.loads((out / NODE_MAP).read_text())
    (entry,) = node_map["nodes"]
    assert entry["name"] == "node_MatMul_0" and entry["op_type"] == "MatMul"
    assert entry["metadata"]["namespace"].endswith("torch.nn.modules.linear.Linear")
    assert "pkg.torch.onnx.stack_trace" not in entry["metadata"]
    assert b"/home/alice" not in (out / NODE_MAP).read_bytes()
    bundle = load_bundle(out)
    assert [f.path for f in bundle.manifest.host_files] == [NODE_MAP]
    assert NODE_MAP not in {f.path for f in bundle.manifest.files}
    # ... and is never pushed: deploy stages the manifest's device files only.
    runner = RunnerBuild(target="host", ort_version="-", runner_version="-", directory=tmp_path,
                         files=[], headers_version="-", ort_api_version=0, library_origin="-",
                         source_sha256=None, built_at="-")
    pushed = {f.rel for d in _staged_dirs(bundle, runner, ("/bin", "/b", "/r")) for f in d.files}
    assert NODE_MAP not in pushed and PREDICT in pushed
    # A changed node map is caught like any other file.
    (out / NODE_MAP).write_text("{}")
    with pytest.raises(EdgepackError, match="does not match its manifest hash"):
        load_bundle(out)


def test_a_model_without_debug_metadata_has_no_node_map(bundle_dir):
    assert not (bundle_dir / NODE_MAP).exists()
    assert load_bundle(bundle_dir).manifest.host_files == []


# ---------------------------------------------------------------------------- 7. Constants


def _constant_weights(path: Path, ir_version: int = 8) -> Path:
    """Weights as Constant nodes, the way paddle2onnx writes them: one 4 KiB matrix in the main
    graph, one in an If branch, and a small constant that stays where it is."""
    rng = np.random.default_rng(1)
    big = numpy_helper.from_array(rng.standard_normal((16, 64)).astype(np.float32), "c0")
    branch_w = numpy_helper.from_array(rng.standard_normal((64, 32)).astype(np.float32), "c1")
    small = numpy_helper.from_array(np.array([0.5], np.float32), "c2")
    then_g = helper.make_graph(
        [helper.make_node("Constant", [], ["bw"], value=branch_w),
         helper.make_node("MatMul", ["h", "bw"], ["t_out"])],
        "then", [], [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, [1, 32])])
    else_g = helper.make_graph(
        [helper.make_node("Slice", ["h", "s0", "s1", "s2"], ["e_out"])],
        "else", [], [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, [1, 32])])
    nodes = [
        helper.make_node("Constant", [], ["W"], value=big),
        helper.make_node("Constant", [], ["half"], value=small),
        helper.make_node("MatMul", ["x", "W"], ["mm"]),
        helper.make_node("Mul", ["mm", "half"], ["h"]),
        helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g),
    ]
    inits = [numpy_helper.from_array(np.array([0], np.int64), "s0"),
             numpy_helper.from_array(np.array([32], np.int64), "s1"),
             numpy_helper.from_array(np.array([1], np.int64), "s2")]
    graph = helper.make_graph(
        nodes, "constants",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16]),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])], inits)
    if ir_version < 4:
        graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, t.dims)
                           for t in inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = ir_version
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("ir_version", [8, 3])
def test_weights_in_constant_nodes_move_to_init_bin(tmp_path, ir_version):
    source = _constant_weights(tmp_path / "paddle_like.onnx", ir_version)
    out = tmp_path / "b"
    r = run_cli("pack", source, "-o", out, "--random-sets", "2")
    assert r.code == 0, r.stderr
    manifest = load_bundle(out).manifest
    assert manifest.model.external_tensors == 2  # the main graph's and the branch's
    assert (out / INIT).stat().st_size >= (16 * 64 + 64 * 32) * 4
    predict = onnx.load(str(out / PREDICT), load_external_data=False)
    constants = [n for n in predict.graph.node if n.op_type == "Constant"]
    assert len(constants) == 1  # the 4-byte one stays inline
    assert (out / PREDICT).stat().st_size < 2048
    # The bundle's expected outputs are what the original model computes.
    original = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    for k in range(2):
        feeds = {}
        for i, name in enumerate(("x", "cond")):
            feeds[name] = numpy_helper.to_array(onnx.load_tensor(
                str(out / f"test_data_set_{k}/input_{i}.pb")))
        want = original.run(None, feeds)[0]
        got = numpy_helper.to_array(onnx.load_tensor(str(out / f"test_data_set_{k}/output_0.pb")))
        np.testing.assert_array_equal(got, want)
    assert run_cli("run", out, "--device", "host", "--engine", "python").code == 0


# ---------------------------------------------------------------------------- 9. NaN and inf


def _identity(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "id",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_nonfinite_expected_outputs_are_refused_unless_allowed(tmp_path):
    model = _identity(tmp_path / "id.onnx")
    np.save(tmp_path / "nan.npy", np.array([1.0, np.nan, np.inf, 2.0], np.float32))
    with pytest.raises(EdgepackError) as err:
        pack(model, tmp_path / "b", InputRequest(named=[("x", tmp_path / "nan.npy")]),
             PackOptions())
    assert err.value.exit_code == ExitCode.BAD_INPUT
    assert "2 NaN or inf" in err.value.message and "--allow-nonfinite" in err.value.message
    assert "nan.npy" in err.value.message and not (tmp_path / "b").exists()

    bundle = pack(model, tmp_path / "b", InputRequest(named=[("x", tmp_path / "nan.npy")]),
                  PackOptions(allow_nonfinite=True))
    assert bundle.manifest.test_sets[0].outputs[0].nonfinite == 2
    assert bundle.manifest.test_sets[0].inputs[0].nonfinite == 2
    r = run_cli("run", bundle.path, "--device", "host", "--engine", "python", "--json")
    assert r.code == 0, r.stderr
    metrics = r.json()["sets"][0]["verdicts"][0]["metrics"]
    assert metrics["nonfinite"]["expected_nan"] == 1 and metrics["nonfinite"]["mismatched"] == 0
    assert metrics["compared"] == 2 and metrics["total"] == 4
