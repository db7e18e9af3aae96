"""export -> pack -> inspect -> run through the CLI, for every example model."""

from __future__ import annotations

import pytest

from tests.conftest import PACK_ARGS, run_cli

EXAMPLES = sorted(PACK_ARGS)


@pytest.mark.parametrize("name", EXAMPLES)
def test_inspect_shows_the_bundle(name, bundles):
    result = run_cli("inspect", bundles[name], "--json")
    assert result.code == 0, result.stderr
    doc = result.json()
    manifest = doc["manifest"]
    assert doc["verified"] is True
    assert manifest["schema_version"] == 2
    paths = {f["path"] for f in manifest["files"]}
    assert {"predict.onnx", "init.bin", "test_data_set_0/input_0.pb",
            "test_data_set_0/output_0.pb"} <= paths
    assert manifest["outputs"] and manifest["inputs"]
    if name == "iris_forest":
        assert manifest["provenance"]["kind"] == "onnx"
    else:
        assert manifest["provenance"]["kind"] == "edgepack-export"
        assert manifest["provenance"]["export"]["exporter"] == "dynamo"
    human = run_cli("inspect", bundles[name])
    assert human.code == 0 and "predict.onnx" in human.stdout and "init.bin" in human.stdout


@pytest.mark.parametrize("name", EXAMPLES)
def test_run_on_host_passes(name, bundles):
    result = run_cli("run", bundles[name], "--device", "host", "--engine", "python",
                     "--iterations", "3", "--json")
    assert result.code == 0, result.stderr
    doc = result.json()
    assert doc["engine"] == "python"
    assert len(doc["sets"][0]["runner"]["latencies_ms"]) == 3
    for s in doc["sets"]:
        for v in s["verdicts"]:
            assert v["passed"], v
            # Same library, same thread count, deterministic kernels: identical outputs.
            assert v["metrics"]["max_abs_error"] == 0.0
            assert v["metrics"]["snr_db"] == "inf"
    human = run_cli("run", bundles[name], "--engine", "python", "--iterations", "2")
    assert human.code == 0 and "PASS" in human.stdout


def test_image_inputs_are_recorded(bundles):
    doc = run_cli("inspect", bundles["super_resolution"], "--json").json()["manifest"]
    source = doc["test_sets"][0]["inputs"][0]["source"]
    assert source["kind"] == "image" and source["file"] == "scene_320x240.jpg"
    # The JPEG is 320x240 and the model fixes 224x224: pack resized it and says so.
    assert source["preprocess"]["resize"] == [224, 224]
    assert source["preprocess"]["color"] == "y"
    mnist = run_cli("inspect", bundles["mnist"], "--json").json()["manifest"]
    assert len(mnist["test_sets"]) == 2
    assert [s["inputs"][0]["source"]["file"] for s in mnist["test_sets"]] == [
        "digit_7.png", "digit_0.png"]


def test_class_scores_get_top_k_agreement(bundles):
    doc = run_cli("run", bundles["resnet20"], "--engine", "python", "--json").json()
    metrics = doc["sets"][0]["verdicts"][0]["metrics"]
    assert metrics["top1_agreement"] == 1.0 and metrics["top5_agreement"] == 1.0


def test_report_file_is_written(bundles, tmp_path):
    report = tmp_path / "report.json"
    result = run_cli("run", bundles["iris_forest"], "--engine", "python", "--report", report)
    assert result.code == 0
    import json

    doc = json.loads(report.read_text())
    assert doc["bundle_name"] == "iris_forest" and doc["device"]["serial"] == "host"
