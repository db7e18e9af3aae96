"""bfloat16, int4 and float8 tensors, and a model with no inputs, on a virtual device: the
device's runner reads and writes the packed and numpy-less types and runs with zero inputs, and
the pulled outputs compare with the host's."""

from __future__ import annotations

from tests.conftest import run_cli
from tests.runner.test_dtypes import constant_model, typed_model


def test_bfloat16_int4_float8_model_passes_on_the_device(host_runner, virtual_device, tmp_path):
    bundle = tmp_path / "typed"
    r = run_cli("pack", typed_model(tmp_path / "typed.onnx"), "-o", bundle)
    assert r.code == 0, r.stderr
    r = run_cli("deploy", bundle, "--device", virtual_device.serial, "--iterations", "1",
                "--json")
    assert r.code == 0, r.stderr
    doc = r.json()
    assert doc["engine"] == "native"
    s = doc["sets"][0]
    assert [t["dtype"] for t in s["runner"]["inputs"]] == ["float32", "bfloat16"]
    assert [t["dtype"] for t in s["runner"]["outputs"]] == \
        ["bfloat16", "int4", "float8_e4m3fn", "bfloat16"]
    assert all(v["passed"] for v in s["verdicts"]), s["verdicts"]


def test_a_model_with_no_inputs_passes_on_the_device(host_runner, virtual_device, tmp_path):
    bundle = tmp_path / "const"
    r = run_cli("pack", constant_model(tmp_path / "const.onnx"), "-o", bundle)
    assert r.code == 0, r.stderr
    r = run_cli("deploy", bundle, "--device", virtual_device.serial, "--iterations", "1",
                "--json")
    assert r.code == 0, r.stderr
    s = r.json()["sets"][0]
    assert s["runner"]["inputs"] == []
    assert [v["passed"] for v in s["verdicts"]] == [True]
