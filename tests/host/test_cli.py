"""The entry point itself: help, version, start-up cost, torch kept out."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import run_cli, run_cli_subprocess


def test_help_lists_the_commands():
    r = run_cli_subprocess("--help")
    assert r.code == 0
    for command in ("export", "pack", "inspect", "run"):
        assert command in r.stdout


def test_help_imports_no_torch_numpy_or_onnx():
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "edgepack", "--help"],
                          capture_output=True, text=True)
    assert proc.returncode == 0
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    for heavy in ("torch", "numpy", "onnx", "onnxruntime", "adbutils", "scipy"):
        assert heavy not in imported, heavy


def test_version():
    r = run_cli("--version")
    assert r.code == 0 and r.stdout.startswith("edgepack ")


def test_console_script_is_installed():
    proc = subprocess.run(["edgepack", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and "edgepack" in proc.stdout


def test_pack_for_a_target_imports_no_torch(tmp_path):
    """Only export imports torch. onnxruntime/tools/__init__.py imports torch whenever it is
    installed, so pack's ORT conversion and --fix-dim must reach onnxruntime's tools without
    running that file (providers.ort_tool)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "m.onnx")
    script = (
        "import sys\n"
        "from edgepack.cli.app import main\n"
        "try:\n"
        f"    main(['pack', {str(tmp_path / 'm.onnx')!r}, '-o', {str(tmp_path / 'b')!r},\n"
        "          '--fix-dim', 'batch=1', '--format', 'ort'])\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "print('torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "False", proc.stdout
    assert (tmp_path / "b" / "predict.ort").is_file()
