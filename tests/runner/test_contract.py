"""The runner's contract: one JSON document on stdout (schema edgepack-runner/1), success or
error, with a distinct exit code and error kind for each class of failure."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgepack.errors import EdgepackError, ExitCode
from edgepack.runner.local import parse_version_output, run_local
from edgepack.runner.result import RUNNER_EXIT_CODES, RUNNER_SCHEMA, RunConfig, parse_runner_output
from tests.conftest import onnx_test_data
from tests.runner.conftest import make, mlp_model, save_model, write_set

SUCCESS_KEYS = {
    "schema": str, "status": str, "engine": str, "runner_version": str,
    "onnxruntime_version": str, "ort_api_version": int, "ep_requested": str, "ep_used": str,
    "ep_fallback_reason": (str, type(None)), "threads": int, "optimization": str, "warmup": int,
    "iterations": int, "session_create_ms": float, "first_inference_ms": float,
    "latencies_ms": list, "peak_rss_kb_after_load": int, "peak_rss_kb_end": int,
    "inputs": list, "outputs": list, "profile_file": (str, type(None)), "threads_used": int,
    "peak_rss_scope": str,
}


@pytest.fixture
def mlp(tmp_path) -> tuple[Path, Path]:
    model = save_model(mlp_model(), tmp_path / "mlp")
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    return model, write_set(tmp_path / "mlp" / "test_data_set_0", [("x", x)])


def assert_one_json_document(stdout: str) -> dict:
    assert stdout.endswith("\n") and stdout.count("\n") == 1, stdout
    doc = json.loads(stdout)
    assert doc["schema"] == RUNNER_SCHEMA
    return doc


def assert_error(run, kind: str, *args) -> dict:
    r = run(*args)
    doc = assert_one_json_document(r.stdout)
    assert set(doc) >= {"schema", "status", "error", "exit_code"}
    assert doc["status"] == "error"
    assert set(doc["error"]) == {"kind", "message"}
    assert doc["error"]["kind"] == kind, doc
    assert r.code == doc["exit_code"] == {v: k for k, v in RUNNER_EXIT_CODES.items()}[kind]
    message = doc["error"]["message"]
    assert message and "\n" not in message
    assert message in r.stderr  # the human line says the same
    with pytest.raises(EdgepackError) as info:
        parse_runner_output(r.stdout, r.code, r.stderr)
    assert info.value.exit_code == ExitCode.DEVICE and kind in info.value.message
    return doc


def test_success_document_schema(run_runner, mlp, tmp_path):
    model, inputs = mlp
    r = run_runner("--model", model, "--inputs", inputs, "--output-dir", tmp_path / "out",
                   "--warmup", "2", "--iterations", "7", "--threads", "1")
    assert r.code == 0, r.stderr
    doc = assert_one_json_document(r.stdout)
    for key, kind in SUCCESS_KEYS.items():
        assert isinstance(doc[key], kind), (key, doc[key])
    assert doc["status"] == "ok" and doc["engine"] == "native"
    import onnxruntime

    assert doc["onnxruntime_version"] == onnxruntime.__version__  # the same library as Python's
    assert doc["ep_requested"] == doc["ep_used"] == "cpu" and doc["ep_fallback_reason"] is None
    assert doc["warmup"] == 2 and doc["iterations"] == 7 and len(doc["latencies_ms"]) == 7
    assert all(isinstance(v, float) and v > 0 for v in doc["latencies_ms"])
    assert doc["session_create_ms"] > 0 and doc["first_inference_ms"] > 0
    assert 0 < doc["peak_rss_kb_after_load"] <= doc["peak_rss_kb_end"]
    assert doc["threads_used"] == 1 and doc["peak_rss_scope"] == "process"
    assert doc["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["N", 64],
                              "file": "input_0.pb"}]
    assert doc["outputs"] == [
        {"name": "logits", "dtype": "float32", "shape": [3, 10], "file": "output_0.pb"},
        {"name": "probs", "dtype": "float32", "shape": [3, 10], "file": "output_1.pb"},
    ]
    result = parse_runner_output(r.stdout, r.code, r.stderr)
    assert result.engine == "native" and result.inputs[0].shape == ["N", 64]
    assert result.extra["ort_api_version"] == doc["ort_api_version"]
    # Written atomically: no temporary names left behind.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["output_0.pb", "output_1.pb"]


def test_unknown_dims_are_null(run_runner, tmp_path):
    # A dimension with neither a value nor a name is unknown: null in the report.
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
    )
    model = save_model(make(graph), tmp_path / "m")
    write_set(tmp_path / "s", [("x", np.ones((3, 2), np.float32))])
    r = run_runner("--model", model, "--inputs", tmp_path / "s")
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["inputs"][0]["shape"] == [None, 2]


def test_without_output_dir_nothing_is_written(run_runner, mlp):
    model, inputs = mlp
    r = run_runner("--model", model, "--inputs", inputs, "--iterations", "1")
    doc = assert_one_json_document(r.stdout)
    assert [o["file"] for o in doc["outputs"]] == [None, None]
    assert not any(inputs.glob("output_*"))


def test_min_seconds_runs_until_the_time_is_up(run_runner, mlp):
    model, inputs = mlp
    r = run_runner("--model", model, "--inputs", inputs, "--min-seconds", "0.2", "--warmup", "0")
    doc = assert_one_json_document(r.stdout)
    assert doc["min_seconds"] == pytest.approx(0.2)
    assert doc["iterations"] == len(doc["latencies_ms"]) > 10
    assert math.fsum(doc["latencies_ms"]) <= 0.2 * 1e3 * 1.5


def test_stdout_stays_one_document_when_onnxruntime_warns(run_runner, tmp_path):
    # light_resnet50 makes onnxruntime warn about unused initializers while loading.
    model = onnx_test_data() / "light" / "light_resnet50.onnx"
    x = np.zeros((1, 3, 224, 224), np.float32)
    write_set(tmp_path / "s", [("gpu_0/data_0", x)])
    r = run_runner("--model", model, "--inputs", tmp_path / "s", "--iterations", "1",
                   "--warmup", "0")
    assert r.code == 0
    assert_one_json_document(r.stdout)
    assert "Removing initializer" in r.stderr


def test_version_document(run_runner):
    r = run_runner("--version")
    assert r.code == 0
    doc = assert_one_json_document(r.stdout)
    assert doc["status"] == "version" and doc["target"] == "host"
    info = parse_version_output(r.stdout, r.code)
    assert info.ort_api_version == 29 and "CPUExecutionProvider" in info.available_providers


def test_help_goes_to_stdout_and_exits_0(run_runner):
    r = run_runner("--help")
    assert r.code == 0 and "--model" in r.stdout and "Exit codes" in r.stdout


@pytest.mark.parametrize("ep", ["xnnpack", "nnapi"])
def test_missing_execution_provider_falls_back_to_cpu_and_says_why(run_runner, mlp, ep):
    model, inputs = mlp
    extra = ["--nnapi-fp16", "--nnapi-cpu-disabled"] if ep == "nnapi" else []
    r = run_runner("--model", model, "--inputs", inputs, "--ep", ep, *extra, "--iterations", "1")
    doc = assert_one_json_document(r.stdout)
    assert r.code == 0
    assert doc["ep_requested"] == ep and doc["ep_used"] == "cpu"
    assert ep.upper() in doc["ep_fallback_reason"]
    assert "ran on cpu" in doc["ep_fallback_reason"]
    assert doc["ep_fallback_reason"] in r.stderr


def test_profile_writes_onnxruntime_trace(run_runner, mlp, tmp_path):
    model, inputs = mlp
    r = run_runner("--model", model, "--inputs", inputs, "--iterations", "3",
                   "--profile", tmp_path / "prof")
    doc = assert_one_json_document(r.stdout)
    path = Path(doc["profile_file"])
    assert path.is_file() and path.name.startswith("prof")
    events = json.loads(path.read_text())
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    assert kernels and all(e["args"]["provider"] == "CPUExecutionProvider" for e in kernels)


@pytest.mark.parametrize("level", ["disable", "basic", "extended", "all"])
def test_optimization_levels(run_runner, mlp, level):
    model, inputs = mlp
    r = run_runner("--model", model, "--inputs", inputs, "--optimization", level,
                   "--iterations", "1")
    assert r.code == 0 and json.loads(r.stdout)["optimization"] == level


# ------------------------------------------------------------------------------- errors

BAD_ARGUMENTS = [
    ["--bogus"],
    ["--inputs", "{inputs}"],
    ["--model", "{model}"],
    ["--model", "{model}", "--inputs", "{inputs}", "--iterations", "0"],
    ["--model", "{model}", "--inputs", "{inputs}", "--iterations", "ten"],
    ["--model", "{model}", "--inputs", "{inputs}", "--warmup", "-1"],
    ["--model", "{model}", "--inputs", "{inputs}", "--threads", "1.5"],
    ["--model", "{model}", "--inputs", "{inputs}", "--min-seconds", "0"],
    ["--model", "{model}", "--inputs", "{inputs}", "--min-seconds", "nan"],
    ["--model", "{model}", "--inputs", "{inputs}", "--iterations", "3", "--min-seconds", "1"],
    ["--model", "{model}", "--inputs", "{inputs}", "--ep", "gpu"],
    ["--model", "{model}", "--inputs", "{inputs}", "--optimization", "max"],
    ["--model", "{model}", "--inputs", "{inputs}", "--nnapi-fp16"],
    ["--model", "{model}", "--inputs"],
    ["--model", "/nonexistent/model.onnx", "--inputs", "{inputs}"],
    ["--model", "{inputs}", "--inputs", "{inputs}"],
    ["--model", "{model}", "--inputs", "/nonexistent"],
    ["--model", "{model}", "--inputs", "{model}"],
]


@pytest.mark.parametrize("args", BAD_ARGUMENTS, ids=lambda a: " ".join(a)[-40:])
def test_bad_arguments(run_runner, mlp, args):
    model, inputs = mlp
    assert_error(run_runner, "bad_arguments",
                 *[a.format(model=model, inputs=inputs) for a in args])


def test_model_load_garbage(run_runner, mlp, tmp_path):
    _, inputs = mlp
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not an onnx model")
    doc = assert_error(run_runner, "model_load", "--model", bad, "--inputs", inputs)
    assert str(bad) in doc["error"]["message"]


def test_model_load_missing_external_data(run_runner, mlp):
    model, inputs = mlp
    os.remove(model.parent / "init.bin")
    assert_error(run_runner, "model_load", "--model", model, "--inputs", inputs)


def _set(tmp_path: Path, *tensors: tuple[str, np.ndarray]) -> Path:
    d = tmp_path / f"set{len(list(tmp_path.glob('set*')))}"
    return write_set(d, list(tensors))


def test_input_mismatch_cases(run_runner, mlp, tmp_path):
    model, _ = mlp
    x = np.zeros((2, 64), np.float32)
    cases = {
        "expects float32": _set(tmp_path, ("x", x.astype(np.float64))),
        "dimension": _set(tmp_path, ("x", np.zeros((2, 64, 1), np.float32))),
        "expects 64": _set(tmp_path, ("x", np.zeros((2, 63), np.float32))),
        "input(s)": _set(tmp_path, ("x", x), ("y", x)),
        "no input of that name": _set(tmp_path, ("nope", x)),
    }
    empty = tmp_path / "empty"
    empty.mkdir()
    cases["holds 0 input_<i>.pb"] = empty
    gap = tmp_path / "gap"
    gap.mkdir()
    (gap / "input_1.pb").write_bytes(numpy_helper.from_array(x, "x").SerializeToString())
    cases["input_0.pb is missing"] = gap
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "input_0.pb").write_bytes(b"\x0a\xff\xff\xff\xff\x0f")
    cases["not a valid TensorProto"] = garbage
    for needle, directory in cases.items():
        doc = assert_error(run_runner, "input_mismatch", "--model", model, "--inputs", directory)
        assert needle in doc["error"]["message"], (needle, doc)


def test_input_mismatch_duplicate_names(run_runner, tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["c"])], "add",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [2])],
    )
    model = save_model(make(graph), tmp_path / "m")
    one = np.ones(2, np.float32)
    doc = assert_error(run_runner, "input_mismatch", "--model", model, "--inputs",
                       write_set(tmp_path / "s", [("a", one), ("a", one)]))
    assert "both named 'a'" in doc["error"]["message"]


def test_run_failure(run_runner, tmp_path):
    # The target shape is an input: a shape that does not fit fails inside Run, not at load.
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])], "reshape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6]),
         helper.make_tensor_value_info("shape", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = save_model(make(graph), tmp_path / "m")
    inputs = write_set(tmp_path / "s", [("x", np.zeros(6, np.float32)),
                                        ("shape", np.array([7], np.int64))])
    doc = assert_error(run_runner, "run_failure", "--model", model, "--inputs", inputs)
    assert doc["error"]["message"].startswith("first inference")


def test_output_write_failures(run_runner, mlp, tmp_path):
    model, inputs = mlp
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert_error(run_runner, "output_write", "--model", model, "--inputs", inputs,
                 "--output-dir", a_file)
    assert_error(run_runner, "output_write", "--model", model, "--inputs", inputs,
                 "--output-dir", tmp_path / "missing" / "deeper")


def test_run_local_raises_device_errors_with_the_runners_message(host_runner, mlp, tmp_path):
    model, _ = mlp
    with pytest.raises(EdgepackError) as info:
        run_local(host_runner, model, tmp_path, tmp_path / "out", RunConfig(iterations=1))
    assert info.value.exit_code == ExitCode.DEVICE
    assert "input_mismatch" in info.value.message


def test_run_local_timeout_and_garbage(tmp_path):
    slow = tmp_path / "slow"
    slow.write_text("#!/bin/sh\nsleep 5\n")
    slow.chmod(0o755)
    with pytest.raises(EdgepackError, match="did not finish"):
        run_local(slow, tmp_path, tmp_path, None, RunConfig(timeout_s=0.3))
    crash = tmp_path / "crash"
    crash.write_text("#!/bin/sh\necho 'Segmentation fault' >&2\nkill -SEGV $$\n")
    crash.chmod(0o755)
    with pytest.raises(EdgepackError, match="SIGSEGV.*Segmentation fault"):
        run_local(crash, tmp_path, tmp_path, None, RunConfig())
    with pytest.raises(EdgepackError, match="cannot start"):
        run_local(tmp_path / "absent", tmp_path, tmp_path, None, RunConfig())


def test_cpu_affinity_is_applied(host_runner, mlp, tmp_path):
    model, inputs = mlp
    result = run_local(host_runner, model, inputs, None, RunConfig(iterations=1,
                                                                   cpu_affinity="1"))
    assert result.latencies_ms
    with pytest.raises(EdgepackError, match="not a CPU mask"):
        run_local(host_runner, model, inputs, None, RunConfig(cpu_affinity="zero"))


def test_device_command_quotes_every_word(host_runner, mlp, tmp_path):
    import shlex
    import subprocess

    from edgepack.runner.local import device_command

    model, inputs = mlp
    odd = tmp_path / "out dir; rm -rf $HOME 'x'"
    cmd = device_command(str(host_runner.directory), str(model), str(inputs), str(odd),
                         RunConfig(iterations=2, threads=1))
    words = shlex.split(cmd)
    assert words[0] == f"LD_LIBRARY_PATH={host_runner.directory}" and words[1] == "timeout"
    limit = words.index("-k")  # after `--foreground` where timeout has it (local.py says why)
    assert words[limit:limit + 3] == ["-k", "5", "600"]
    assert words[limit + 3] == str(host_runner.binary) and str(odd) in words
    proc = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
    assert (odd / "output_0.pb").is_file()


def test_special_files_as_inputs_are_refused_without_blocking(run_runner, mlp, tmp_path):
    model, _ = mlp
    d = tmp_path / "fifo"
    d.mkdir()
    os.mkfifo(d / "input_0.pb")
    doc = assert_error(run_runner, "input_mismatch", "--model", model, "--inputs", d)
    assert "not a regular file" in doc["error"]["message"]
