"""`edgepack check --ep wasm|webgl|webgpu|onnxjs` (issue 17): what each browser backend takes,
from the tables the pinned packages publish (parsed from the cached runtime) and, for WASM, from
the browser probe. Through the CLI, on small onnx models and the fast-neural-style net."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgepack.providers import LATEST, PROVIDERS, parse_resolve_rules
from edgepack.web.runtime import ONNXJS, ORT_WEB, web_runtime
from tests.conftest import EXAMPLES, run_cli

ONNXJS_RULES = "lib/backends/webgl/op-resolve-rules.js"
ORT_WEBGL_RULES = "lib/onnxjs/backends/webgl/op-resolve-rules.js"


def _model(nodes, inputs, outputs, opset: int, path: Path, inits=()) -> Path:
    g = helper.make_graph(nodes, path.stem, inputs, outputs, list(inits))
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)],
                                ir_version=8), str(path))
    return path


def _f32(name: str, shape: list[int]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def reduce_mean(path: Path, opset: int) -> Path:
    """ReduceMean over H, W: axes an attribute up to opset 17, an input from 18."""
    if opset >= 18:
        axes = numpy_helper.from_array(np.array([2, 3], np.int64), "axes")
        node = helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=1)
        return _model([node], [_f32("x", [1, 2, 4, 4])], [_f32("y", [1, 2, 1, 1])], opset,
                      path, [axes])
    node = helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=1)
    return _model([node], [_f32("x", [1, 2, 4, 4])], [_f32("y", [1, 2, 1, 1])], opset, path)


@pytest.fixture(scope="module")
def fns(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fns") / "fast_neural_style.onnx"
    r = run_cli("export", EXAMPLES / "fast_neural_style.py:make_model", "--exporter",
                "torchscript", "--opset", "9", "--input", "input:1x3x32x32:float32",
                "--output-name", "output", "-o", path)
    assert r.code == 0, r.stderr + r.stdout
    return path


def _ep(doc: dict, name: str) -> dict:
    return next(e for e in doc["eps"] if e["ep"] == name)


# ------------------------------------------------------------------------ the packages' tables


@pytest.mark.parametrize(("runtime", "path", "rules"), [
    (ONNXJS, ONNXJS_RULES, 67), (ORT_WEB, ORT_WEBGL_RULES, 81)])
def test_every_rule_of_the_packages_tables_is_read(runtime, path, rules):
    text = (web_runtime(runtime).root / path).read_text()
    table = parse_resolve_rules(text, "WEBGL_OP_RESOLVE_RULES")
    # Every element of the array (counted by its lines in the file: 67 and 81); Gemm, Slice
    # and a few more have two rules, one entry with two ranges.
    assert sum(len(r.versions) for r in table.values()) == rules
    assert table[("ai.onnx", "Conv")].versions == ((1, LATEST),)
    assert table[("ai.onnx", "Upsample")].versions[0] == (7, 8)


def test_a_rule_the_parser_cannot_read_is_refused_not_dropped():
    text = (web_runtime(ONNXJS).root / ONNXJS_RULES).read_text()
    # A version selector of a form ONNX.js's matchSelector knows and the parser does not.
    changed = text.replace("['Abs', '', '6+',", "['Abs', '', 'v6',", 1)
    assert changed != text
    with pytest.raises(ValueError, match="rule"):
        parse_resolve_rules(changed, "WEBGL_OP_RESOLVE_RULES")


def test_the_provider_tables_are_the_packages(tmp_path):
    onnxjs = PROVIDERS["onnxjs"].ops()
    assert ("ai.onnx", "ConvTranspose") not in onnxjs
    assert onnxjs[("ai.onnx", "Pad")].versions == ((2, 10),)
    # ONNX.js's kernels read axes as an attribute: the open range stops where it became an input.
    assert onnxjs[("ai.onnx", "ReduceMean")].versions == ((1, 17),)
    assert onnxjs[("ai.onnx", "ReduceSum")].versions == ((1, 12),)
    webgl = PROVIDERS["webgl"].ops()
    assert webgl[("ai.onnx", "Squeeze")].versions == ((1, 12), (13, LATEST))  # both forms
    assert ("ai.onnx", "InstanceNormalization") in webgl  # a rule written over several lines


# ------------------------------------------------------------------------ check --ep


def test_fast_neural_style_on_each_browser_backend(fns):
    r = run_cli("check", fns, "--ep", "onnxjs,webgl,webgpu", "--json")
    assert r.code == 0, r.stderr
    doc = r.json()
    onnxjs = _ep(doc, "onnxjs")
    assert onnxjs["verdict"] == "cannot" and onnxjs["whole_graph"]
    assert onnxjs["partitioning"]["nodes"] == 66
    assert onnxjs["partitioning"]["supported_nodes"] == 64
    assert onnxjs["partitioning"]["unsupported_ops"] == ["ai.onnx:Upsample"]
    assert "kernels for opsets 7-8" in " ".join(onnxjs["reasons"])
    # onnxruntime-web's WebGL lists Upsample-9, whose kernel fails every run (see providers.py).
    assert _ep(doc, "webgl")["partitioning"]["unsupported_ops"] == ["ai.onnx:Upsample"]
    webgpu = _ep(doc, "webgpu")  # JSEP has no Upsample: those nodes run on the WASM kernels
    assert webgpu["verdict"] == "runs partly" and "no GPU" in webgpu["source"]
    upsample = next(o for o in doc["operators"] if o["op_type"] == "Upsample")
    assert not upsample["support"]["onnxjs"]["supported"]
    text = run_cli("check", fns, "--ep", "onnxjs").stdout
    assert "onnxjs: cannot run the model (takes 64 of 66 nodes" in " ".join(text.split())


def test_an_operator_onnxjs_lacks_is_named(tmp_path):
    w = numpy_helper.from_array(np.ones((2, 2, 3, 3), np.float32), "W")
    path = _model([helper.make_node("ConvTranspose", ["x", "W"], ["c"]),
                   helper.make_node("Relu", ["c"], ["y"])],
                  [_f32("x", [1, 2, 4, 4])], [_f32("y", [1, 2, 6, 6])], 13,
                  tmp_path / "deconv.onnx", [w])
    doc = run_cli("check", path, "--ep", "onnxjs,webgl", "--json").json()
    onnxjs = _ep(doc, "onnxjs")
    assert onnxjs["verdict"] == "cannot"
    assert onnxjs["partitioning"]["unsupported_ops"] == ["ai.onnx:ConvTranspose"]
    assert "not in ONNX.js's WebGL resolve rules" in onnxjs["reasons"][0]
    assert _ep(doc, "webgl")["verdict"] == "runs fully"  # onnxruntime-web's WebGL has it


def test_reduce_mean_with_an_axes_input_is_refused_by_onnxjs(tmp_path):
    at18 = run_cli("check", reduce_mean(tmp_path / "r18.onnx", 18), "--ep", "onnxjs",
                   "--json").json()
    at17 = run_cli("check", reduce_mean(tmp_path / "r17.onnx", 17), "--ep", "onnxjs",
                   "--json").json()
    assert _ep(at18, "onnxjs")["verdict"] == "cannot"
    assert _ep(at17, "onnxjs")["verdict"] == "runs fully"


def test_browser_backends_are_checked_only_when_named(tmp_path):
    path = reduce_mean(tmp_path / "r.onnx", 17)
    doc = run_cli("check", path, "--json").json()
    assert [e["ep"] for e in doc["eps"]] == ["cpu", "xnnpack", "nnapi", "coreml"]
    r = run_cli("check", path, "--ep", "webgl2")
    assert r.code == 2 and "wasm, webgl, webgpu, onnxjs" in r.stderr
