"""The fast-neural-style net rewritten for a target without InstanceNormalization, reflect Pad
and Upsample, deployed to the virtual device and compared there (issue 13 part 2)."""

from __future__ import annotations

import onnx

from tests.conftest import EXAMPLES, run_cli


def test_rewritten_fast_neural_style_passes_on_the_device(host_runner, virtual_device,
                                                          tmp_path):
    model = tmp_path / "fns.onnx"
    r = run_cli("export", EXAMPLES / "fast_neural_style.py:make_model", "--exporter",
                "torchscript", "--opset", "9", "--input", "input:1x3x64x64:float32",
                "--output-name", "output", "-o", model)
    assert r.code == 0, r.stderr
    cfg = tmp_path / "ops.config"
    cfg.write_text("ai.onnx;10;Add,Concat,Conv,Div,Mul,ReduceMean,Relu,Resize,Slice,Sqrt,Sub\n")
    bundle = tmp_path / "b"
    r = run_cli("pack", model, "-o", bundle, "--random-sets", "2", "--ops-allowed", cfg)
    assert r.code == 0, r.stderr
    ops = {n.op_type for n in onnx.load(bundle / "predict.onnx",
                                        load_external_data=False).graph.node}
    assert ops <= {"Add", "Concat", "Conv", "Div", "Mul", "ReduceMean", "Relu", "Resize",
                   "Slice", "Sqrt", "Sub"}
    d = run_cli("deploy", bundle, "--device", virtual_device.serial, "--iterations", "2",
                "--json")
    assert d.code == 0, d.stderr
    doc = d.json()
    assert doc["device"]["virtual"] is True and len(doc["sets"]) == 2
    for s in doc["sets"]:
        for v in s["verdicts"]:
            assert v["passed"], v
            assert v["metrics"]["max_rel_error"] <= 1e-5, v
