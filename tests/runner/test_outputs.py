"""The host runner computes what Python's onnxruntime computes: same library, same threads, so
outputs are identical or within 1e-6 relative."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgepack.runner.local import run_local
from edgepack.runner.result import RunConfig
from edgepack.tensors import array_dtype, read_tensor
from tests.conftest import onnx_test_data
from tests.runner.conftest import make, mlp_model, ort_run, save_model, write_set

REL = 1e-6


def read_pb(path: Path) -> tuple[str, np.ndarray]:
    # edgepack's reader, not numpy_helper's: its strings are str, which onnxruntime takes (it
    # would turn numpy_helper's bytes into their repr, "b'...'").
    return read_tensor(path)


def assert_close(actual: np.ndarray, expected: np.ndarray, label: str) -> None:
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, label
    if np.array_equal(actual, expected, equal_nan=actual.dtype.kind == "f"):
        return
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    assert np.array_equal(np.isnan(a), np.isnan(e)), f"{label}: NaNs differ"
    a, e = np.nan_to_num(a), np.nan_to_num(e)
    rel = np.max(np.abs(a - e) / np.maximum(np.abs(e), 1e-30))
    assert rel <= REL, f"{label}: max relative difference {rel:.3g} > {REL}"


def check_against_python(host_runner, model: Path, inputs: Path, out: Path,
                         feeds: dict[str, np.ndarray], threads: int = 1) -> None:
    result = run_local(host_runner, model, inputs, out, RunConfig(iterations=2, threads=threads))
    expected = ort_run(model, feeds, threads)
    assert len(result.outputs) == len(expected)
    for i, (info, exp) in enumerate(zip(result.outputs, expected, strict=True)):
        name, actual = read_pb(out / f"output_{i}.pb")
        assert name == info.name
        assert info.shape == list(exp.shape) and info.dtype == array_dtype(exp)
        assert_close(actual, exp, f"{model.parent.name}:{name}")


def _backend_cases() -> list[str]:
    """The models of the onnx package's backend test data that carry a test_data_set_0, have
    tensor inputs, and load in this onnxruntime (many use opsets whose kernels are gone)."""
    import onnxruntime as ort

    root = onnx_test_data()
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    cases = []
    for path in sorted(root.glob("*/*/model.onnx")):
        if not (path.parent / "test_data_set_0").is_dir():
            continue
        try:
            session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception:
            continue
        if all(i.type.startswith("tensor(") for i in session.get_inputs()):
            cases.append(path.parent.relative_to(root).as_posix())
    return cases


@pytest.mark.parametrize("case", _backend_cases())
def test_backend_models_match_python(host_runner, tmp_path, case):
    import onnxruntime as ort

    src = onnx_test_data() / case
    model = src / "model.onnx"
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    feeds = {}
    for i, meta in enumerate(session.get_inputs()):
        file_name, arr = read_pb(src / "test_data_set_0" / f"input_{i}.pb")
        feeds[file_name or meta.name] = arr
    check_against_python(host_runner, model, src / "test_data_set_0", tmp_path / "out", feeds)


@pytest.mark.parametrize("threads", [1, 2])
def test_mlp_with_external_data_matches_python(host_runner, make_bundle, tmp_path, threads):
    x = np.random.default_rng(1).standard_normal((8, 64)).astype(np.float32)
    bundle = make_bundle(mlp_model(), {"x": x}, threads=threads)
    assert (bundle.dir / "init.bin").stat().st_size > 0
    check_against_python(host_runner, bundle.model, bundle.inputs, tmp_path / "out",
                         bundle.feeds, threads)
    # The runner's files are byte for byte what numpy_helper writes for Python's arrays.
    for i in range(2):
        assert (tmp_path / "out" / f"output_{i}.pb").read_bytes() == \
            (bundle.inputs / f"output_{i}.pb").read_bytes()


def test_light_resnet50_matches_python(host_runner, tmp_path):
    model = onnx_test_data() / "light" / "light_resnet50.onnx"
    x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    write_set(tmp_path / "set", [("gpu_0/data_0", x)])
    check_against_python(host_runner, model, tmp_path / "set", tmp_path / "out",
                         {"gpu_0/data_0": x})


IDENTITY_DTYPES = ["float32", "float16", "float64", "int8", "uint8", "int16", "uint16", "int32",
                   "int64", "uint32", "uint64", "bool"]


def test_every_dtype_passes_through_exactly(host_runner, make_bundle, tmp_path):
    rng = np.random.default_rng(0)
    feeds, inputs, outputs, nodes = {}, [], [], []
    for i, name in enumerate(IDENTITY_DTYPES):
        dt = np.dtype(name)
        arr = (rng.integers(0, 2, (2, 3)).astype(bool) if dt == np.bool_ else
               (rng.standard_normal((2, 3)) * 10).astype(dt) if dt.kind == "f" else
               rng.integers(np.iinfo(dt).min, np.iinfo(dt).max, (2, 3), dtype=dt))
        elem = helper.np_dtype_to_tensor_dtype(dt)
        feeds[f"in_{name}"] = arr
        inputs.append(helper.make_tensor_value_info(f"in_{name}", elem, [2, 3]))
        outputs.append(helper.make_tensor_value_info(f"out_{name}", elem, [2, 3]))
        nodes.append(helper.make_node("Identity", [f"in_{name}"], [f"out_{name}"], name=f"n{i}"))
    bundle = make_bundle(make(helper.make_graph(nodes, "dtypes", inputs, outputs)), feeds)
    result = run_local(host_runner, bundle.model, bundle.inputs, tmp_path / "out",
                       RunConfig(iterations=1))
    assert [t.dtype for t in result.inputs] == IDENTITY_DTYPES
    assert [t.dtype for t in result.outputs] == IDENTITY_DTYPES
    for i, name in enumerate(IDENTITY_DTYPES):
        out_name, arr = read_pb(tmp_path / "out" / f"output_{i}.pb")
        assert out_name == f"out_{name}"
        assert arr.dtype == np.dtype(name) and np.array_equal(arr, feeds[f"in_{name}"]), name


def _two_input_model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Sub", ["a", "b"], ["d"]),
         helper.make_node("ReduceSum", ["d"], ["s"], keepdims=0)],
        "sub",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("d", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, [])],
    )
    return make(graph, opset=13)


def test_inputs_are_matched_by_name_whatever_the_file_order(host_runner, tmp_path):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([[10, 20, 30]], dtype=np.float32)
    model = save_model(_two_input_model(), tmp_path / "m")
    write_set(tmp_path / "set", [("b", b), ("a", a)])  # input_0.pb is b
    result = run_local(host_runner, model, tmp_path / "set", tmp_path / "out",
                       RunConfig(iterations=1))
    assert np.array_equal(read_pb(tmp_path / "out" / "output_0.pb")[1], a - b)
    assert read_pb(tmp_path / "out" / "output_1.pb")[1].shape == ()
    assert result.inputs[0].shape == ["batch", 3] and result.inputs[1].shape == [1, 3]
    assert result.outputs[0].shape == [2, 3] and result.outputs[1].shape == []
    assert result.extra["iterations"] == 1


def test_unnamed_inputs_are_matched_by_position(host_runner, tmp_path):
    a = np.ones((4, 3), np.float32)
    b = np.full((1, 3), 2, np.float32)
    model = save_model(_two_input_model(), tmp_path / "m")
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "input_0.pb").write_bytes(numpy_helper.from_array(a).SerializeToString())
    (tmp_path / "set" / "input_1.pb").write_bytes(numpy_helper.from_array(b).SerializeToString())
    run_local(host_runner, model, tmp_path / "set", tmp_path / "out", RunConfig(iterations=1))
    assert np.array_equal(read_pb(tmp_path / "out" / "output_0.pb")[1], a - b)


def test_scalar_and_empty_inputs(host_runner, tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "k"], ["y"])], "scale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"]),
         helper.make_tensor_value_info("k", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])],
    )
    model = save_model(make(graph), tmp_path / "m")
    for n in (0, 3):
        x = np.arange(n, dtype=np.float32)
        k = np.array(2.5, np.float32)
        write_set(tmp_path / f"set{n}", [("x", x), ("k", k)])
        run_local(host_runner, model, tmp_path / f"set{n}", tmp_path / f"out{n}",
                  RunConfig(iterations=1))
        assert np.array_equal(read_pb(tmp_path / f"out{n}" / "output_0.pb")[1], x * k)


def test_non_tensor_output_is_reported_not_written(host_runner, tmp_path):
    graph = helper.make_graph(
        [helper.make_node("SequenceConstruct", ["x", "x"], ["seq"]),
         helper.make_node("Neg", ["x"], ["y"])],
        "seq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = save_model(make(graph), tmp_path / "m")
    write_set(tmp_path / "set", [("x", np.array([1, -2], np.float32))])
    result = run_local(host_runner, model, tmp_path / "set", tmp_path / "out",
                       RunConfig(iterations=1))
    assert result.outputs[0].dtype == "sequence" and result.outputs[0].shape == []
    assert not (tmp_path / "out" / "output_0.pb").exists()
    assert np.array_equal(read_pb(tmp_path / "out" / "output_1.pb")[1], [-1, 2])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's TorchScript exporter
def test_example_resnet20_matches_python(host_runner, tmp_path):
    """The tutorial's CIFAR ResNet-20 (examples/resnet20.py), exported with torch here."""
    torch = pytest.importorskip("torch")
    import sys

    from tests.conftest import EXAMPLES

    sys.path.insert(0, str(EXAMPLES))
    try:
        import resnet20
    finally:
        sys.path.remove(str(EXAMPLES))
    net = resnet20.make_model().eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "resnet20.onnx"
    torch.onnx.export(net, (x,), str(path), input_names=["input"], output_names=["logits"],
                      opset_version=17, dynamo=False)
    model = save_model(onnx.load(str(path)), tmp_path / "bundle")
    feeds = {"input": x.numpy()}
    write_set(tmp_path / "set", list(feeds.items()))
    check_against_python(host_runner, model, tmp_path / "set", tmp_path / "out", feeds)


def test_bundle_from_edgepack_pack_runs_natively(host_runner, tmp_path):
    """`edgepack run --engine native` on a packed bundle goes through this runner and passes."""
    from tests.conftest import run_cli

    model = save_model(mlp_model(), tmp_path / "m")
    r = run_cli("pack", model, "-o", tmp_path / "bundle", "--random-sets", "2", "--dim", "N=4")
    assert r.code == 0, r.stderr
    r = run_cli("run", tmp_path / "bundle", "--engine", "native", "--json")
    assert r.code == 0, r.stderr
    doc = r.json()
    assert doc["engine"] == "native"
    assert all(s["runner"]["engine"] == "native" for s in doc["sets"])
    shutil.rmtree(tmp_path / "bundle")


def test_ort_format_model_gives_the_same_outputs(host_runner, tmp_path):
    """An .ort model (onnxruntime's own format, what mobile builds prefer) runs like the .onnx
    it was converted from."""
    import subprocess
    import sys

    model = save_model(mlp_model(), tmp_path / "mlp")
    x = np.random.default_rng(3).standard_normal((4, 64)).astype(np.float32)
    inputs = write_set(tmp_path / "mlp" / "test_data_set_0", [("x", x)])
    converted = subprocess.run(
        [sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", str(model)],
        capture_output=True, text=True, timeout=300)
    assert converted.returncode == 0, converted.stderr
    ort_model = model.with_suffix(".ort")
    assert ort_model.is_file()
    result = run_local(host_runner, ort_model, inputs, tmp_path / "out", RunConfig(iterations=2))
    assert [o.name for o in result.outputs] == ["logits", "probs"]
    expected = ort_run(model, {"x": x})
    for i, want in enumerate(expected):
        got = numpy_helper.to_array(onnx.load_tensor(str(tmp_path / "out" / f"output_{i}.pb")))
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
