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


def test_an_output_named_like_an_input_or_twice_is_bad_input(tmp_path):
    models = _models(tmp_path)
    base = ["export", f"{models}:two", "--input", "scores:5x4", "-o", tmp_path / "t.onnx"]
    # It was exit 1 after torch had run, with the exporter's and onnxruntime's own messages.
    r = run_cli(*base, "--output-name", "scores")
    assert r.code == 2 and "--output-name scores is also an --input name" in r.stderr, r.stderr
    r = run_cli(*base, "--output-name", "label", "--output-name", "label")
    assert r.code == 2 and "--output-name label is given twice" in r.stderr, r.stderr
    assert not any(p.name.startswith("t.onnx") for p in tmp_path.iterdir())


def test_weights_keys_that_do_not_match_are_named(tmp_path):
    models = _models(tmp_path)
    weights = tmp_path / "w.pt"
    # fc.bias is missing, head.weight is not the module's.
    torch.save({"fc.weight": torch.full((3, 4), 0.5), "head.weight": torch.zeros(2)}, weights)
    base = ["export", f"{models}:two", "--input", "x:5x4", "--weights", weights,
            "--exporter", "torchscript"]

    strict = run_cli(*base, "-o", tmp_path / "s.onnx")
    assert strict.code == 2, strict.stderr
    assert ("1 key(s) of the module missing from the file: fc.bias; 1 key(s) in the file the "
            "module does not have: head.weight") in strict.stderr
    assert not (tmp_path / "s.onnx").exists()

    # --no-strict loads fc.weight, and says that fc.bias kept the value the factory gave it.
    loose = run_cli(*base, "--no-strict", "-o", tmp_path / "l.onnx", "--json")
    assert loose.code == 0, loose.stderr
    doc = loose.json()
    assert doc["weights"]["missing_keys"] == ["fc.bias"]
    assert doc["weights"]["unexpected_keys"] == ["head.weight"]
    assert doc["weights"]["strict"] is False
    assert len(doc["warnings"]) == 1 and "fc.bias" in doc["warnings"][0]
    arrays = [onnx.numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "l.onnx"))
              .graph.initializer]
    assert any(a.shape == (3, 4) and (a == 0.5).all() for a in arrays)

    shown = run_cli(*base, "--no-strict", "-o", tmp_path / "h.onnx")
    assert shown.code == 0, shown.stderr
    assert "warning: --no-strict:" in shown.stdout and "fc.bias" in shown.stdout
    assert "head.weight" in shown.stdout


NESTED = '''
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return torch.relu(self.fc(x))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.block = Block()
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.block(x))


def make_model():
    return Net()
'''


def test_a_checkout_exported_from_two_places_packs_byte_identically(tmp_path, monkeypatch):
    """The dynamo exporter writes the model file's module name and stack traces with absolute
    paths into every node; neither may make two checkouts' bundles differ, and no host path may
    reach the device (issue 9, item 6)."""
    bundles = []
    for n, where in enumerate(("alice/src/project", "ci/build-123/project")):
        project = tmp_path / where
        project.mkdir(parents=True)
        (project / "net.py").write_text(NESTED)
        monkeypatch.chdir(project)
        # Once as a relative reference, once as an absolute one: both are recorded alike.
        ref = "net.py:make_model" if n == 0 else f"{project / 'net.py'}:make_model"
        # Opset 18, the dynamo exporter's own: converting down to 17 drops node metadata.
        r = run_cli("export", ref, "--input", "x:2x8:float32", "-o", "net.onnx", "--opset", "18")
        assert r.code == 0, r.stderr
        exported = (project / "net.onnx").read_bytes()
        assert str(tmp_path).encode() not in exported
        model = onnx.load(str(project / "net.onnx"))
        namespaces = [p.value for node in model.graph.node for p in node.metadata_props
                      if p.key == "namespace"]
        assert any(v.startswith(": net.Net/block: net.Block") for v in namespaces), namespaces
        assert run_cli("pack", "net.onnx", "-o", "net.bundle").code == 0
        bundles.append(project / "net.bundle")
    a, b = bundles
    names = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    assert "host/nodes.json" in names
    assert names == sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert b"stack_trace" not in (a / "predict.onnx").read_bytes()
