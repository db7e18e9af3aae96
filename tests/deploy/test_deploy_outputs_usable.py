"""deploy's side of issue 15 part 2: a virtual phone's outputs kept as .pb and .npy, its top-5
by name beside the host's, its pictures saved, all refused as bad input before the device is
touched."""

from __future__ import annotations

import numpy as np

from tests.conftest import EXAMPLES, run_cli

DEVICE_ROOT = "data/local/tmp/edgepack"


def test_deploy_keeps_labels_and_pictures(bundles, host_runner, virtual_device, tmp_path):
    out, pictures = tmp_path / "out", tmp_path / "pictures"
    r = run_cli("deploy", bundles["resnet20"], "--device", virtual_device.serial,
                "--iterations", "1", "--outputs", out, "--labels",
                EXAMPLES / "labels" / "cifar10.txt", "--json")
    assert r.code == 0, r.stderr + r.stdout
    tops = r.json()["top_classes"]
    assert len(tops) == 2 and all(t["device"] and t["host"][0]["index"] ==
                                  t["device"][0]["index"] for t in tops)
    for k in range(2):
        npy = np.load(out / f"test_data_set_{k}" / "output_0.npy", allow_pickle=False)
        assert npy.shape == (1, 10)
        assert tops[k]["device"][0]["score"] == float(npy.max())

    r = run_cli("deploy", bundles["super_resolution"], "--device", virtual_device.serial,
                "--iterations", "1", "--save-images", pictures, "--json")
    assert r.code == 0, r.stderr + r.stdout
    (saved,) = r.json()["images"]
    for kind in ("host", "device", "diff", "color_host", "color_device"):
        assert (pictures / saved[kind]).is_file(), kind


def test_deploy_refuses_a_non_empty_outputs_directory_before_touching_the_device(
        bundles, host_runner, virtual_device, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("mine")
    r = run_cli("deploy", bundles["resnet20"], "--device", virtual_device.serial,
                "--outputs", out)
    assert r.code == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "not empty; pass --force" in r.stderr
    assert not (virtual_device.root / DEVICE_ROOT).exists()
