"""What the page's console says becomes notes a person can read, and a provider onnxruntime-web
silently set aside is reported as the fallback it is."""

from __future__ import annotations

import json

from edgepack.web.browser import console_notes
from tests.conftest import run_cli
from tests.web.browser_bundles import need_browser

_WARNING = ("\x1b[0;93m2026-11-30 07:00:15.320275 [W:onnxruntime:, graph_partitioner.cc:224 "
            "GetCapabilityForEP] WebGpuExecutionProvider cannot be used with this model due to "
            "its ONNX opset not being supported by the layout transformer.\x1b[m")


def test_console_lines_lose_colour_codes_and_stamps_and_are_said_once():
    notes, fallback = console_notes([_WARNING, _WARNING, "plain error"])
    assert notes == [
        "console: WebGpuExecutionProvider cannot be used with this model due to its ONNX opset "
        "not being supported by the layout transformer.",
        "console: plain error",
    ]
    assert "\x1b" not in " ".join(notes)
    assert fallback is not None and "WebGpu provider cannot be used" in fallback


def test_a_plain_warning_is_no_fallback():
    _, fallback = console_notes(["\x1b[0;93m2026-11-30 07:00:15.3 [W:onnxruntime:, x.cc:1 F] "
                                 "Transpose optimizer failed: Unsupported ONNX opset: 6\x1b[m"])
    assert fallback is None


def test_webgpu_set_aside_by_onnxruntime_is_a_fallback_and_fails_strict_ep(conv_bundle):
    """The Conv2d bundle is opset 6: onnxruntime-web's WebGPU provider takes no node of it and
    the CPU runs everything. Reported as webgpu, --strict-ep could never catch it."""
    need_browser()
    r = run_cli("deploy", conv_bundle, "--device", "browser", "--ep", "webgpu", "--json")
    assert r.code == 0, r.stderr
    runner = json.loads(r.stdout)["sets"][0]["runner"]
    assert runner["ep_used"] == "wasm"
    assert runner["ep_fallback_reason"]
    strict = run_cli("deploy", conv_bundle, "--device", "browser", "--ep", "webgpu",
                     "--strict-ep")
    assert strict.code == 3
    assert "wasm" in strict.stderr and "Traceback" not in strict.stderr
