"""The whole runner (not only its TensorProto reader) built with ASan, UBSan and LeakSanitizer
and run on success and failure paths: no memory errors, no leaks, same reports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from tests.conftest import onnx_test_data, unavailable
from tests.runner.conftest import RUNNER_SRC, make, mlp_model, save_model, write_set


@pytest.fixture(scope="module")
def asan_runner(host_runner, tmp_path_factory) -> Path:
    if shutil.which("gcc") is None:
        unavailable("gcc not installed")
    build = json.loads((host_runner.directory / "runner.json").read_text())
    include = next(a.split("=", 1)[1] for a in build["commands"][0]
                   if a.startswith("-DORT_INCLUDE_DIR="))
    out = tmp_path_factory.mktemp("asan")
    (out / "libonnxruntime.so.1").symlink_to(host_runner.directory / "libonnxruntime.so.1")
    (out / "libonnxruntime.so").symlink_to("libonnxruntime.so.1")
    src = RUNNER_SRC / "src"
    proc = subprocess.run(
        ["gcc", "-std=c11", "-g", "-O1", "-Wall", "-Wextra", "-Werror",
         "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
         "-DEDGEPACK_TARGET=\"host-asan\"", f"-I{src}", f"-I{include}", str(src / "main.c"),
         str(src / "tensorproto.c"), str(src / "jsonw.c"), f"-L{out}", "-lonnxruntime", "-lm",
         "-Wl,-rpath,$ORIGIN", "-o", str(out / "edgepack-runner")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    return out / "edgepack-runner"


def run(binary: Path, *args) -> tuple[int, dict, str]:
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0",
               UBSAN_OPTIONS="print_stacktrace=1")
    proc = subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert "Sanitizer" not in proc.stderr and "runtime error" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def test_success_paths_are_clean(asan_runner, tmp_path):
    model = save_model(mlp_model(), tmp_path / "m")
    write_set(tmp_path / "s", [("x", np.ones((2, 64), np.float32))])
    code, doc, _ = run(asan_runner, "--model", model, "--inputs", tmp_path / "s",
                       "--output-dir", tmp_path / "o", "--iterations", "3",
                       "--profile", tmp_path / "p", "--ep", "xnnpack")
    assert code == 0 and doc["status"] == "ok" and doc["profile_file"]
    code, doc, _ = run(asan_runner, "--version")
    assert code == 0 and doc["status"] == "version"


def test_sequence_output_and_scalar_input_are_clean(asan_runner, tmp_path):
    graph = helper.make_graph(
        [helper.make_node("SequenceConstruct", ["x", "x"], ["seq"]),
         helper.make_node("Mul", ["x", "k"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"]),
         helper.make_tensor_value_info("k", TensorProto.FLOAT, [])],
        [helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, ["n"]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])],
    )
    model = save_model(make(graph), tmp_path / "m")
    write_set(tmp_path / "s", [("x", np.zeros(0, np.float32)), ("k", np.array(2, np.float32))])
    code, doc, _ = run(asan_runner, "--model", model, "--inputs", tmp_path / "s",
                       "--output-dir", tmp_path / "o")
    assert code == 0 and [o["file"] for o in doc["outputs"]] == [None, "output_1.pb"]


def test_string_inputs_and_outputs_are_clean(asan_runner, tmp_path):
    from edgepack.tensors import read_tensor, write_tensor
    from tests.runner.test_strings import AWKWARD, strings_model

    model = save_model(strings_model(), tmp_path / "m")
    inputs = tmp_path / "s"
    inputs.mkdir()
    write_tensor(inputs / "input_0.pb", "x", np.array(AWKWARD, dtype=object))
    code, doc, _ = run(asan_runner, "--model", model, "--inputs", inputs,
                       "--output-dir", tmp_path / "o", "--iterations", "2")
    assert code == 0 and [o["dtype"] for o in doc["outputs"]] == ["string"] * 3, doc
    assert read_tensor(tmp_path / "o" / "output_1.pb")[1].tolist() == AWKWARD
    # Empty: no strings at all, and strings that are all empty.
    write_tensor(inputs / "input_0.pb", "x", np.array(["", ""], dtype=object))
    code, doc, _ = run(asan_runner, "--model", model, "--inputs", inputs,
                       "--output-dir", tmp_path / "e", "--iterations", "1")
    assert code == 0, doc
    # (StringNormalizer refuses an empty input; Identity takes it.)
    identity = save_model(make(helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.STRING, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.STRING, ["n"])])), tmp_path / "i")
    write_tensor(inputs / "input_0.pb", "x", np.empty(0, dtype=object))
    code, doc, _ = run(asan_runner, "--model", identity, "--inputs", inputs,
                       "--output-dir", tmp_path / "z", "--iterations", "1")
    assert code == 0 and doc["outputs"][0]["shape"] == [0], doc


@pytest.mark.parametrize("case", ["pytorch-converted/test_Conv2d",
                                  "simple/test_sequence_model1",
                                  "pytorch-converted/test_Embedding"])
def test_backend_models_are_clean(asan_runner, tmp_path, case):
    src = onnx_test_data() / case
    code, doc, _ = run(asan_runner, "--model", src / "model.onnx", "--inputs",
                       src / "test_data_set_0", "--output-dir", tmp_path, "--iterations", "2")
    assert code == 0, doc


def test_error_paths_are_clean(asan_runner, tmp_path):
    model = save_model(mlp_model(), tmp_path / "m")
    good = write_set(tmp_path / "good", [("x", np.ones((2, 64), np.float32))])
    wrong = write_set(tmp_path / "wrong", [("x", np.ones((2, 64), np.float64))])
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "input_0.pb").write_bytes(b"\x08\x80")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"junk")
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    for args, code in [
        (["--iterations", "x"], 2),
        (["--model", junk, "--inputs", good], 3),
        (["--model", model, "--inputs", wrong], 4),
        (["--model", model, "--inputs", garbage], 4),
        (["--model", model, "--inputs", good, "--output-dir", blocker], 6),
    ]:
        got, doc, _ = run(asan_runner, *args)
        assert got == code and doc["status"] == "error", (args, doc)
