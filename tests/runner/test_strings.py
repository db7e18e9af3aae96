"""String tensors end to end: the onnx package's StringNormalizer models and scikit-learn text
pipelines through `edgepack pack` and `edgepack run` on both engines, and strings that are empty,
non-ASCII or hold NUL bytes through the native runner byte for byte."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgepack.runner.local import run_local
from edgepack.runner.python_engine import run_python
from edgepack.runner.result import RunConfig
from edgepack.tensors import read_tensor, tensor_bytes, write_tensor
from tests.conftest import onnx_test_data, run_cli
from tests.runner.conftest import make, save_model

# The two StringNormalizer models of the onnx package that change no case: the others ask for
# the en_US.UTF-8 locale (StringNormalizer's default), which onnxruntime cannot build on a
# machine without it, whichever engine runs it.
STRNORM = ["simple/test_strnorm_model_nostopwords_nochangecase",
           "simple/test_strnorm_model_monday_casesensintive_nochangecase"]

# Empty, non-ASCII, NUL inside and at both ends, long: nothing may treat them as C strings.
AWKWARD = ["monday", "", "é ü 東京", "a\x00b", "\x00lead", "tail\x00", "é" * 200]


def strings_model() -> onnx.ModelProto:
    """x (strings) -> upper (StringNormalizer to upper case, in the C.UTF-8 locale every glibc
    has) and same (Identity), and a string constant output."""
    graph = helper.make_graph(
        [helper.make_node("StringNormalizer", ["x"], ["upper"], case_change_action="UPPER",
                          locale="C.UTF-8"),
         helper.make_node("Identity", ["x"], ["same"]),
         helper.make_node("Constant", [], ["const"], value=numpy_helper.from_array(
             np.array(["k\x00", ""], dtype=object), "c"))],
        "strings",
        [helper.make_tensor_value_info("x", TensorProto.STRING, ["n"])],
        [helper.make_tensor_value_info("upper", TensorProto.STRING, ["m"]),
         helper.make_tensor_value_info("same", TensorProto.STRING, ["n"]),
         helper.make_tensor_value_info("const", TensorProto.STRING, [2])],
    )
    return make(graph)


@pytest.mark.parametrize("case", STRNORM)
def test_onnx_strnorm_models_pack_and_run_on_both_engines(host_runner, tmp_path, case):
    src = onnx_test_data() / case
    bundle = tmp_path / "bundle"
    r = run_cli("pack", src / "model.onnx", "-o", bundle, "--inputs-from", src)
    assert r.code == 0, r.stderr
    # pack's files are the onnx package's own bytes: same reader, same writer, same library.
    for f in ("input_0.pb", "output_0.pb"):
        assert (bundle / "test_data_set_0" / f).read_bytes() == \
            (src / "test_data_set_0" / f).read_bytes(), f
    for engine in ("native", "python"):
        r = run_cli("run", bundle, "--engine", engine, "--iterations", "2", "--json")
        assert r.code == 0, (engine, r.stderr)
        runner = r.json()["sets"][0]["runner"]
        assert runner["engine"] == engine
        assert [(t["name"], t["dtype"]) for t in runner["inputs"]] == [("x", "string")]
        assert [(t["name"], t["dtype"]) for t in runner["outputs"]] == [("y", "string")]
        assert all(v["passed"] for v in r.json()["sets"][0]["verdicts"])


def test_pack_makes_random_words_for_a_string_input(host_runner, tmp_path):
    src = onnx_test_data() / STRNORM[0]
    for k in ("a", "b"):
        r = run_cli("pack", src / "model.onnx", "-o", tmp_path / k, "--random-sets", "2")
        assert r.code == 0, r.stderr
    files = sorted((tmp_path / "a").rglob("*.pb"))
    assert len(files) == 4
    # Seeded: a second pack is byte-identical, and the two sets differ.
    for f in files:
        assert f.read_bytes() == (tmp_path / "b" / f.relative_to(tmp_path / "a")).read_bytes()
    _, first = read_tensor(tmp_path / "a" / "test_data_set_0" / "input_0.pb")
    _, second = read_tensor(tmp_path / "a" / "test_data_set_1" / "input_0.pb")
    assert first.dtype == object and first.shape == (2,) and first.tolist() != second.tolist()
    assert all(w.isascii() and w.isalpha() and 1 <= len(w) <= 8 for w in first.tolist())
    r = run_cli("run", tmp_path / "a", "--engine", "native", "--json")
    assert r.code == 0, r.stderr


def test_awkward_strings_through_pack_and_both_engines(host_runner, tmp_path):
    model = tmp_path / "strings.onnx"
    onnx.save_model(strings_model(), str(model))
    # A .pb, not a .npy: numpy's fixed-width str arrays cannot hold a trailing NUL.
    words = tmp_path / "words.pb"
    write_tensor(words, "x", np.array(AWKWARD, dtype=object))
    bundle = tmp_path / "bundle"
    r = run_cli("pack", model, "-o", bundle, "--input", f"x={words}")
    assert r.code == 0, r.stderr
    _, upper = read_tensor(bundle / "test_data_set_0" / "output_0.pb")
    assert upper.tolist() == [w.upper() for w in AWKWARD]
    for engine in ("native", "python"):
        r = run_cli("run", bundle, "--engine", engine, "--iterations", "2", "--json")
        assert r.code == 0, (engine, r.stderr)
        verdicts = r.json()["sets"][0]["verdicts"]
        assert [v["name"] for v in verdicts] == ["upper", "same", "const"]
        assert all(v["passed"] for v in verdicts), verdicts


def test_runner_writes_strings_byte_for_byte(host_runner, tmp_path):
    """The runner's output files are the bytes onnx writes for Python onnxruntime's outputs,
    and a string that is not UTF-8 passes through the runner unchanged."""
    import onnxruntime as ort

    model = save_model(strings_model(), tmp_path / "m")
    x = np.array(AWKWARD, dtype=object)
    inputs = tmp_path / "set"
    inputs.mkdir()
    write_tensor(inputs / "input_0.pb", "x", x)
    result = run_local(host_runner, model, inputs, tmp_path / "out", RunConfig(iterations=2))
    assert [(o.name, o.dtype, o.shape) for o in result.outputs] == [
        ("upper", "string", [7]), ("same", "string", [7]), ("const", "string", [2])]
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    for i, (meta, expected) in enumerate(zip(session.get_outputs(), session.run(None, {"x": x}),
                                             strict=True)):
        written = (tmp_path / "out" / f"output_{i}.pb").read_bytes()
        assert written == numpy_helper.from_array(expected, meta.name).SerializeToString()

    # Bytes that are no UTF-8 (StringNormalizer refuses them, Identity does not): the runner
    # carries them, onnxruntime's strings being bytes...
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["same"])], "identity",
        [helper.make_tensor_value_info("x", TensorProto.STRING, ["n"])],
        [helper.make_tensor_value_info("same", TensorProto.STRING, ["n"])],
    )
    model = save_model(make(graph), tmp_path / "identity")
    raw = TensorProto(name="x", data_type=TensorProto.STRING, dims=[2],
                      string_data=[b"\xff\xfe\x00", b"ok"])
    (inputs / "input_0.pb").write_bytes(raw.SerializeToString())
    run_local(host_runner, model, inputs, tmp_path / "raw", RunConfig(iterations=1))
    same = TensorProto.FromString((tmp_path / "raw" / "output_0.pb").read_bytes())
    assert list(same.string_data) == [b"\xff\xfe\x00", b"ok"]
    # ...edgepack reads them back exactly, and the Python engine, which cannot pass them to
    # onnxruntime, says so in one line instead of feeding it "b'...'" reprs.
    name, array = read_tensor(tmp_path / "raw" / "output_0.pb")
    assert tensor_bytes(name, array) == same.SerializeToString()
    from edgepack.errors import EdgepackError, ExitCode

    with pytest.raises(EdgepackError) as info:
        run_python(model, inputs, tmp_path / "py", RunConfig(iterations=1))
    assert info.value.exit_code == ExitCode.DEVICE and "not UTF-8" in info.value.message


def test_scalar_and_empty_string_inputs(host_runner, tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Identity", ["s"], ["s_out"]),
         helper.make_node("Identity", ["e"], ["e_out"])],
        "g",
        [helper.make_tensor_value_info("s", TensorProto.STRING, []),
         helper.make_tensor_value_info("e", TensorProto.STRING, [0, 3])],
        [helper.make_tensor_value_info("s_out", TensorProto.STRING, []),
         helper.make_tensor_value_info("e_out", TensorProto.STRING, [0, 3])],
    )
    model = save_model(make(graph), tmp_path / "m")
    inputs = tmp_path / "set"
    inputs.mkdir()
    s, e = np.array("a\x00", dtype=object), np.empty((0, 3), dtype=object)
    write_tensor(inputs / "input_0.pb", "s", s)
    write_tensor(inputs / "input_1.pb", "e", e)
    result = run_local(host_runner, model, inputs, tmp_path / "out", RunConfig(iterations=1))
    assert [o.shape for o in result.outputs] == [[], [0, 3]]
    assert (tmp_path / "out" / "output_0.pb").read_bytes() == tensor_bytes("s_out", s)
    assert (tmp_path / "out" / "output_1.pb").read_bytes() == tensor_bytes("e_out", e)


def test_runner_refuses_strings_for_a_numeric_input(run_runner, tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = save_model(make(graph), tmp_path / "m")
    inputs = tmp_path / "set"
    inputs.mkdir()
    write_tensor(inputs / "input_0.pb", "x", np.array(["1", "2"], dtype=object))
    r = run_runner("--model", model, "--inputs", inputs)
    assert r.code == 4 and "holds string but model input 'x' expects float32" in r.stdout


# ---------------------------------------------------------------- scikit-learn text pipelines

TEXTS = ["the cat sat", "a dog ran", "Cats purr", "dogs bark loudly", "the cat and the dog",
         "Überall Katzen", "chien\x00chat", ""]
LABELS = ["cat", "dog", "cat", "dog", "cat", "cat", "dog", "dog"]


def _sklearn_models(directory: Path) -> dict[str, Path]:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import StringTensorType
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import LabelEncoder

    # lowercase=False: lower-casing converts to StringNormalizer without a locale, which asks
    # for en_US.UTF-8 (see STRNORM).
    pipe = make_pipeline(TfidfVectorizer(lowercase=False), LogisticRegression())
    pipe.fit(TEXTS, LABELS)
    tfidf = convert_sklearn(pipe, initial_types=[("text", StringTensorType([None, 1]))],
                            options={id(pipe): {"zipmap": False}}, target_opset=17)
    encoder = LabelEncoder().fit(["apple", "banana", "cherry", "é"])
    labels = convert_sklearn(encoder, initial_types=[("fruit", StringTensorType([None]))],
                             target_opset=17)
    out = {}
    for name, model in (("tfidf", tfidf), ("labels", labels)):
        out[name] = directory / f"{name}.onnx"
        onnx.save_model(model, str(out[name]))
    return out


def test_sklearn_text_pipelines_pack_and_run_on_both_engines(host_runner, tmp_path):
    pytest.importorskip("skl2onnx")
    models = _sklearn_models(tmp_path)
    texts = tmp_path / "texts.npy"
    np.save(texts, np.array(TEXTS).reshape(-1, 1))
    fruit = tmp_path / "fruit.npy"
    np.save(fruit, np.array(["banana", "é", "kiwi", ""]))
    cases = {
        "tfidf": (["--input", f"text={texts}", "--random-sets", "1"],
                  [("label", "string"), ("probabilities", "float32")]),
        "labels": (["--input", f"fruit={fruit}"], [("variable", "int64")]),
    }
    for name, (args, outputs) in cases.items():
        bundle = tmp_path / f"{name}.bundle"
        r = run_cli("pack", models[name], "-o", bundle, *args)
        assert r.code == 0, (name, r.stderr)
        if name == "tfidf":
            _, label = read_tensor(bundle / "test_data_set_0" / "output_0.pb")
            assert label.tolist() == LABELS  # the pipeline learnt its training set
        for engine in ("native", "python"):
            r = run_cli("run", bundle, "--engine", engine, "--iterations", "2", "--json")
            assert r.code == 0, (name, engine, r.stderr)
            doc = r.json()
            assert [(t["name"], t["dtype"]) for t in doc["sets"][0]["runner"]["outputs"]] \
                == outputs
            assert all(v["passed"] for s in doc["sets"] for v in s["verdicts"])
