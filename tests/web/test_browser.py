"""The browser itself (issue 17): onnxruntime-web and ONNX.js in headless Chromium, for real.

One browser serves the module (open_browser is slow to start, each run opens its own page);
every run's outputs are checked against onnxruntime on the host.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import convert_model_to_external_data

from edgepack.errors import EdgepackError, ExitCode
from edgepack.web.browser import (
    ORT_WEB_MAX_IR,
    WebRunError,
    open_browser,
    renderer_pids,
)


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def _host(model: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    return ort.InferenceSession(str(model)).run(None, feeds)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("web-models")
    rng = np.random.default_rng(7)
    out: dict[str, Path] = {}

    # Add, at onnx's default IR (14 with onnx 1.23): above what onnxruntime-web 1.30 accepts.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 3])
    g = helper.make_graph([helper.make_node("Add", ["x", "y"], ["z"])], "add", [x, y], [z])
    out["add"] = _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]),
                       d / "add.onnx")

    # A small conv net whose weights live in init.bin, as a bundle keeps them.
    conv_dir = d / "conv"
    conv_dir.mkdir()
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "B")
    xi = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])
    yo = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])
    g = helper.make_graph([helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
                           helper.make_node("Relu", ["c"], ["y"])], "conv", [xi], [yo], [w, b])
    conv = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    convert_model_to_external_data(conv, all_tensors_to_one_file=True, location="init.bin",
                                   size_threshold=0)
    out["conv"] = _save(conv, conv_dir / "predict.onnx")

    # int64 and bool in and out.
    a = helper.make_tensor_value_info("a", TensorProto.INT64, [4])
    c = helper.make_tensor_value_info("c", TensorProto.BOOL, [4])
    o = helper.make_tensor_value_info("o", TensorProto.INT64, [4])
    n = helper.make_tensor_value_info("n", TensorProto.BOOL, [4])
    g = helper.make_graph([helper.make_node("Add", ["a", "a"], ["s"]),
                           helper.make_node("Where", ["c", "s", "a"], ["o"]),
                           helper.make_node("Not", ["c"], ["n"])], "intbool", [a, c], [o, n])
    out["intbool"] = _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)],
                                             ir_version=8), d / "intbool.onnx")

    # Enough work per run that a second WASM thread has something to do.
    w2 = numpy_helper.from_array(rng.standard_normal((64, 64, 3, 3)).astype(np.float32), "W")
    xi = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 32, 32])
    yo = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64, 32, 32])
    g = helper.make_graph([helper.make_node("Conv", ["x", "W"], ["y"], pads=[1, 1, 1, 1])],
                          "wide", [xi], [yo], [w2])
    out["wide"] = _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)],
                                          ir_version=8), d / "wide.onnx")
    return out


# ------------------------------------------------------------------------ results


def test_add_equals_host_exactly_and_ir14_is_lowered(browser, models):
    rng = np.random.default_rng(1)
    sets = [{"x": rng.standard_normal((2, 3)).astype(np.float32),
             "y": rng.standard_normal((2, 3)).astype(np.float32)} for _ in range(2)]
    assert onnx.load(str(models["add"])).ir_version > ORT_WEB_MAX_IR
    run = browser.run(models["add"], sets, warmup=2, iterations=5)
    assert run.runtime == "onnxruntime-web" and run.runtime_version == "1.30.0"
    assert run.ep_used == "wasm" and len(run.latencies_ms) == 5
    assert run.session_create_ms > 0 and run.first_inference_ms > 0
    assert any("IR version 14 lowered to 13" in note for note in run.notes)
    for feeds, got in zip(sets, run.outputs, strict=True):
        assert list(got) == ["z"]
        np.testing.assert_array_equal(got["z"], _host(models["add"], feeds)[0])
    assert run.js_heap_bytes and run.js_heap_bytes > 0
    assert run.peak_rss_kb and run.peak_rss_kb > 10_000


def test_min_seconds_iterates_until_that_long(browser, models):
    a = np.ones((2, 3), np.float32)
    run = browser.run(models["add"], [{"x": a, "y": a}], min_seconds=0.3, iterations=1)
    assert len(run.latencies_ms) > 1


def test_conv_with_init_bin_matches_host(browser, models, tmp_path):
    # The external data under another name than the model says: external_data= names it.
    moved = tmp_path / "weights.bin"
    moved.write_bytes((models["conv"].parent / "init.bin").read_bytes())
    model = tmp_path / "predict.onnx"
    model.write_bytes(models["conv"].read_bytes())
    x = np.random.default_rng(2).standard_normal((1, 3, 16, 16)).astype(np.float32)
    want = _host(models["conv"], {"x": x})[0]
    run = browser.run(model, [{"x": x}], external_data=moved)
    got = run.outputs[0]["y"]
    assert got.shape == want.shape and got.dtype == np.float32
    # Another kernel's summation order: within 1e-6 of the largest value.
    assert np.abs(got - want).max() <= 1e-6 * np.abs(want).max()


def test_int64_and_bool_inputs_and_outputs(browser, models):
    feeds = {"a": np.array([1, -2, 2**40, 5], np.int64),
             "c": np.array([True, False, True, False])}
    run = browser.run(models["intbool"], [feeds])
    want = _host(models["intbool"], feeds)
    assert run.outputs[0]["o"].dtype == np.int64 and run.outputs[0]["n"].dtype == np.bool_
    np.testing.assert_array_equal(run.outputs[0]["o"], want[0])
    np.testing.assert_array_equal(run.outputs[0]["n"], want[1])


def test_threads_one_and_two(browser, models):
    x = np.random.default_rng(3).standard_normal((1, 64, 32, 32)).astype(np.float32)
    one = browser.run(models["wide"], [{"x": x}], threads=1)
    two = browser.run(models["wide"], [{"x": x}], threads=2)
    assert (one.threads, one.threads_used) == (1, 1)
    assert (two.threads, two.threads_used) == (2, 2)
    default = browser.run(models["add"], [{"x": np.ones((2, 3), np.float32),
                                           "y": np.ones((2, 3), np.float32)}], threads=0)
    cores = browser.info.hardware_concurrency
    assert default.threads_used == min(4, -(-cores // 2))
    assert any(note.startswith("threads 0: onnxruntime-web chose") for note in default.notes)
    want = _host(models["wide"], {"x": x})[0]
    for run in (one, two):
        assert np.abs(run.outputs[0]["y"] - want).max() <= 1e-5 * np.abs(want).max()


def test_onnxjs_runs_an_inlined_copy_of_external_data(browser, models):
    x = np.random.default_rng(4).standard_normal((1, 3, 16, 16)).astype(np.float32)
    run = browser.run(models["conv"], [{"x": x}], ep="onnxjs")
    assert run.runtime == "onnxjs" and run.ep_used == "onnxjs"
    assert any("weights inlined" in note for note in run.notes)
    want = _host(models["conv"], {"x": x})[0]
    assert np.abs(run.outputs[0]["y"] - want).max() <= 1e-4 * np.abs(want).max()


def test_feeds_reach_onnxjs_by_name_not_by_dict_order(browser, tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])
    g = helper.make_graph([helper.make_node("Sub", ["x", "y"], ["d"])], "sub", [x, y],
                          [helper.make_tensor_value_info("d", TensorProto.FLOAT, [3])])
    model = _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 9)],
                                    ir_version=4), tmp_path / "sub.onnx")
    feeds = {"y": np.array([1, 2, 3], np.float32), "x": np.array([10, 20, 30], np.float32)}
    run = browser.run(model, [feeds], ep="onnxjs")
    np.testing.assert_array_equal(run.outputs[0]["d"], [9, 18, 27])


def test_an_op_the_runtime_lacks_is_unsupported_op(browser, tmp_path):
    g = helper.make_graph([helper.make_node("Erf", ["x"], ["y"])], "erf",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    model = _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)],
                                    ir_version=8), tmp_path / "erf.onnx")
    with pytest.raises(WebRunError) as err:
        browser.run(model, [{"x": np.zeros(4, np.float32)}], ep="onnxjs")
    assert err.value.kind == "unsupported_op" and "Erf" in err.value.message


def test_webgl_runs_on_swiftshader(browser, models):
    if not browser.info.webgl:
        pytest.skip("this Chromium offers no WebGL")
    x = np.random.default_rng(5).standard_normal((1, 3, 16, 16)).astype(np.float32)
    run = browser.run(models["conv"], [{"x": x}], ep="webgl")
    assert run.ep_used == "webgl" and run.threads_used is None
    assert any("software renderer" in note for note in run.notes)
    want = _host(models["conv"], {"x": x})[0]
    assert np.abs(run.outputs[0]["y"] - want).max() <= 1e-4 * np.abs(want).max()


def test_webgpu_runs_or_says_why_not(browser, models):
    a = np.ones((2, 3), np.float32)
    try:
        run = browser.run(models["add"], [{"x": a, "y": a}], ep="webgpu")
    except WebRunError as err:
        assert err.kind == "ep_unavailable" and "webgpu" in err.message
        assert browser.info.webgpu is None
    else:
        assert browser.info.webgpu and run.ep_used == "webgpu"
        np.testing.assert_array_equal(run.outputs[0]["z"], a + a)


def test_a_model_larger_than_wasm32_is_refused_before_loading(browser, tmp_path):
    w = numpy_helper.from_array(np.zeros(4, np.float32), "W")
    g = helper.make_graph([helper.make_node("Add", ["x", "W"], ["y"])], "big",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    convert_model_to_external_data(model, location="init.bin", size_threshold=0)
    path = _save(model, tmp_path / "big.onnx")
    with open(tmp_path / "init.bin", "ab") as fh:  # sparse: costs no disk
        fh.truncate((4 << 30) + 1)
    with pytest.raises(WebRunError) as err:
        browser.run(path, [{"x": np.zeros(4, np.float32)}])
    assert err.value.kind == "too_large" and "wasm32" in err.value.message


def test_a_dtype_the_runtime_lacks_is_one_line(browser, models):
    feeds = {"a": np.array([1, 2, 3, 4], np.int64), "c": np.ones(4, bool)}
    with pytest.raises(WebRunError) as err:
        browser.run(models["intbool"], [feeds], ep="onnxjs")
    assert "int64" in err.value.message and "\n" not in err.value.message
    assert err.value.exit_code == ExitCode.DEVICE


def test_ir_lowering_refused_when_the_model_uses_ir14_types(browser, tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT6E2M3, [2])
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "f6", [x],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT6E2M3, [2])])
    model = _save(helper.make_model(g, ir_version=14), tmp_path / "f6.onnx")
    with pytest.raises(WebRunError) as err:
        browser.run(model, [{"x": np.zeros(2, np.float32)}])
    assert err.value.kind == "model_load" and "FLOAT6" in err.value.message


def test_unknown_ep_is_bad_input(browser, models):
    with pytest.raises(EdgepackError) as err:
        browser.run(models["add"], [{}], ep="cuda")
    assert err.value.exit_code == ExitCode.BAD_INPUT


# ------------------------------------------------------------------------ failures


def test_a_crashed_page_is_one_line_and_the_browser_goes_on(browser, models):
    a = np.ones((2, 3), np.float32)

    def crash() -> None:
        # Every renderer alive once the page is running: earlier runs' pages are closed, so
        # these are this run's page and perhaps the spare renderer Chromium keeps ready.
        time.sleep(4.0)
        for pid in renderer_pids(browser.info.pid):
            os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=crash)
    killer.start()
    try:
        with pytest.raises(WebRunError) as err:
            browser.run(models["add"], [{"x": a, "y": a}], min_seconds=20, timeout_s=60)
    finally:
        killer.join()
    assert err.value.kind == "page_crash" and "\n" not in err.value.message
    assert err.value.exit_code == ExitCode.DEVICE
    run = browser.run(models["add"], [{"x": a, "y": a}])
    np.testing.assert_array_equal(run.outputs[0]["z"], a + a)


def test_a_hung_page_times_out(browser, models):
    a = np.ones((2, 3), np.float32)
    t0 = time.monotonic()
    with pytest.raises(WebRunError) as err:
        browser.run(models["add"], [{"x": a, "y": a}], min_seconds=60, timeout_s=4)
    assert err.value.kind == "timeout" and time.monotonic() - t0 < 20
    assert browser.run(models["add"], [{"x": a, "y": a}]).outputs[0]["z"][0, 0] == 2


def test_a_page_stuck_in_one_call_is_stopped(browser, tmp_path):
    # A Loop of 10^9 trips: one inference that never yields, so only the watchdog can end it.
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond"], ["cond_out"]),
         helper.make_node("Add", ["v", "one"], ["v_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1])],
        [numpy_helper.from_array(np.ones(1, np.float32), "one")])
    g = helper.make_graph(
        [helper.make_node("Loop", ["trips", "", "x"], ["y"], body=body)], "spin",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [numpy_helper.from_array(np.array(10**9, np.int64), "trips")])
    model = _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)],
                                    ir_version=8), tmp_path / "spin.onnx")
    t0 = time.monotonic()
    with pytest.raises(WebRunError) as err:
        browser.run(model, [{"x": np.zeros(1, np.float32)}], timeout_s=5)
    assert err.value.kind == "timeout" and time.monotonic() - t0 < 25


def test_no_chromium_is_one_line_exit_3(tmp_path):
    with pytest.raises(EdgepackError) as err:
        with open_browser(chromium=str(tmp_path / "no-chromium")):
            pass
    assert err.value.exit_code == ExitCode.DEVICE
    assert "chromium" in err.value.message.lower() and "\n" not in err.value.message
