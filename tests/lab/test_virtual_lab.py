"""The lab against three virtual devices at once, through a real adb server: one device's
runner crashes, the other two complete, and every report shows the failure."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from edgepack.errors import EdgepackError
from tests.conftest import run_cli


@pytest.fixture
def three_devices(virtual_devices, host_runner):
    return [virtual_devices.start(model=model)
            for model in ("Pixel 7", "Pixel 7", "Galaxy S23")]


def test_three_devices_one_failing(three_devices, lab_bundle, tmp_path):
    ok1, broken, ok2 = three_devices
    broken.device.set_runner_fault("crash")  # its runner dies of SIGSEGV on every run
    serials = ",".join(d.serial for d in three_devices)
    reports = tmp_path / "reports"
    r = run_cli("bench", lab_bundle, "--device", serials, "--repeat", "2", "--iterations", "5",
                "--db", tmp_path / "h.db", "--report-dir", reports, "--json")
    assert r.code == 3, r.stderr  # a device failed; the others' outputs matched
    doc = r.json()
    results = {g["serial"]: g for g in doc["results"]}
    for good in (ok1, ok2):
        g = results[good.serial]
        assert g["outcome"] == "pass" and g["completed"] == 2, g
        assert g["latency_ms"]["count"] == 10 and g["engine"] == "native"
    bad = results[broken.serial]
    assert bad["outcome"] == "error" and bad["completed"] == 0
    assert any("SIGSEGV" in e or "signal" in e for e in bad["errors"]), bad["errors"]
    # The device state came from the virtual device's dumpsys.
    run = next(x for x in doc["runs"] if x["serial"] == ok1.serial)
    assert run["state_before"]["battery_level"] == 90
    assert run["state_before"]["thermal_status"] == 0

    junit = ET.parse(reports / "junit.xml").getroot()
    assert (junit.get("tests"), junit.get("failures"), junit.get("errors")) == ("3", "0", "1")
    error = next(c for c in junit.iter("testcase") if c.find("error") is not None)
    assert error.get("classname") == f"picture.{broken.serial}"
    assert broken.serial in (reports / "report.md").read_text()
    html = (reports / "report.html").read_text()
    assert "ERROR" in html and broken.serial in html
    assert json.loads((reports / "report.json").read_text())["summary"]["errors"] == 1


def test_a_lab_file_selects_virtual_devices_by_model(virtual_devices, adb_env, tmp_path):
    from edgepack.lab import GivenOptions, layer_settings, resolve_targets

    devices = [virtual_devices.start(model=m, sdk=sdk)
               for m, sdk in (("Pixel 7", 34), ("Pixel 7 Pro", 33), ("Galaxy S23", 34))]
    lab = tmp_path / "lab.toml"
    lab.write_text(f"""
[[servers]]
name = "rack1"
address = "{adb_env.host}:{adb_env.port}"

[[devices]]
model = "pixel 7*"
min_sdk = 34
server = "rack1"
cpu_affinity = "f0"

[[devices]]
serial = "R58M41"
""")
    targets, notes = resolve_targets(layer_settings(GivenOptions(lab=lab)))
    assert notes == []
    assert [t.serial for t in targets] == [devices[0].serial, "R58M41"]
    assert targets[0].cpu_affinity == "f0"
    assert targets[0].describe().model == "Pixel 7"
    # The serial the lab counts on is not attached: that is its device's error.
    with pytest.raises(EdgepackError, match=r"lab.toml:12: no attached device matches serial "
                                            r"R58M41 \(attached: .*Galaxy S23"):
        targets[1].describe()
