"""`--device browser` through the real entry point: deploy, bench (beside the host), ab,
diagnose, lab.toml; and every refusal of a provider on the wrong kind of device, exit 2."""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import EXAMPLES, run_cli
from tests.web.browser_bundles import left_running, need_browser, own_children


def test_deploy_to_the_browser_compares_outputs_and_reports_the_device(conv_bundle, tmp_path):
    need_browser()
    before = own_children()
    outputs, report = tmp_path / "out", tmp_path / "report.json"
    r = run_cli("deploy", conv_bundle, "--device", "browser", "--iterations", "3",
                "--threads", "2", "--outputs", outputs, "--report", report, "--json")
    assert r.code == 0, r.stderr
    doc = r.json()
    assert doc == json.loads(report.read_text())
    device = doc["device"]
    assert (device["serial"], device["kind"], device["abis"]) == ("browser", "browser",
                                                                  ["wasm32"])
    assert device["model"].startswith("Chromium ") and device["soc"]
    assert doc["engine"] == "browser" and doc["config"]["ep"] == "cpu"
    runner = doc["sets"][0]["runner"]
    assert runner["runner_version"].startswith("onnxruntime-web ")
    assert runner["ep_used"] == "cpu" and runner["threads_used"] == 2
    assert runner["peak_rss_scope"] == "renderer process" and runner["peak_rss_kb_end"] > 0
    assert len(runner["latencies_ms"]) == 3 and runner["session_create_ms"] > 0
    assert all(v["passed"] for s in doc["sets"] for v in s["verdicts"])
    # --outputs: the browser's outputs kept as a device's are.
    assert sorted(p.name for p in (outputs / "test_data_set_0").iterdir()) == [
        "output_0.npy", "output_0.pb"]
    assert not left_running(before)

    human = run_cli("deploy", conv_bundle, "--device", "browser", "--iterations", "2",
                    "--ep", "wasm")
    assert human.code == 0, human.stderr
    assert "conv on browser (Chromium " in human.stdout and "engine browser" in human.stdout
    assert "PASS" in human.stdout and "pushed" not in human.stderr


@pytest.mark.parametrize("args, words", [
    (["deploy", "{b}", "--device", "browser", "--ep", "nnapi"],
     "--ep nnapi runs in the native runner, not in a browser"),
    (["deploy", "{b}", "--device", "browser", "--ep", "xnnpack"],
     "--ep xnnpack runs in the native runner, not in a browser"),
    (["deploy", "{b}", "--ep", "wasm"], "--ep wasm runs in a browser: pass --device browser"),
    (["deploy", "{b}", "--device", "SERIAL", "--ep", "webgl"],
     "--ep webgl runs in a browser: pass --device browser"),
    (["run", "{b}", "--ep", "wasm"], "--ep wasm runs in a browser: pass --device browser"),
    (["run", "{b}", "--ep", "onnxjs", "--engine", "python"],
     "--ep onnxjs runs in a browser: pass --device browser"),
    (["deploy", "{b}", "--device", "browser", "--cpu-affinity", "1"],
     "Chromium's threads cannot be pinned"),
    (["deploy", "{b}", "--device", "browser", "--keep"], "--keep is for adb devices"),
    (["deploy", "{b}", "--device", "browser", "--optimization", "basic"],
     "--optimization basic: the browser's page builds onnxruntime-web sessions with 'all'"),
    (["bench", "{b}", "--device", "host", "--ep", "wasm"], "--ep wasm runs in a browser"),
    (["bench", "{b}", "--device", "host,browser", "--ep", "cpu,wasm"],
     "--ep wasm runs in a browser"),
    (["bench", "{b}", "--device", "browser", "--ep", "nnapi"],
     "--ep nnapi runs in the native runner, not in the browser"),
    (["bench", "{b}", "--device", "browser", "--cpu-affinity", "1"],
     "Chromium's threads are not pinned"),
    (["ab", "{b}", "{b}", "--device", "host", "--ep", "wasm"], "--ep wasm runs in a browser"),
    (["diagnose", "{b}", "--device", "browser", "--ep", "nnapi"],
     "--ep nnapi runs in the native runner"),
    (["diagnose", "{b}", "--device", "host", "--ep", "wasm"], "--ep wasm runs in a browser"),
])
def test_a_provider_on_the_wrong_kind_of_device_is_bad_input(conv_bundle, tmp_path, args,
                                                             words):
    before = own_children()
    r = run_cli(*[str(conv_bundle) if a == "{b}" else a for a in args],
                *(["--db", tmp_path / "h.db"] if args[0] in ("bench", "ab") else []))
    assert r.code == 2, r.stdout + r.stderr
    assert words in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert own_children() == before  # refused before any browser or runner started


def test_bench_sets_the_host_and_the_browser_side_by_side(conv_bundle, tmp_path):
    need_browser()
    db, reports = tmp_path / "h.db", tmp_path / "reports"
    r = run_cli("bench", conv_bundle, "--device", "host,browser", "--engine", "python",
                "--repeat", "1", "--iterations", "3", "--db", db, "--report-dir", reports,
                "--json")
    assert r.code == 0, r.stderr
    results = {g["serial"]: g for g in r.json()["results"]}
    assert set(results) == {"host", "browser"}
    assert all(g["outcome"] == "pass" and g["config_key"] == "cpu/t1"
               for g in results.values())
    assert results["browser"]["engine"] == "browser"
    assert results["browser"]["model"].startswith("Chromium ")
    assert results["browser"]["peak_rss_scope"] == "renderer process"
    html = (reports / "report.html").read_text()
    assert "browser (Chromium " in html and "host" in html

    stored = run_cli("history", "--db", db, "--device", "browser", "--json")
    assert stored.code == 0, stored.stderr
    [row] = stored.json()["runs"]
    assert row["serial"] == "browser" and row["abi"] == "wasm32" and row["engine"] == "browser"
    assert row["model"].startswith("Chromium ") and row["runner_version"].startswith(
        "onnxruntime-web ")
    assert row["device"]["kind"] == "browser" and len(row["latencies_ms"]) == 3

    text = run_cli("bench", conv_bundle, "--device", "browser,host", "--engine", "python",
                   "--repeat", "1", "--iterations", "2", "--db", db)
    assert text.code == 0, text.stderr
    assert "browser conv" in text.stdout and "host conv" in text.stdout


def test_lab_toml_lists_the_browser_as_a_device(conv_bundle, tmp_path):
    need_browser()
    lab = tmp_path / "lab.toml"
    lab.write_text('[defaults]\niterations = 2\nrepeat = 1\n\n[[devices]]\nserial = "browser"\n')
    r = run_cli("bench", conv_bundle, "--lab", lab, "--db", tmp_path / "h.db", "--json")
    assert r.code == 0, r.stderr
    assert [g["serial"] for g in r.json()["results"]] == ["browser"]

    lab.write_text('[[devices]]\nserial = "browser"\ncpu_affinity = "f0"\n')
    bad = run_cli("bench", conv_bundle, "--lab", lab, "--db", tmp_path / "h.db")
    assert bad.code == 2
    assert f"{lab}:3: devices[0].cpu_affinity: the browser is this machine's Chromium" in \
        bad.stderr


def test_diagnose_in_the_browser_finds_nothing_on_a_clean_bundle(conv_bundle):
    need_browser()
    r = run_cli("diagnose", conv_bundle, "--device", "browser")
    assert r.code == 0, r.stderr
    assert "on browser" in r.stdout and "nothing diverges" in r.stdout


def test_a_model_the_runtime_cannot_run_is_one_line_exit_3(erf_bundle):
    need_browser()
    before = own_children()
    r = run_cli("deploy", erf_bundle, "--device", "browser", "--ep", "onnxjs")
    assert r.code == 3, r.stdout + r.stderr
    [line] = r.stderr.strip().splitlines()
    assert "onnxjs" in line and "Erf" in line and "Traceback" not in r.stderr
    assert not left_running(before)


def test_ab_a_against_itself_in_the_browser(conv_bundle, tmp_path):
    need_browser()
    r = run_cli("ab", conv_bundle, conv_bundle, "--device", "browser", "--iterations", "3",
                "--min-rounds", "2", "--max-rounds", "2", "--max-seconds", "120",
                "--db", tmp_path / "h.db", "--json")
    assert r.code in (0, 1), r.stderr  # the verdict is the statistics', not this test's
    doc = r.json()
    assert json.dumps(doc).count('"browser"') >= 1
    assert "Traceback" not in r.stderr


def test_deploy_to_the_browser_keeps_labels_and_pictures(bundles, tmp_path):
    import numpy as np

    need_browser()
    out, pictures = tmp_path / "out", tmp_path / "pictures"
    r = run_cli("deploy", bundles["resnet20"], "--device", "browser", "--iterations", "1",
                "--outputs", out, "--labels", EXAMPLES / "labels" / "cifar10.txt", "--json")
    assert r.code == 0, r.stderr + r.stdout
    tops = r.json()["top_classes"]
    assert len(tops) == 2 and all(t["device"] and t["host"][0]["index"] ==
                                  t["device"][0]["index"] for t in tops)
    for k in range(2):
        npy = np.load(out / f"test_data_set_{k}" / "output_0.npy", allow_pickle=False)
        assert npy.shape == (1, 10) and tops[k]["device"][0]["score"] == float(npy.max())

    r = run_cli("deploy", bundles["super_resolution"], "--device", "browser", "--iterations",
                "1", "--save-images", pictures, "--json")
    assert r.code == 0, r.stderr + r.stdout
    (saved,) = r.json()["images"]
    for kind in ("host", "device", "diff", "color_host", "color_device"):
        assert (pictures / saved[kind]).is_file(), kind


def test_bench_a_phone_the_host_and_the_browser_in_one_list(conv_bundle, host_runner,
                                                             virtual_device, tmp_path):
    need_browser()
    r = run_cli("bench", conv_bundle, "--device", f"host,browser,{virtual_device.serial}",
                "--repeat", "1", "--iterations", "2", "--db", tmp_path / "h.db", "--json")
    assert r.code == 0, r.stderr
    results = {g["serial"]: g for g in r.json()["results"]}
    assert set(results) == {"host", "browser", virtual_device.serial}
    assert all(g["outcome"] == "pass" for g in results.values())
    assert results["browser"]["engine"] == "browser"
    assert results[virtual_device.serial]["engine"] == "native"


def test_a_lab_file_mixes_the_browser_with_selected_devices(virtual_devices, adb_env,
                                                            tmp_path):
    from edgepack.lab import GivenOptions, layer_settings, resolve_targets

    phone = virtual_devices.start(model="Pixel 7")
    lab = tmp_path / "lab.toml"
    lab.write_text('[[devices]]\nmodel = "Pixel*"\ncpu_affinity = "1"\n\n'
                   '[[devices]]\nserial = "browser"\n')
    targets, notes = resolve_targets(layer_settings(GivenOptions(lab=lab)))
    assert [t.serial for t in targets] == [phone.serial, "browser"] and notes == []
    assert targets[0].cpu_affinity == "1" and targets[1].cpu_affinity is None
    # Its facts without starting it: what the bench lists before the first run.
    info = targets[1].describe()
    assert (info.serial, info.kind, info.abis) == ("browser", "browser", ["wasm32"])
    assert info.model.startswith("Chromium ")


def test_a_gpu_backend_the_browser_lacks_falls_back_to_wasm_or_fails_strictly(
        conv_bundle, tmp_path, monkeypatch):
    """A Chromium without its software GPU (no WebGL, no WebGPU, as on a machine with no GPU
    path): --ep webgpu runs on wasm with a warning, as the runner does with a provider its
    device lacks, and --strict-ep makes that exit 3. Before, the run failed outright."""
    need_browser()
    real = os.environ.get("EDGEPACK_CHROMIUM") or "/usr/bin/chromium"
    wrapper = tmp_path / "chromium-without-gpu"
    wrapper.write_text(f'#!/bin/sh\nexec {real} "$@" --disable-software-rasterizer\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("EDGEPACK_CHROMIUM", str(wrapper))
    r = run_cli("deploy", conv_bundle, "--device", "browser", "--ep", "webgpu",
                "--iterations", "1", "--json")
    assert r.code == 0, r.stderr
    doc = r.json()
    runner = doc["sets"][0]["runner"]
    assert (runner["ep_requested"], runner["ep_used"]) == ("webgpu", "wasm")
    assert "no adapter" in runner["ep_fallback_reason"]
    assert any(n.startswith("warning: ep fallback: asked for webgpu, ran on wasm")
               for n in doc["notes"])
    assert all(v["passed"] for s in doc["sets"] for v in s["verdicts"])

    strict = run_cli("deploy", conv_bundle, "--device", "browser", "--ep", "webgpu",
                     "--iterations", "1", "--strict-ep", "--json")
    assert strict.code == 3
    assert "--strict-ep: ep fallback: asked for webgpu, ran on wasm" in strict.stderr
