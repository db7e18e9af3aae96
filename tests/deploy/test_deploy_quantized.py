"""Quantized and ORT-format bundles of the tutorial models, packed, run on the host runner and
deployed on the virtual device (issue 13 parts 3 and 4)."""

from __future__ import annotations

import pytest

from tests.conftest import PACK_ARGS, run_cli
from tests.deploy.test_deploy import DEVICE_ROOT, deploy


@pytest.mark.parametrize(("name", "quantize", "fmt"), [
    ("resnet20", "int8", "ort"),
    ("resnet20", "fp16", "onnx"),
    ("super_resolution", "int8", "onnx"),
    ("super_resolution", "fp16", "ort"),
])
def test_quantized_examples_pass_on_the_device(name, quantize, fmt, exported, host_runner,
                                               virtual_device, tmp_path):
    out = tmp_path / name
    r = run_cli("pack", exported[name], "-o", out, *PACK_ARGS[name], "--quantize", quantize,
                "--format", fmt, "--json")
    assert r.code == 0, r.stderr
    q = r.json()["manifest"]["quantization"]
    (cost,) = q["cost"]
    assert cost["cosine"] > 0.99 and cost["snr_db"] > 15  # a working quantization, not noise
    if name == "resnet20":
        assert cost["top1_agreement"] is not None
    else:
        assert cost["top1_agreement"] is None  # an image, not class scores

    r = run_cli("run", out, "--engine", "native", "--iterations", "2", "--json")
    assert r.code == 0, r.stderr

    r = deploy(out, virtual_device.serial)
    assert r.code == 0, r.stderr
    doc = r.json()
    assert all(v["passed"] for s in doc["sets"] for v in s["verdicts"])
    # The run says what the quantization cost, beside the verdicts against its own outputs.
    assert any(n.startswith(f"quantized {quantize}: cost against the float model")
               for n in doc["notes"])
    pushed = {p.name for p in (virtual_device.root / DEVICE_ROOT / "bundles" / name).iterdir()}
    model = "predict.ort" if fmt == "ort" else "predict.onnx"
    assert model in pushed
    # Only what the runner reads: no float reference, no ONNX file next to an ORT one.
    assert "reference" not in pushed and "required_operators.config" not in pushed
    if fmt == "ort":
        assert not {"predict.onnx", "init.bin"} & pushed


def test_an_ort_repack_removes_the_onnx_files_from_the_device(exported, host_runner,
                                                              virtual_device, tmp_path):
    out = tmp_path / "resnet20"
    assert run_cli("pack", exported["resnet20"], "-o", out).code == 0
    assert deploy(out, virtual_device.serial).code == 0
    on_device = virtual_device.root / DEVICE_ROOT / "bundles" / "resnet20"
    assert (on_device / "init.bin").is_file()
    assert run_cli("pack", exported["resnet20"], "-o", out, "--format", "ort", "--force").code == 0
    r = deploy(out, virtual_device.serial)
    assert r.code == 0, r.stderr
    assert (on_device / "predict.ort").is_file()
    assert not (on_device / "init.bin").exists() and not (on_device / "predict.onnx").exists()
