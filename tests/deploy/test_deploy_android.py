"""deploy on a virtual phone with Android's own shell and userland (mksh, toybox's applets alone
on PATH), and `deploy --outputs`, which keeps the pulled outputs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
from onnx import TensorProto, numpy_helper

from tests.conftest import run_cli, unavailable

DEVICE_ROOT = "data/local/tmp/edgepack"  # inside a virtual device's root
# Every character a shell could act on, in the bundle's name, so in every path deploy sends.
NASTY = "we ird'; touch PWNED; $(touch PWNED2) `touch PWNED3` \"q\" ü \\n"


def _tensor(path: Path) -> np.ndarray:
    proto = TensorProto()
    proto.ParseFromString(path.read_bytes())
    return numpy_helper.to_array(proto)


def test_every_step_of_a_deploy_works_under_mksh_and_toybox(exported, host_runner,
                                                            virtual_devices, tmp_path):
    if not (shutil.which("mksh") and shutil.which("toybox")):
        unavailable("mksh and toybox are not installed (apt-get install mksh toybox)")
    phone = virtual_devices.start(userland="android")
    assert "MIRBSD KSH" in phone.adb.shell('echo "$KSH_VERSION"')
    bundle = tmp_path / "b"
    assert run_cli("pack", exported["iris_forest"], "-o", bundle, "--name", NASTY,
                   "--random-sets", "2").code == 0
    outputs = tmp_path / "pulled outputs"
    args = ["deploy", bundle, "--device", phone.serial, "--iterations", "3", "--json",
            "--cpu-affinity", "1", "--outputs", outputs, "--force"]
    first = run_cli(*args)
    assert first.code == 0, first.stderr
    doc = first.json()
    assert doc["bundle_name"] == NASTY and doc["transfer"]["files_pushed"] > 0
    assert len(doc["sets"]) == 2 and all(v["passed"] for s in doc["sets"] for v in s["verdicts"])
    for root in (phone.root, tmp_path):
        assert not list(root.rglob("PWNED*")), root

    # The pulled outputs stay where --outputs said, laid out as the bundle's expected ones.
    for k in range(2):
        for expected in sorted((bundle / f"test_data_set_{k}").glob("output_*.pb")):
            pulled = outputs / f"test_data_set_{k}" / expected.name
            np.testing.assert_allclose(_tensor(pulled), _tensor(expected), rtol=1e-5, atol=1e-6)
    assert not [p for p in outputs.rglob("*") if p.name.startswith(".")]

    # A redeploy pushes nothing; a file whose mtime changed is judged by toybox's sha256sum.
    predict = phone.root / DEVICE_ROOT / "bundles" / NASTY / "predict.onnx"
    os.utime(predict, (1_000_000_000, 1_000_000_000))
    again = run_cli(*args)
    assert again.code == 0, again.stderr
    assert again.json()["transfer"]["files_pushed"] == 0

    listed = run_cli("devices", "--json")
    assert listed.code == 0, listed.stderr
    (mine,) = [d for d in listed.json() if d["serial"] == phone.serial]
    assert mine["runner_target"] == "host" and mine["free_bytes"] > 0 and mine["sdk"] == 34

    assert run_cli("clean", "--device", phone.serial).code == 0
    assert not list((phone.root / DEVICE_ROOT).glob("bundles/*"))


def test_outputs_that_cannot_be_a_directory_are_bad_input(exported, host_runner, virtual_device,
                                                          tmp_path):
    bundle = tmp_path / "b"
    assert run_cli("pack", exported["iris_forest"], "-o", bundle).code == 0
    taken = tmp_path / "a file"
    taken.write_text("mine")
    r = run_cli("deploy", bundle, "--device", virtual_device.serial, "--outputs", taken)
    assert r.code == 2 and f"--outputs {taken}: File exists" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and taken.read_text() == "mine"
    # Refused before the device was touched.
    assert not (virtual_device.root / DEVICE_ROOT).exists()
