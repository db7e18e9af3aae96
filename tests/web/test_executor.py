"""The browser as a device through the executor seam (edgepack.web.executor), real Chromium:
outputs where a device's pulled outputs land, the runner's report filled from the page, the
browser stopped on every path; and every other executor refusing a browser's provider."""

from __future__ import annotations

import numpy as np
import pytest

from edgepack.bundle import load_bundle
from edgepack.errors import EdgepackError, ExitCode
from edgepack.executors import (
    HostExecutor,
    NativeExecutor,
    PythonExecutor,
    QemuExecutor,
    run_bundle,
)
from edgepack.runner.result import BROWSER_EPS, EXECUTION_PROVIDERS, RunConfig
from edgepack.web.executor import RSS_RENDERER, BrowserExecutor
from tests.web.browser_bundles import left_running, need_browser, own_children


def test_a_bundle_runs_in_the_browser_and_its_outputs_land_like_a_devices(conv_bundle,
                                                                           tmp_path):
    from edgepack.compare import read_outputs
    from edgepack.tensors import read_tensor

    need_browser()
    bundle = load_bundle(conv_bundle)
    before = own_children()
    result = run_bundle(BrowserExecutor(), bundle,
                        RunConfig(warmup=1, iterations=4, threads=2), tmp_path)
    assert result.passed, [v.reason for v in result.verdicts]
    d = result.device
    assert (d.serial, d.kind, d.state, d.abis) == ("browser", "browser", "device", ["wasm32"])
    assert d.model.startswith("Chromium 1") and d.soc  # the host's CPU, as for any device
    assert result.engine == "browser" and result.runner_target is None
    r = result.sets[0].runner
    assert r.runner_version.startswith("onnxruntime-web 1.")
    assert (r.ep_requested, r.ep_used, r.ep_fallback_reason) == ("cpu", "cpu", None)
    assert result.ep_fallback is None  # cpu is the browser's wasm: no fallback to warn of
    assert r.threads == 2 and r.threads_used == 2  # WASM threads: the page is isolated
    assert len(r.latencies_ms) == 4 and r.session_create_ms > 0 and r.first_inference_ms > 0
    assert r.peak_rss_scope == RSS_RENDERER and r.peak_rss_kb_end > 10_000
    assert r.extra["runtime"] == "onnxruntime-web" and r.extra["web_ep"] == "wasm"
    assert [t.name for t in r.outputs] == [o.name for o in bundle.manifest.outputs]
    # Exactly where a device's pulled outputs land, named as judge() reads them.
    out = tmp_path / bundle.manifest.test_sets[0].dir
    assert sorted(p.name for p in out.iterdir()) == ["output_0.pb"]
    name, array = read_tensor(out / "output_0.pb")
    assert name == bundle.manifest.outputs[0].name
    expected = bundle.expected_outputs(0)[name]
    np.testing.assert_allclose(array, expected, rtol=1e-4, atol=1e-5)
    assert set(read_outputs(out, [name])) == {name}
    assert any("wasm backend" in n for n in result.notes)
    assert not left_running(before), "the browser outlived its prepare()"


def test_a_set_that_fails_stops_the_browser_all_the_same(erf_bundle, tmp_path):
    need_browser()
    before = own_children()
    with pytest.raises(EdgepackError) as info:
        run_bundle(BrowserExecutor(), load_bundle(erf_bundle),
                   RunConfig(warmup=0, iterations=1, ep="onnxjs"), tmp_path)
    assert info.value.exit_code == ExitCode.DEVICE
    assert "Erf" in info.value.message and "\n" not in info.value.message
    assert not left_running(before), "a failed set left Chromium or Playwright running"


def test_the_browser_refuses_what_it_cannot_do_before_starting(conv_bundle):
    """No Chromium is started for a configuration the browser cannot take."""
    bundle = load_bundle(conv_bundle)
    before = own_children()
    for config, words in [
        (RunConfig(ep="nnapi"), "--ep nnapi runs in the native runner"),
        (RunConfig(ep="xnnpack"), "--ep xnnpack runs in the native runner"),
        (RunConfig(cpu_affinity="1"), "Chromium's threads cannot be pinned"),
    ]:
        with pytest.raises(EdgepackError) as info:
            with BrowserExecutor().prepare(bundle, config):
                pytest.fail("prepared")
        assert info.value.exit_code == ExitCode.BAD_INPUT and words in info.value.message
    assert own_children() == before


def test_every_native_executor_refuses_a_browser_ep(conv_bundle, virtual_device):
    """Without the refusal the Python engine raised KeyError: 'wasm' (a traceback), and the
    native runner and devices were handed a provider they never heard of."""
    from edgepack.deploy import DeviceExecutor
    from edgepack.devices.adb import AdbDevice

    bundle = load_bundle(conv_bundle)
    device = AdbDevice(virtual_device.serial)
    for ep in BROWSER_EPS:
        for executor in (PythonExecutor(), NativeExecutor(), HostExecutor("python"),
                         HostExecutor("auto"), QemuExecutor(), DeviceExecutor(device)):
            with pytest.raises(EdgepackError) as info:
                with executor.prepare(bundle, RunConfig(ep=ep)):
                    pytest.fail(f"{executor} prepared --ep {ep}")
            assert info.value.exit_code == ExitCode.BAD_INPUT
            assert info.value.message == f"--ep {ep} runs in a browser: pass --device browser"


def test_browser_eps_are_the_browsers_own():
    from edgepack.web.browser import WEB_EPS

    assert BROWSER_EPS == WEB_EPS and set(BROWSER_EPS) <= set(EXECUTION_PROVIDERS)


def test_a_bundle_without_an_onnx_graph_is_refused(tmp_path):
    from tests.conftest import onnx_test_data, run_cli

    src = onnx_test_data() / "pytorch-converted" / "test_Conv2d"
    r = run_cli("pack", src / "model.onnx", "-o", tmp_path / "ort", "--format", "ort",
                "--inputs-from", src / "test_data_set_0")
    assert r.code == 0, r.stderr
    with pytest.raises(EdgepackError) as info:
        with BrowserExecutor().prepare(load_bundle(tmp_path / "ort"), RunConfig()):
            pytest.fail("prepared")
    assert info.value.exit_code == ExitCode.BAD_INPUT
    assert "the browser runs ONNX graphs" in info.value.message
