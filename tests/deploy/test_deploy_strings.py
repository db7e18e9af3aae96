"""A string model deployed to a virtual device: its runner reads string inputs and writes string
outputs on the device, and the pulled outputs compare with the host's."""

from __future__ import annotations

import numpy as np
import onnx

from edgepack.tensors import read_tensor, write_tensor
from tests.conftest import run_cli
from tests.runner.test_strings import AWKWARD, strings_model


def test_string_model_passes_on_the_device(host_runner, virtual_device, tmp_path):
    model = tmp_path / "strings.onnx"
    onnx.save_model(strings_model(), str(model))
    words = tmp_path / "words.pb"
    write_tensor(words, "x", np.array(AWKWARD, dtype=object))
    bundle = tmp_path / "strings"
    r = run_cli("pack", model, "-o", bundle, "--input", f"x={words}", "--random-sets", "1")
    assert r.code == 0, r.stderr
    r = run_cli("deploy", bundle, "--device", virtual_device.serial, "--iterations", "2",
                "--json", "--threads", "2")
    assert r.code == 0, r.stderr
    doc = r.json()
    assert doc["engine"] == "native" and len(doc["sets"]) == 2
    for s in doc["sets"]:
        assert [t["dtype"] for t in s["runner"]["outputs"]] == ["string"] * 3
        assert all(v["passed"] for v in s["verdicts"]), s["verdicts"]
    runner = doc["sets"][0]["runner"]
    assert runner["threads"] == 2 and runner["threads_used"] == 2
    assert runner["peak_rss_scope"] == "process"
    _, upper = read_tensor(bundle / "test_data_set_0" / "output_0.pb")
    assert upper.tolist() == [w.upper() for w in AWKWARD]
