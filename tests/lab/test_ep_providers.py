"""Honest execution providers: every result names the provider asked for and the one that ran,
a fallback is a warning in every report, --strict-ep makes it a device failure (exit 3).

This machine's onnxruntime has only the CPU provider, so asking for xnnpack or nnapi falls back
for real, in the native runner, on the host and on a virtual device."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from tests.conftest import IMAGES, run_cli
from tests.lab.conftest import image_model


def _bench(*args):
    return run_cli("bench", *args, "--repeat", "1", "--iterations", "3", "--json")


def test_a_fallback_is_labelled_and_warned_in_every_report(lab_bundle, host_runner, tmp_path):
    reports = tmp_path / "reports"
    r = _bench(lab_bundle, "--device", "host", "--engine", "native", "--ep", "cpu,xnnpack,nnapi",
               "--report-dir", reports)
    assert r.code == 0, r.stderr
    rows = {g["config_key"]: g for g in r.json()["results"]}
    assert rows["cpu/t1"]["ep"] == "cpu" and rows["cpu/t1"]["warnings"] == []
    for ep in ("xnnpack", "nnapi"):
        row = rows[f"{ep}/t1"]
        assert (row["ep_requested"], row["ep_used"], row["ep_fallback"]) == (ep, "cpu", True)
        assert row["ep"] == f"{ep} -> cpu (fallback)"
        assert any(w.startswith(f"ep fallback: asked for {ep}, ran on cpu") for w in
                   row["warnings"]), row["warnings"]
    on_disk = json.loads((reports / "report.json").read_text())
    assert [g["ep"] for g in on_disk["results"]] == [
        "cpu", "xnnpack -> cpu (fallback)", "nnapi -> cpu (fallback)"]
    junit = (reports / "junit.xml").read_text()
    assert "ep xnnpack -&gt; cpu (fallback)" in junit
    assert "warning: ep fallback: asked for nnapi" in junit
    md = (reports / "report.md").read_text()
    assert "| xnnpack -> cpu (fallback) |" in md and "ep fallback: asked for xnnpack" in md
    html = (reports / "report.html").read_text()
    assert "xnnpack -&gt; cpu (fallback)" in html and "ep fallback: asked for nnapi" in html
    # check's prediction beside what ran: the image model's ReduceMean and Sigmoid have no
    # XNNPACK kernel.
    assert "predicted and measured" in html and "runs partly (3 of 5 nodes" in html
    # The history keeps the provider asked for (the key), the one that ran, and the warning.
    import os
    import sqlite3

    with sqlite3.connect(os.environ["EDGEPACK_DB"]) as db:
        stored = {key: (used, json.loads(w)) for key, used, w in db.execute(
            "SELECT config_key, ep_used, warnings_json FROM runs")}
    assert stored["cpu/t1"] == ("cpu", [])
    assert stored["nnapi/t1"][0] == "cpu"
    assert stored["nnapi/t1"][1][0].startswith("ep fallback: asked for nnapi, ran on cpu")


def test_strict_ep_makes_a_fallback_a_device_failure(lab_bundle, host_runner, tmp_path):
    r = _bench(lab_bundle, "--device", "host", "--engine", "native", "--ep", "cpu,xnnpack",
               "--strict-ep", "--report-dir", tmp_path / "rep")
    assert r.code == 3, r.stderr
    rows = {g["config_key"]: g for g in r.json()["results"]}
    assert rows["cpu/t1"]["outcome"] == "pass"
    assert rows["xnnpack/t1"]["outcome"] == "error"
    assert rows["xnnpack/t1"]["errors"][0].startswith("--strict-ep: ep fallback: asked for "
                                                      "xnnpack, ran on cpu")
    junit = ET.parse(tmp_path / "rep" / "junit.xml").getroot()
    assert junit.get("errors") == "1"

    run = run_cli("run", lab_bundle, "--engine", "native", "--ep", "xnnpack", "--iterations",
                  "2", "--strict-ep")
    assert run.code == 3 and "--strict-ep: ep fallback: asked for xnnpack" in run.stderr
    plain = run_cli("run", lab_bundle, "--engine", "native", "--ep", "nnapi", "--iterations",
                    "2", "--json")
    assert plain.code == 0, plain.stderr
    assert any(n.startswith("warning: ep fallback: asked for nnapi, ran on cpu")
               for n in plain.json()["notes"])


def test_deploy_on_a_virtual_device_falls_back_and_says_so(lab_bundle, host_runner,
                                                           virtual_devices, tmp_path):
    device = virtual_devices.start()
    r = run_cli("deploy", lab_bundle, "--device", device.serial, "--ep", "xnnpack",
                "--iterations", "2", "--json")
    assert r.code == 0, r.stderr
    doc = r.json()
    assert doc["config"]["ep"] == "xnnpack"
    assert doc["sets"][0]["runner"]["ep_used"] == "cpu"
    assert any("ep fallback: asked for xnnpack, ran on cpu" in n for n in doc["notes"])
    human = run_cli("deploy", lab_bundle, "--device", device.serial, "--ep", "xnnpack",
                    "--iterations", "2")
    assert "warning: ep fallback: asked for xnnpack" in human.stderr
    strict = run_cli("deploy", lab_bundle, "--device", device.serial, "--ep", "xnnpack",
                     "--iterations", "2", "--strict-ep")
    assert strict.code == 3 and "--strict-ep" in strict.stderr

    # With --profile the device's own profile says where each node ran.
    profiled = run_cli("deploy", lab_bundle, "--device", device.serial, "--ep", "xnnpack",
                       "--iterations", "2", "--profile", "--json")
    assert profiled.code == 0, profiled.stderr
    assert any(n.startswith("placement: xnnpack: 0 of 5 node(s) in 0 partition(s); on the CPU")
               for n in profiled.json()["notes"]), profiled.json()["notes"]

    b = _bench(lab_bundle, "--device", device.serial, "--ep", "xnnpack", "--strict-ep")
    assert b.code == 3
    assert b.json()["results"][0]["ep"] == "xnnpack -> cpu (fallback)"


@pytest.fixture(scope="module")
def second_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("second")
    model = image_model(out / "parser.onnx", size=16)
    bundle = out / "parser"
    r = run_cli("pack", model, "-o", bundle, "--name", "parser",
                "--input", f"input={IMAGES / 'digit_7.png'}", "--color", "gray")
    assert r.code == 0, r.stderr
    return bundle


def test_each_bundle_its_own_provider(lab_bundle, second_bundle, host_runner, tmp_path):
    r = _bench(lab_bundle, second_bundle, "--device", "host", "--engine", "native",
               "--ep", f"picture=xnnpack,{second_bundle}=cpu")
    assert r.code == 0, r.stderr
    keys = {(g["bundle_name"], g["config_key"]) for g in r.json()["results"]}
    assert keys == {("picture", "xnnpack/t1"), ("parser", "cpu/t1")}

    lab = tmp_path / "lab.toml"
    # A lab file may name bundles this bench does not run (detector).
    lab.write_text('[defaults]\nep = "cpu"\n[bundles.parser]\nep = ["cpu", "nnapi"]\n'
                   '[bundles.detector]\nep = "nnapi"\n')
    r = _bench(lab_bundle, second_bundle, "--device", "host", "--engine", "native",
               "--lab", lab)
    assert r.code == 0, r.stderr
    keys = sorted((g["bundle_name"], g["config_key"]) for g in r.json()["results"])
    assert keys == [("parser", "cpu/t1"), ("parser", "nnapi/t1"), ("picture", "cpu/t1")]

    bad = _bench(lab_bundle, "--device", "host", "--ep", "detector=nnapi")
    assert bad.code == 2 and "no bundle of this bench is named 'detector'" in bad.stderr
    bad = _bench(lab_bundle, "--device", "host", "--ep", "picture=tpu")
    assert bad.code == 2 and "unknown execution provider 'tpu'" in bad.stderr
    lab.write_text('[bundles.parser]\nep = "tpu"\n')
    bad = _bench(lab_bundle, "--device", "host", "--lab", lab)
    assert bad.code == 2 and "bundles.parser.ep" in bad.stderr


def test_profile_tells_where_the_nodes_ran(lab_bundle, host_runner, tmp_path):
    r = _bench(lab_bundle, "--device", "host", "--engine", "native", "--ep", "cpu,xnnpack",
               "--profile")
    assert r.code == 0, r.stderr
    rows = {g["config"]["ep"]: g for g in r.json()["results"]}
    cpu, xnn = rows["cpu"]["placement"], rows["xnnpack"]["placement"]
    assert cpu["nodes"] == cpu["nodes_on_ep"] > 0 and cpu["partitions"] == 1
    # Nothing ran on XNNPACK: every node fell back to the CPU, and the ops are named.
    assert xnn["nodes_on_ep"] == 0 and xnn["partitions"] == 0
    assert "Conv" in xnn["cpu_ops"] or "FusedConv" in xnn["cpu_ops"]
    assert set(xnn["by_provider"]) == {"CPUExecutionProvider"}
    human = run_cli("bench", lab_bundle, "--device", "host", "--engine", "native", "--ep",
                    "xnnpack", "--profile", "--repeat", "1", "--iterations", "2")
    assert "placement on host xnnpack/t1/profile: xnnpack: 0 of" in human.stdout


def test_runners_and_devices_list_their_providers(host_runner, virtual_devices):
    r = run_cli("runner", "list", "--json")
    assert r.code == 0, r.stderr
    host = next(d for d in r.json() if d["target"] == "host")
    # Asked of the runner itself: this machine's onnxruntime has the CPU provider, not XNNPACK.
    assert "cpu" in host["providers"] and "xnnpack" not in host["providers"]
    assert host["providers_from"].startswith("asked the runner")
    human = run_cli("runner", "list")
    assert "providers" in human.stdout and "cpu" in human.stdout

    device = virtual_devices.start()
    d = run_cli("devices", "--json")
    assert d.code == 0, d.stderr
    row = next(x for x in d.json() if x["serial"] == device.serial)
    assert "cpu" in row["providers"]


def test_the_android_library_is_read_for_its_providers(tmp_path):
    """The AAR's libonnxruntime.so cannot run here; its contents say NNAPI and XNNPACK are in."""
    import zipfile

    from edgepack.fileio import cache_root

    aars = sorted((cache_root() / "downloads" / "aar").glob("*.aar"))
    if not aars:
        pytest.skip("no onnxruntime-android AAR downloaded on this machine")
    from edgepack.runner.cache import RunnerBuild, RunnerFile
    from edgepack.runner.local import build_providers

    with zipfile.ZipFile(aars[0]) as z:
        lib = tmp_path / "libonnxruntime.so"
        lib.write_bytes(z.read("jni/arm64-v8a/libonnxruntime.so"))
    build = RunnerBuild("android-arm64-v8a", "1.29.0", "0", tmp_path,
                        [RunnerFile("libonnxruntime.so", "0" * 64, lib.stat().st_size, False)],
                        "1.29.0", 0, "aar", None, "")
    found = build_providers(build)
    assert found.providers == ["cpu", "xnnpack", "nnapi"]
    assert "cannot run here" in found.how
