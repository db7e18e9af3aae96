"""export: both exporters, dynamic axes, weights, and validation that can fail."""

from __future__ import annotations

import onnx
import torch

from tests.conftest import EXAMPLES, run_cli

MODELS_PY = '''
import torch
from torch import nn


class Noisy(nn.Module):
    """Adds fresh random noise on every call: PyTorch and onnxruntime can never agree."""

    def forward(self, x):
        return x + torch.rand_like(x)


class Two(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        y = self.fc(x)
        return y, y.argmax(dim=1)


def noisy():
    return Noisy()


def two():
    torch.manual_seed(0)
    return Two()


def not_a_module():
    return 42
'''


def _models(tmp_path):
    path = tmp_path / "models.py"
    path.write_text(MODELS_PY)
    return path


def test_torchscript_exporter_and_opset(tmp_path):
    out = tmp_path / "m.onnx"
    r = run_cli("export", EXAMPLES / "mnist.py:make_model", "--input", "input:1x1x28x28:float32",
                "--exporter", "torchscript", "--opset", "17", "-o", out, "--json")
    assert r.code == 0, r.stderr
    doc = r.json()
    assert doc["exporter"] == "torchscript" and "torchscript" in doc["exporter_detail"]
    assert doc["opset"] == 17 and doc["notes"] == []
    model = onnx.load(str(out))
    assert [o.version for o in model.opset_import if o.domain == ""] == [17]
    meta = {p.key: p.value for p in model.metadata_props}
    assert '"exporter": "torchscript"' in meta["edgepack.export"]


def test_dynamo_says_which_exporter_and_opset(tmp_path):
    r = run_cli("export", EXAMPLES / "resnet20.py:make_model", "--input", "input:1x3x32x32",
                "-o", tmp_path / "r.onnx")
    assert r.code == 0, r.stderr
    assert "exporter: dynamo" in r.stdout
    assert "wrote" in r.stdout and "pass" in r.stdout


def test_dynamic_axes_are_validated_at_another_size(tmp_path):
    out = tmp_path / "m.onnx"
    r = run_cli("export", EXAMPLES / "mnist.py:make_model", "--input", "input:2x1x28x28",
                "--dynamic", "input:0:batch", "-o", out, "--json")
    assert r.code == 0, r.stderr
    cases = r.json()["validation"]
    assert [c["shapes"]["input"][0] for c in cases] == [2, 3]
    assert r.json()["inputs"][0]["shape"] == ["batch", 1, 28, 28]


def test_weights_are_loaded(tmp_path):
    import sys

    sys.path.insert(0, str(EXAMPLES))
    try:
        import mnist
    finally:
        sys.path.remove(str(EXAMPLES))
    model = mnist.make_model()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.01)
    weights = tmp_path / "w.pt"
    torch.save({"state_dict": model.state_dict()}, weights)
    out = tmp_path / "m.onnx"
    r = run_cli("export", EXAMPLES / "mnist.py:make_model", "--input", "input:1x1x28x28",
                "--weights", weights, "-o", out)
    assert r.code == 0, r.stderr
    arrays = [onnx.numpy_helper.to_array(t) for t in onnx.load(str(out)).graph.initializer]
    fc2 = next(a for a in arrays if a.shape == (10, 128))
    assert abs(float(fc2.mean()) - 0.01) < 1e-6

    partial = tmp_path / "partial.pt"
    state = model.state_dict()
    del state["fc2.bias"]
    torch.save(state, partial)
    strict = run_cli("export", EXAMPLES / "mnist.py:make_model", "--input", "input:1x1x28x28",
                     "--weights", partial, "-o", tmp_path / "s.onnx")
    assert strict.code == 2 and "fc2.bias" in strict.stderr
    loose = run_cli("export", EXAMPLES / "mnist.py:make_model", "--input", "input:1x1x28x28",
                    "--weights", partial, "--no-strict", "-o", tmp_path / "l.onnx")
    assert loose.code == 0, loose.stderr


def test_disagreement_fails_with_exit_1_and_keeps_nothing_at_the_target(tmp_path):
    models = _models(tmp_path)
    out = tmp_path / "noisy.onnx"
    r = run_cli("export", f"{models}:noisy", "--input", "x:2x8", "-o", out)
    assert r.code == 1, r.stdout + r.stderr
    assert "disagree" in r.stdout and "FAIL" in r.stdout
    assert not out.exists()
    assert (tmp_path / "noisy.onnx.rejected").exists()


def test_multiple_outputs_and_output_names(tmp_path):
    models = _models(tmp_path)
    out = tmp_path / "two.onnx"
    r = run_cli("export", f"{models}:two", "--input", "x:5x4", "--output-name", "scores",
                "--output-name", "label", "--exporter", "torchscript", "-o", out, "--json")
    assert r.code == 0, r.stderr
    assert [o["name"] for o in r.json()["outputs"]] == ["scores", "label"]
    verdicts = r.json()["validation"][0]["verdicts"]
    assert [v["expected_dtype"] for v in verdicts] == ["float32", "int64"]
    assert run_cli("pack", out, "-o", tmp_path / "b").code == 0
    assert run_cli("run", tmp_path / "b", "--engine", "python").code == 0


def test_module_factory_must_return_a_module(tmp_path):
    models = _models(tmp_path)
    r = run_cli("export", f"{models}:not_a_module", "--input", "x:1", "-o", tmp_path / "m.onnx")
    assert r.code == 2 and "not a torch.nn.Module" in r.stderr


def test_package_module_reference(tmp_path, monkeypatch):
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(MODELS_PY)
    monkeypatch.syspath_prepend(str(tmp_path))
    r = run_cli("export", "mypkg.nets:two", "--input", "x:1x4", "-o", tmp_path / "t.onnx")
    assert r.code == 0, r.stderr
