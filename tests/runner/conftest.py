"""Fixtures for the native runner's tests: the built host runner, small bundles, the TensorProto
test tool.

The host runner is built once per session into the edgepack cache (EDGEPACK_CACHE_DIR or
~/.cache/edgepack), fetching the AAR from npm on a fresh machine; later sessions reuse it unless
the runner's sources changed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import unavailable

REPO = Path(__file__).resolve().parents[2]
RUNNER_SRC = REPO / "device_scripts" / "runner"


@pytest.fixture(scope="session")
def host_runner():
    from edgepack.runner.build import build_runner

    return build_runner("host")


def ort_run(model: Path, feeds: dict[str, np.ndarray], threads: int = 1,
            optimization: str = "ORT_ENABLE_ALL") -> list[np.ndarray]:
    """Python onnxruntime on the same library, settings as the runner's."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, optimization)
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def save_model(model: onnx.ModelProto, directory: Path) -> Path:
    """predict.onnx with initializers over 1 KiB in init.bin, as `edgepack pack` writes it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "predict.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="init.bin", size_threshold=1024)
    return path


def write_set(directory: Path, feeds: list[tuple[str, np.ndarray]],
              expected: list[tuple[str, np.ndarray]] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for i, (name, arr) in enumerate(feeds):
        (directory / f"input_{i}.pb").write_bytes(
            numpy_helper.from_array(np.asarray(arr), name).SerializeToString())
    for i, (name, arr) in enumerate(expected or []):
        (directory / f"output_{i}.pb").write_bytes(
            numpy_helper.from_array(np.asarray(arr), name).SerializeToString())
    return directory


@dataclass
class Bundle:
    dir: Path
    model: Path
    inputs: Path
    feeds: dict[str, np.ndarray]


@pytest.fixture
def make_bundle(tmp_path) -> Callable[..., Bundle]:
    counter = iter(range(1000))

    def new_bundle(model: onnx.ModelProto, feeds: dict[str, np.ndarray], *,
                   expected: bool = True, threads: int = 1) -> Bundle:
        d = tmp_path / f"bundle{next(counter)}"
        path = save_model(model, d)
        outs = []
        if expected:
            names = [o.name for o in model.graph.output]
            outs = list(zip(names, ort_run(path, feeds, threads), strict=True))
        write_set(d / "test_data_set_0", list(feeds.items()), outs)
        return Bundle(d, path, d / "test_data_set_0", feeds)

    return new_bundle


def mlp_model(inp: int = 64, hidden: int = 128, out: int = 10, batch: str | int = "N",
              seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((inp, hidden)) / np.sqrt(inp)).astype(np.float32)
    b1 = rng.standard_normal(hidden).astype(np.float32)
    w2 = (rng.standard_normal((hidden, out)) / np.sqrt(hidden)).astype(np.float32)
    b2 = rng.standard_normal(out).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("Gemm", ["r", "w2", "b2"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, inp])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, out]),
         helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, out])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"),
         numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(b2, "b2")],
    )
    return make(graph)


def make(graph: onnx.GraphProto, opset: int = 17) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8  # what onnxruntime 1.18+ and the 1.29 headers all accept
    return model


@dataclass
class RunnerRun:
    code: int
    stdout: str
    stderr: str

    @property
    def doc(self) -> dict:
        return json.loads(self.stdout)


@pytest.fixture
def run_runner(host_runner) -> Callable[..., RunnerRun]:
    def run(*args: str | Path, timeout: float = 300) -> RunnerRun:
        proc = subprocess.run([str(host_runner.binary), *map(str, args)], capture_output=True,
                              text=True, timeout=timeout)
        return RunnerRun(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture(scope="session")
def tp_tool(tmp_path_factory) -> Path:
    """The TensorProto reader/writer as a command, built with ASan and UBSan."""
    cc = shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        unavailable("no C compiler")
    out = tmp_path_factory.mktemp("tp_tool") / "tp_tool"
    subprocess.run(
        [cc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-O1",
         "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
         str(RUNNER_SRC / "tools" / "tp_tool.c"), str(RUNNER_SRC / "src" / "tensorproto.c"),
         str(RUNNER_SRC / "src" / "jsonw.c"), "-lm", "-o", str(out)],
        check=True, capture_output=True, text=True,
    )
    return out
