"""`edgepack diagnose` and the virtual device's perturb fault (issue 15, part 1)."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest

from edgepack.bundle.schema import MANIFEST
from tests.conftest import EXAMPLES, IMAGES, run_cli
from tests.devices.conftest import deadline  # noqa: F401 - fixture

# ResNet-20's residual Add of the third block of layer2: exported with --opset 18, dynamo keeps
# the module names, and nothing fuses an Add away.
NODE, OP, MODULE = "node_add_5", "Add", "layer2.2 (BasicBlock)"


@pytest.fixture(scope="module")
def resnet20(tmp_path_factory):
    out = tmp_path_factory.mktemp("diagnose")
    model = out / "resnet20.onnx"
    r = run_cli("export", f"{EXAMPLES / 'resnet20.py'}:make_model", "-o", model, "--input",
                "input:1x3x32x32:float32", "--opset", "18")
    assert r.code == 0, r.stderr
    bundle = out / "resnet20"
    r = run_cli("pack", model, "-o", bundle, "--input", f"input={IMAGES / 'cifar_32.png'}")
    assert r.code == 0, r.stderr
    return bundle


def _digests(root):
    return {p.relative_to(root): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file()}


def test_perturbed_node_is_found_all_at_once_and_by_bisection(resnet20, host_runner,
                                                               virtual_devices):
    dev = virtual_devices.start(separate_process=True,
                                args=["--runner-fault", f"perturb:{NODE}:0.05"])
    r = run_cli("deploy", resnet20, "--device", dev.serial, "--iterations", "1", "--json")
    # The pushed files passed their sha256 checks (that would be exit 3): only the outputs differ.
    assert r.code == 1, r.stderr
    assert not r.json()["sets"][0]["verdicts"][0]["passed"]
    bundles_dir = dev.root / "data/local/tmp/edgepack/bundles/resnet20"
    pushed = _digests(bundles_dir)
    assert pushed[Path("predict.onnx")] == hashlib.sha256(
        (resnet20 / "predict.onnx").read_bytes()).hexdigest()

    r = run_cli("diagnose", resnet20, "--device", dev.serial, "--json")
    assert r.code == 1, r.stderr
    doc = r.json()
    first = doc["first_divergent"]
    assert (first["node"], first["op_type"], first["module"]) == (NODE, OP, MODULE)
    assert first["metrics"]["max_rel_error"] == pytest.approx(0.05, rel=1e-3)
    assert first["inputs"] and all(i["within"] for i in first["inputs"])
    assert doc["strategy"] == "all-at-once" and doc["device_runs"] == 1
    rows = {row["node"]: row for row in doc["table"]}
    order = [row["node"] for row in doc["table"]]
    assert all(rows[n]["within"] for n in order[:order.index(NODE)])
    assert not rows[NODE]["within"] and not rows[order[-1]]["within"]

    r = run_cli("diagnose", resnet20, "--device", dev.serial, "--budget", "0.01")
    assert r.code == 1, r.stderr
    assert f"first divergent node: {NODE} ({OP}" in r.stdout and MODULE in r.stdout
    runs = int(r.stdout.split("strategy: bisect, ")[1].split()[0])
    assert 2 <= runs <= math.ceil(math.log2(doc["nodes"])) + 2, r.stdout
    # --ep: the divergent node's provider from the run's profile (this onnxruntime has no
    # XNNPACK, so the node ran on the CPU provider, and the report says so).
    r = run_cli("diagnose", resnet20, "--device", dev.serial, "--ep", "xnnpack", "--json")
    assert r.code == 1, r.stderr
    assert r.json()["first_divergent"]["provider"] == "CPUExecutionProvider"
    # What was pushed is still what the bundle holds: the fault changed nothing on disk.
    assert _digests(bundles_dir) == pushed


def test_nothing_diverges_on_an_exact_device(resnet20, host_runner, virtual_device):
    r = run_cli("diagnose", resnet20, "--device", virtual_device.serial)
    assert r.code == 0, r.stderr
    assert "nothing diverges" in r.stdout and "all-at-once, 1 device run(s)" in r.stdout
    r = run_cli("diagnose", resnet20, "--device", "host", "--json")
    assert r.code == 0 and r.json()["first_divergent"] is None


@pytest.mark.usefixtures("deadline")
def test_perturb_fault_syntax_is_refused_at_startup(tmp_path):
    for spec in ("perturb:node_add_5", "perturb:node_add_5:abc", "perturb:x:0", "perturb::0.1"):
        r = run_cli("virtual-device", "--root", tmp_path / "root", "--runner-fault", spec)
        assert r.code == 2, (spec, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "perturb" in r.stderr


def test_perturb_fault_of_a_missing_node_is_bad_input(virtual_devices, resnet20, host_runner):
    # A node the model lacks shows only when the runner loads the model; it is the user's fault
    # configuration that does not fit, not a device failure: one line, exit 2.
    dev = virtual_devices.start(separate_process=True,
                                args=["--runner-fault", "perturb:no_such_node:0.1"])
    for command in (["deploy", resnet20, "--iterations", "1"], ["diagnose", resnet20]):
        r = run_cli(*command, "--device", dev.serial)
        assert r.code == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, r.stderr
        bundle = "resnet20" if command[0] == "deploy" else "resnet20.diagnose"
        assert f"--runner-fault perturb: node 'no_such_node' is not in bundle {bundle}" \
            in lines[0], r.stderr


def test_unreproducible_expected_outputs_are_bad_input(resnet20, tmp_path):
    import shutil

    import numpy as np

    from edgepack.tensors import read_tensor, write_tensor

    bundle = tmp_path / "tampered"
    shutil.copytree(resnet20, bundle)
    out = bundle / "test_data_set_0" / "output_0.pb"
    name, array = read_tensor(out)
    write_tensor(out, name, (array + 1).astype(np.float32))
    manifest = json.loads((bundle / MANIFEST).read_text())
    for entry in manifest["files"]:
        if entry["path"] == "test_data_set_0/output_0.pb":
            entry["sha256"] = hashlib.sha256(out.read_bytes()).hexdigest()
            entry["size"] = out.stat().st_size
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    r = run_cli("diagnose", bundle, "--device", "host")
    assert r.code == 2, r.stderr
    assert "cannot reproduce" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_unnamed_nodes_are_named_by_op_and_index(virtual_devices, host_runner, tmp_path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.RandomState(0).randn(64, 64).astype(np.float32), "W")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("MatMul", ["b", "W"], ["c"]), helper.make_node("Tanh", ["c"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                         [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "unnamed.onnx")
    assert run_cli("pack", tmp_path / "unnamed.onnx", "-o", tmp_path / "b", "--random-sets",
                   "1").code == 0
    dev = virtual_devices.start(separate_process=True, args=["--runner-fault",
                                                             "perturb:MatMul#2:0.05"])
    for budget in ("256", "0.0001"):
        r = run_cli("diagnose", tmp_path / "b", "--device", dev.serial, "--budget", budget,
                    "--json")
        assert r.code == 1, r.stderr
        first = r.json()["first_divergent"]
        assert (first["node"], first["op_type"], first["module"]) == ("MatMul#2", "MatMul", None)
        assert r.json()["strategy"] == ("all-at-once" if budget == "256" else "bisect")


def test_bisection_finds_a_divergence_that_hides_and_returns(virtual_devices, host_runner,
                                                             tmp_path):
    """a = x @ W is perturbed; a / max(a) cancels the scale for a stretch of nodes, and the
    final Add brings `a` back: `a` stays in every cut the bisection probes, so it lands on the
    MatMul, whose input is within."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.RandomState(1).rand(64, 64).astype(np.float32), "W")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["a"]),
             helper.make_node("ReduceMax", ["a"], ["m"], keepdims=1),
             helper.make_node("Div", ["a", "m"], ["c"]),
             helper.make_node("Tanh", ["c"], ["d"]),
             helper.make_node("Relu", ["d"], ["e"]),
             helper.make_node("Neg", ["e"], ["f"]),
             helper.make_node("Add", ["f", "a"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                         [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "hides.onnx")
    r = run_cli("pack", tmp_path / "hides.onnx", "-o", tmp_path / "b", "--random-sets", "1")
    assert r.code == 0, r.stderr
    dev = virtual_devices.start(separate_process=True, args=["--runner-fault",
                                                             "perturb:MatMul#0:0.05"])
    r = run_cli("diagnose", tmp_path / "b", "--device", dev.serial, "--budget", "0.0001",
                "--json")
    assert r.code == 1, r.stderr
    doc = r.json()
    assert doc["first_divergent"]["node"] == "MatMul#0", doc["first_divergent"]
    assert all(i["within"] for i in doc["first_divergent"]["inputs"])


def _chain_model(path, nodes, seed):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.RandomState(seed).rand(64, 64).astype(np.float32), "W")
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                         [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def test_bisection_compares_intermediate_tensors_when_the_outputs_agree(virtual_devices,
                                                                        host_runner, tmp_path):
    """As light_resnet50's flat softmax does, the last node cancels the perturbation (every node
    before it is homogeneous, so f / max(f) is the same whatever the scale of `a`): the outputs
    agree, and bisection must still find the MatMul from the tensors it exposes."""
    from onnx import helper

    nodes = [helper.make_node("MatMul", ["x", "W"], ["a"]),
             helper.make_node("Abs", ["a"], ["b"]),
             helper.make_node("Relu", ["b"], ["c"]),
             helper.make_node("Neg", ["c"], ["d"]),
             helper.make_node("Neg", ["d"], ["e"]),
             helper.make_node("Abs", ["e"], ["f"]),
             helper.make_node("ReduceMax", ["f"], ["m"], keepdims=1),
             helper.make_node("Div", ["f", "m"], ["y"])]
    _chain_model(tmp_path / "flat.onnx", nodes, 2)
    r = run_cli("pack", tmp_path / "flat.onnx", "-o", tmp_path / "b", "--random-sets", "1")
    assert r.code == 0, r.stderr
    dev = virtual_devices.start(separate_process=True, args=["--runner-fault",
                                                             "perturb:MatMul#0:0.05"])
    r = run_cli("deploy", tmp_path / "b", "--device", dev.serial, "--iterations", "1")
    assert r.code == 0, r.stderr  # the outputs agree
    for budget, strategy in (("256", "all-at-once"), ("0.0001", "bisect")):
        r = run_cli("diagnose", tmp_path / "b", "--device", dev.serial, "--budget", budget,
                    "--json")
        assert r.code == 1, r.stderr
        doc = r.json()
        assert doc["strategy"] == strategy
        assert doc["first_divergent"]["node"] == "MatMul#0", doc
        assert doc["first_divergent"]["metrics"]["max_rel_error"] == pytest.approx(0.05, rel=1e-3)
        assert all(i["within"] for i in doc["first_divergent"]["inputs"])
    assert doc["device_runs"] <= 5  # 3 probes of 8 nodes, and the last run


def test_bisection_on_an_exact_device_finds_nothing(virtual_device, host_runner, tmp_path):
    from onnx import helper

    nodes = [helper.make_node("MatMul", ["x", "W"], ["a"]),
             helper.make_node("Tanh", ["a"], ["b"]),
             helper.make_node("MatMul", ["b", "W"], ["c"]),
             helper.make_node("Relu", ["c"], ["y"])]
    _chain_model(tmp_path / "exact.onnx", nodes, 3)
    r = run_cli("pack", tmp_path / "exact.onnx", "-o", tmp_path / "b", "--random-sets", "1")
    assert r.code == 0, r.stderr
    r = run_cli("diagnose", tmp_path / "b", "--device", virtual_device.serial, "--budget",
                "0.0001")
    assert r.code == 0, r.stderr
    assert "nothing diverges" in r.stdout and "strategy: bisect" in r.stdout


def test_quantized_bundle_against_its_float_model(resnet20, tmp_path):
    model = resnet20.parent / "resnet20.onnx"
    quantized = tmp_path / "int8"
    r = run_cli("pack", model, "-o", quantized, "--random-sets", "2", "--quantize", "int8")
    assert r.code == 0, r.stderr
    r = run_cli("diagnose", quantized, "--device", "host", "--against-float", model, "--json")
    assert r.code == 0, r.stderr
    doc = r.json()
    assert doc["sets"] == 2 and len(doc["layers"]) > 20
    worst = doc["worst"]
    assert worst["drop_db"] == max(x["drop_db"] for x in doc["layers"] if x["drop_db"] is not None)
    assert worst["node"] and worst["module"]  # an exported model's nodes know their modules
    # Every activation int8 quantizes is measured against the float model, in graph order.
    assert all(x["float_sqnr_db"] is not None for x in doc["layers"])
    # Bad input: a bundle that is not quantized, a float model it was not packed from, a device.
    for bundle, against, device in ((resnet20, model, "host"), (quantized, tmp_path / "no.onnx",
                                                                 "host"),
                                    (quantized, model, "emulator-5554")):
        r = run_cli("diagnose", bundle, "--device", device, "--against-float", against)
        assert r.code == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
