"""The WASM probe behind `check --ep wasm` (issue 17): onnx's node tests run in real headless
Chromium on onnxruntime-web, once; the cache is keyed by the runtime's version and reused
without a browser; an unprobed list is said so, never taken as "nothing runs"."""

from __future__ import annotations

import json
import os
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from edgepack.web.runtime import PINS, web_runtime
from tests.conftest import run_cli, unavailable


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty edgepack cache holding only the pinned runtimes (linked from the real cache,
    fetched there first if need be): no probe from another test or run leaks in."""
    if not Path("/usr/bin/chromium").exists() and not os.environ.get("EDGEPACK_CHROMIUM"):
        unavailable("no Chromium (apt-get install chromium)")
    runtimes = {name: web_runtime(name).root.parent for name in PINS}
    root = tmp_path / "cache"
    (root / "web").mkdir(parents=True)
    for src in runtimes.values():
        (root / "web" / src.name).symlink_to(src)
    monkeypatch.setenv("EDGEPACK_CACHE_DIR", str(root))
    return root


def _relu_add(path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["r"]),
                           helper.make_node("Add", ["r", "x"], ["y"])], "relu_add", [x], [y])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
              str(path))
    return path


def test_the_probe_runs_once_and_is_reused_per_runtime_version(cache, tmp_path, monkeypatch):
    model = _relu_add(tmp_path / "relu_add.onnx")
    version = PINS["onnxruntime-web"].version
    probe_file = cache / "web" / f"probe-onnxruntime-web-{version}-wasm.json"

    # Not probed and not allowed to probe (the report's path): said so, verdict unknown.
    from edgepack.check import check_path

    report = check_path(model, ["wasm"])
    wasm = report.ep("wasm")
    assert wasm.verdict == "unknown" and "not probed yet" in " ".join(wasm.reasons)
    assert not probe_file.exists()
    r = run_cli("pack", model, "-o", tmp_path / "b", "--random-sets", "1", "--ops-allowed", "wasm")
    assert r.code == 2 and "probe that has not run yet" in r.stderr

    # The first CLI check probes the model's operators in Chromium and caches them.
    r = run_cli("check", model, "--ep", "wasm", "--json")
    assert r.code == 0, r.stderr
    assert r.json()["eps"][0]["verdict"] == "runs fully"
    doc = json.loads(probe_file.read_text())
    assert doc["runtime_version"] == "1.30.0" and doc["ep"] == "wasm"
    assert doc["ops"]["ai.onnx:Relu"]["ran"] and doc["ops"]["ai.onnx:Add"]["ran"]
    assert doc["ops"]["ai.onnx:Relu"]["case"].startswith("test_relu")
    assert [p.name for p in probe_file.parent.iterdir() if p.name.startswith(".")] == []

    # Reused: no browser is needed (there is none at this path) and nothing is rewritten.
    monkeypatch.setenv("EDGEPACK_CHROMIUM", str(tmp_path / "no-chromium"))
    stamp = probe_file.stat().st_mtime_ns
    r = run_cli("check", model, "--ep", "wasm", "--json")
    assert r.code == 0, r.stderr
    assert r.json()["eps"][0]["verdict"] == "runs fully"
    assert probe_file.stat().st_mtime_ns == stamp

    # A probe of another runtime version is not trusted: the check wants to probe again,
    # and without Chromium that is one line, exit 3.
    doc["runtime_version"] = "1.29.0"
    probe_file.write_text(json.dumps(doc))
    r = run_cli("check", model, "--ep", "wasm")
    assert r.code == 3 and "Chromium" in r.stderr and "Traceback" not in r.stderr


def test_an_operator_the_wasm_build_lacks_is_cannot(cache, tmp_path):
    """onnx's training operators are not in onnxruntime-web's WASM build: the probe finds it,
    and the check names the operator with the runtime's words."""
    from edgepack.web.probe import node_cases

    adam = node_cases()[("ai.onnx.preview.training", "Adam")][0].model
    model = tmp_path / "adam.onnx"
    model.write_bytes(adam.SerializeToString())
    r = run_cli("check", model, "--ep", "wasm", "--json")
    assert r.code == 0, r.stderr
    wasm = r.json()["eps"][0]
    assert wasm["verdict"] == "cannot" and wasm["whole_graph"]
    assert wasm["partitioning"]["unsupported_ops"] == ["ai.onnx.preview.training:Adam"]
    assert "not a registered function/op" in " ".join(wasm["reasons"])


def test_a_case_onnx_stamps_with_an_unreleased_opset_is_tried_at_the_previous_version(cache):
    """onnx 1.23 writes test_celu at opset 28, which onnxruntime-web 1.30 refuses as "under
    development"; Celu itself is from opset 12 and runs."""
    from edgepack.web.probe import node_cases, probe

    (first, *_) = node_cases()[("ai.onnx", "Celu")]
    assert first.name == "test_celu" and first.model.opset_import[0].version > 25
    done = probe("wasm", [("ai.onnx", "Celu")])
    celu = done.ops["ai.onnx:Celu"]
    assert celu.ran and celu.case == "test_celu" and celu.version == 12 and celu.why == ""
