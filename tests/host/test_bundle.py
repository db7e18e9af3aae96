"""The bundle's layout, determinism, atomicity and verification."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgepack.bundle import EXTERNAL_THRESHOLD, load_bundle
from edgepack.errors import EdgepackError
from tests.conftest import IMAGES, onnx_test_data, run_cli


def _gemm_model(path: Path, hidden: int = 64) -> Path:
    """x[1,16] -> Gemm(W[16,hidden]) -> Relu -> Gemm(small[hidden,3]); a bias of 3 floats."""
    rng = np.random.default_rng(0)
    big = numpy_helper.from_array(rng.standard_normal((16, hidden)).astype(np.float32), "W")
    small = numpy_helper.from_array(rng.standard_normal((hidden, 3)).astype(np.float32), "V")
    bias = numpy_helper.from_array(np.ones(3, np.float32), "b")
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "W"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("Gemm", ["r", "V", "b"], ["y"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [big, small, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_layout_and_external_weights(tmp_path):
    model = _gemm_model(tmp_path / "mlp.onnx", hidden=64)  # W: 4 KiB, V: 768 B, b: 12 B
    r = run_cli("pack", model, "-o", tmp_path / "b", "--dim", "batch=2")
    assert r.code == 0, r.stderr
    bundle = tmp_path / "b"
    predict = onnx.load(str(bundle / "predict.onnx"), load_external_data=False)
    external = {t.name for t in predict.graph.initializer
                if t.data_location == TensorProto.EXTERNAL}
    assert external == {"W"}  # only initializers above 1 KiB
    for t in predict.graph.initializer:
        if t.name == "W":
            info = {e.key: e.value for e in t.external_data}
            assert info["location"] == "init.bin" and int(info["offset"]) % 64 == 0
            assert int(info["length"]) == 16 * 64 * 4 > EXTERNAL_THRESHOLD
    # onnxruntime loads predict.onnx directly, with init.bin beside it.
    session = ort.InferenceSession(str(bundle / "predict.onnx"), providers=["CPUExecutionProvider"])
    x = numpy_helper.to_array(onnx.load_tensor(str(bundle / "test_data_set_0/input_0.pb")))
    assert x.shape == (2, 16)  # --dim batch=2
    y = numpy_helper.to_array(onnx.load_tensor(str(bundle / "test_data_set_0/output_0.pb")))
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], y)
    # Tensors carry their names, as the ONNX test-data layout wants.
    assert onnx.load_tensor(str(bundle / "test_data_set_0/input_0.pb")).name == "x"
    assert onnx.load_tensor(str(bundle / "test_data_set_0/output_0.pb")).name == "y"

    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 16]}]
    assert manifest["outputs"][0]["tolerance"] == {"rtol": 1e-3, "atol": 1e-4}
    assert manifest["provenance"]["kind"] == "onnx"
    assert manifest["test_sets"][0]["inputs"][0]["source"]["kind"] == "random"
    assert manifest["model"]["opset_imports"] == {"ai.onnx": 17}
    for entry in manifest["files"]:
        assert (bundle / entry["path"]).stat().st_size == entry["size"]


def test_model_that_already_uses_external_data(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    model = onnx.load(str(_gemm_model(tmp_path / "mlp.onnx", hidden=256)))
    onnx.save_model(model, str(src / "ext.onnx"), save_as_external_data=True,
                    location="weights.data", size_threshold=0)
    assert (src / "weights.data").exists()
    r = run_cli("pack", src / "ext.onnx", "-o", tmp_path / "b")
    assert r.code == 0, r.stderr
    assert run_cli("run", tmp_path / "b", "--engine", "python").code == 0


def test_packing_twice_gives_identical_bytes(exported, tmp_path):
    args = ["--input", f"input={IMAGES / 'cifar_32.png'}", "--random-sets", "2", "--seed", "7"]
    for out in ("one", "two"):
        assert run_cli("pack", exported["resnet20"], "-o", tmp_path / out, *args).code == 0
    one = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*"))
    two = sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*"))
    assert one == two
    for rel in one:
        a, b = tmp_path / "one" / rel, tmp_path / "two" / rel
        if a.is_file():
            assert a.read_bytes() == b.read_bytes(), rel


def test_failed_pack_leaves_nothing(tmp_path):
    model = _gemm_model(tmp_path / "mlp.onnx")
    bad = tmp_path / "wrong.npy"
    np.save(bad, np.zeros((1, 16), np.float64))
    r = run_cli("pack", model, "-o", tmp_path / "b", "--input", f"x={bad}")
    assert r.code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.onnx", "wrong.npy"]


def test_interrupted_pack_leaves_nothing_that_looks_like_a_bundle(tmp_path, monkeypatch):
    import edgepack.bundle.packer as bundle_mod
    import edgepack.ort_session as ort_session
    from edgepack.inputs import InputRequest

    model = _gemm_model(tmp_path / "mlp.onnx")
    real = ort_session.reference_session

    def interrupted(*args):
        real(*args)
        raise KeyboardInterrupt  # as if Ctrl-C arrived while outputs were being computed

    monkeypatch.setattr(ort_session, "reference_session", interrupted)
    with pytest.raises(KeyboardInterrupt):
        bundle_mod.pack(model, tmp_path / "b", InputRequest(), bundle_mod.PackOptions())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.onnx"]


def test_force_replaces_an_existing_bundle(tmp_path):
    model = _gemm_model(tmp_path / "mlp.onnx")
    assert run_cli("pack", model, "-o", tmp_path / "b").code == 0
    again = run_cli("pack", model, "-o", tmp_path / "b")
    assert again.code == 2 and "already exists" in again.stderr and "--force" in again.stderr
    assert run_cli("pack", model, "-o", tmp_path / "b", "--force", "--seed", "3").code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "mlp.onnx"]


def test_verify_detects_a_changed_file(tmp_path):
    model = _gemm_model(tmp_path / "mlp.onnx")
    assert run_cli("pack", model, "-o", tmp_path / "b").code == 0
    blob = tmp_path / "b" / "init.bin"
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(EdgepackError, match="does not match its manifest hash"):
        load_bundle(tmp_path / "b")
    r = run_cli("run", tmp_path / "b")
    assert r.code == 2 and "init.bin" in r.stderr
    assert run_cli("inspect", tmp_path / "b", "--no-verify").code == 0


def test_a_change_after_a_good_verification_is_caught(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPACK_CACHE_DIR", str(tmp_path / "cache"))
    model = _gemm_model(tmp_path / "mlp.onnx")
    assert run_cli("pack", model, "-o", tmp_path / "b").code == 0
    load_bundle(tmp_path / "b")  # verified, and remembered
    assert list((tmp_path / "cache" / "verified").glob("*.json"))
    load_bundle(tmp_path / "b")  # unchanged: trusted by size, mtime and inode
    blob = tmp_path / "b" / "init.bin"
    data = bytearray(blob.read_bytes())
    data[7] ^= 1
    blob.write_bytes(bytes(data))
    with pytest.raises(EdgepackError, match="init.bin does not match"):
        load_bundle(tmp_path / "b")


def test_tolerance_options(tmp_path):
    model = _gemm_model(tmp_path / "mlp.onnx")
    r = run_cli("pack", model, "-o", tmp_path / "b", "--tolerance", "y=0.5,0.25", "--json")
    assert r.code == 0
    assert r.json()["manifest"]["outputs"][0]["tolerance"] == {"rtol": 0.5, "atol": 0.25}
    r = run_cli("pack", model, "-o", tmp_path / "c", "--rtol", "0.01")
    assert load_bundle(tmp_path / "c").manifest.outputs[0].tolerance.rtol == 0.01
    bad = run_cli("pack", model, "-o", tmp_path / "d", "--tolerance", "nope=1,1")
    assert bad.code == 2 and "no output 'nope'" in bad.stderr


def test_onnx_test_data_set_inputs(tmp_path):
    """The onnx package's own test models: pack with their inputs; our expected outputs agree
    with the outputs they ship."""
    data = onnx_test_data() / "pytorch-converted"
    for name in ("test_Conv2d", "test_Embedding", "test_PixelShuffle", "test_MaxPool2d"):
        src = data / name
        out = tmp_path / name
        r = run_cli("pack", src / "model.onnx", "-o", out, "--inputs-from", src)
        assert r.code == 0, (name, r.stderr)
        ours = numpy_helper.to_array(onnx.load_tensor(str(out / "test_data_set_0/output_0.pb")))
        theirs = numpy_helper.to_array(
            onnx.load_tensor(str(src / "test_data_set_0/output_0.pb")))
        np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-5)
        assert run_cli("run", out, "--engine", "python", "--iterations", "1").code == 0


def test_light_models_pack_with_random_inputs(tmp_path):
    light = onnx_test_data() / "light" / "light_squeezenet.onnx"
    r = run_cli("pack", light, "-o", tmp_path / "sq", "--json")
    assert r.code == 0, r.stderr
    # IR 3 lists initializers among the graph inputs: they are not inputs to feed.
    assert [i["name"] for i in r.json()["manifest"]["inputs"]] == ["data_0"]


def test_no_partial_dirs_survive_a_bad_model(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07" + os.urandom(64))
    r = run_cli("pack", tmp_path / "bad.onnx", "-o", tmp_path / "b")
    assert r.code == 2
    assert not any(p.name.startswith(".b") or p.name == "b" for p in tmp_path.iterdir())
    shutil.rmtree(tmp_path / "b", ignore_errors=True)


def test_an_operator_onnxruntime_lacks_is_named(tmp_path):
    src = onnx_test_data() / "pytorch-converted" / "test_BatchNorm2d_eval"
    r = run_cli("pack", src / "model.onnx", "-o", tmp_path / "b", "--inputs-from", src)
    assert r.code == 2
    assert "onnxruntime cannot load this model" in r.stderr and "BatchNormalization(6)" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
