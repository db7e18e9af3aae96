"""A bfloat16 PyTorch module through `edgepack export` (whose check against PyTorch reads
torch's bfloat16 as ml_dtypes' bfloat16), `pack` and `run` on the native runner."""

from __future__ import annotations

import json

from tests.conftest import run_cli

MODULE_PY = '''
import torch
from torch import nn


class Mixed(nn.Module):
    """bfloat16 in and out, as a bfloat16 checkpoint runs; the matrix product in float32, for
    which onnxruntime's CPU kernels exist (its CPU provider has few bfloat16 kernels)."""

    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(8).to(torch.bfloat16)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        h = self.norm(x)
        return self.fc(h.float()).to(torch.bfloat16), h.transpose(0, 1)


def make_model():
    torch.manual_seed(0)
    return Mixed()
'''


def test_bfloat16_module_exports_packs_runs_and_compares(host_runner, tmp_path):
    source = tmp_path / "bf16.py"
    source.write_text(MODULE_PY)
    model = tmp_path / "bf16.onnx"
    r = run_cli("export", f"{source}:make_model", "--input", "x:2x8:bfloat16", "-o", model,
                "--json")
    assert r.code == 0, r.stderr
    doc = r.json()
    verdicts = [v for case in doc["validation"] for v in case["verdicts"]]
    assert [v["expected_dtype"] for v in verdicts] == ["bfloat16", "bfloat16"]
    assert all(v["passed"] for v in verdicts), verdicts

    bundle = tmp_path / "bundle"
    r = run_cli("pack", model, "-o", bundle, "--random-sets", "2")
    assert r.code == 0, r.stderr
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert [i["dtype"] for i in manifest["inputs"]] == ["bfloat16"]
    assert [o["dtype"] for o in manifest["outputs"]] == ["bfloat16", "bfloat16"]
    assert manifest["outputs"][0]["tolerance"] == {"rtol": 1e-2, "atol": 1e-2}
    r = run_cli("run", bundle, "--engine", "native", "--iterations", "1", "--json")
    assert r.code == 0, r.stderr
    for s in r.json()["sets"]:
        assert [t["dtype"] for t in s["runner"]["outputs"]] == ["bfloat16", "bfloat16"]
        assert all(v["passed"] for v in s["verdicts"]), s["verdicts"]
