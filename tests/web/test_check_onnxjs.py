"""What `check --ep onnxjs` predicts, against ONNX.js itself in real headless Chromium: the
fast-neural-style net fails as exported (opset 9) and runs after `pack --ops-allowed onnxjs`,
with outputs close to the host's; ReduceMean with an axes input fails, with the attribute
runs. Small inputs (1x3x32x32) so the module takes seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from edgepack.web.browser import WebRunError
from tests.conftest import EXAMPLES, run_cli
from tests.web.test_check_backends import _f32, _model, reduce_mean


@pytest.fixture(scope="module")
def fns(tmp_path_factory) -> tuple[Path, Path]:
    """The net as exported (opset 9) and its bundle packed for ONNX.js."""
    d = tmp_path_factory.mktemp("fns")
    model = d / "fns.onnx"
    r = run_cli("export", EXAMPLES / "fast_neural_style.py:make_model", "--exporter",
                "torchscript", "--opset", "9", "--input", "input:1x3x32x32:float32",
                "--output-name", "output", "-o", model)
    assert r.code == 0, r.stderr + r.stdout
    r = run_cli("pack", model, "-o", d / "b", "--random-sets", "1", "--ops-allowed", "onnxjs")
    assert r.code == 0, r.stderr
    return model, d / "b"


def _check(path: Path, ep: str = "onnxjs") -> str:
    return run_cli("check", path, "--ep", ep, "--json").json()["eps"][0]["verdict"]


def test_fast_neural_style_fails_on_onnxjs_as_exported(browser, fns):
    model, _ = fns
    assert _check(model) == "cannot"
    x = np.random.default_rng(0).random((1, 3, 32, 32), np.float32)
    with pytest.raises(WebRunError) as err:
        browser.run(model, [{"input": x}], ep="onnxjs")
    assert err.value.kind == "unsupported_op" and "Upsample" in err.value.message


def test_fast_neural_style_runs_on_onnxjs_after_the_rewrite(browser, fns):
    original, bundle = fns
    assert _check(bundle) == "runs fully"
    x = np.random.default_rng(1).random((1, 3, 32, 32), np.float32)
    run = browser.run(bundle / "predict.onnx", [{"input": x}], ep="onnxjs",
                      external_data=bundle / "init.bin")
    assert run.runtime == "onnxjs" and run.runtime_version == "0.1.8"
    host = ort.InferenceSession(str(original)).run(None, {"input": x})[0]
    got = run.outputs[0]["output"]
    assert got.shape == host.shape == (1, 3, 32, 32)
    # WebGL (SwiftShader) float32 against onnxruntime's CPU kernels: measured 4e-5 at 64x64.
    np.testing.assert_allclose(got, host, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(("opset", "verdict"), [(17, "runs fully"), (18, "cannot")])
def test_reduce_mean_on_onnxjs_is_what_check_says(browser, tmp_path, opset, verdict):
    model = reduce_mean(tmp_path / f"r{opset}.onnx", opset)
    assert _check(model) == verdict
    x = np.random.default_rng(2).random((1, 2, 4, 4), np.float32)
    if verdict == "cannot":
        with pytest.raises(WebRunError, match="invalid inputs"):
            browser.run(model, [{"x": x}], ep="onnxjs")
        return
    run = browser.run(model, [{"x": x}], ep="onnxjs")
    np.testing.assert_allclose(run.outputs[0]["y"], x.mean(axis=(2, 3), keepdims=True),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("opset", "verdict"), [(8, "runs fully"), (9, "cannot")])
def test_upsample_on_onnxruntime_webs_webgl_is_what_check_says(browser, tmp_path, opset,
                                                               verdict):
    """Its table has an Upsample-9 rule, yet that kernel fails every run: check says so."""
    x = _f32("x", [1, 2, 3, 4])
    y = _f32("y", [1, 2, 6, 8])
    if opset >= 9:
        scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
        node = helper.make_node("Upsample", ["x", "scales"], ["y"], mode="nearest")
        model = _model([node], [x], [y], opset, tmp_path / "up.onnx", [scales])
    else:
        node = helper.make_node("Upsample", ["x"], ["y"], mode="nearest",
                                scales=[1.0, 1.0, 2.0, 2.0])
        model = _model([node], [x], [y], opset, tmp_path / "up.onnx")
    assert _check(model, "webgl") == verdict
    feeds = {"x": np.random.default_rng(3).random((1, 2, 3, 4), np.float32)}
    if verdict == "cannot":
        with pytest.raises(WebRunError, match="Invalid shape"):
            browser.run(model, [feeds], ep="webgl")
        return
    run = browser.run(model, [feeds], ep="webgl")
    np.testing.assert_array_equal(run.outputs[0]["y"],
                                  feeds["x"].repeat(2, axis=2).repeat(2, axis=3))
