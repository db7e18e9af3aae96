"""edgepack-runner against onnxruntime's Python InferenceSession.run, side by side.

    python bench/runner_vs_python.py [--rounds 10] [--iterations 50] [--threads 1] [--json]

For each model, in one process on one machine: the host runner (same onnxruntime library as the
Python package) and a Python session with the same thread count and optimization level are timed
in interleaved rounds (runner, Python, Python, runner, ...), so drift in clock speed or load hits
both alike; both are pinned to the same CPU (--cpu). The runner's latencies are its own
per-iteration timings of the Run call (from its JSON report); Python's are perf_counter around
session.run with the input array prepared once. The ratio is median(runner) / median(Python),
with a 95% bootstrap interval over rounds.

Models and goals: the tutorial's CIFAR ResNet-20 (exported with `edgepack export`), the onnx
package's light_resnet50.onnx, both <= 1.00; a tiny MLP, where the interpreter's per-call
overhead dominates, <= 0.5. Exit code 0 when every goal is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Case:
    name: str
    model: Path
    inputs: Path  # a test_data_set directory
    feeds: dict[str, np.ndarray]
    goal: float


@dataclass
class Row:
    model: str
    runner_median_ms: float
    python_median_ms: float
    ratio: float
    goal: float
    passed: bool
    runner_n: int
    python_n: int
    runner_p10_ms: float
    runner_p90_ms: float
    python_p10_ms: float
    python_p90_ms: float
    ratio_ci95: tuple[float, float]  # bootstrap over rounds


def write_inputs(directory: Path, feeds: dict[str, np.ndarray]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for i, (name, arr) in enumerate(feeds.items()):
        (directory / f"input_{i}.pb").write_bytes(
            numpy_helper.from_array(arr, name).SerializeToString())
    return directory


def bundle_model(model: onnx.ModelProto, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "predict.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="init.bin", size_threshold=1024)
    return path


def resnet20(work: Path) -> Case:
    exported = work / "resnet20.onnx"
    proc = subprocess.run(
        [sys.executable, "-m", "edgepack", "export", str(REPO / "examples" / "resnet20.py") +
         ":make_model", "--input", "input:1x3x32x32:float32", "-o", str(exported)],
        capture_output=True, text=True, cwd=REPO,
    )
    if proc.returncode != 0:
        raise SystemExit(f"edgepack export of ResNet-20 failed:\n{proc.stderr}")
    model = bundle_model(onnx.load(str(exported)), work / "resnet20")
    name = onnx.load(str(model), load_external_data=False).graph.input[0].name
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    feeds = {name: x}
    return Case("resnet20", model, write_inputs(work / "resnet20" / "set", feeds), feeds, 1.00)


def light_resnet50(work: Path) -> Case:
    model = Path(onnx.__file__).parent / "backend/test/data/light/light_resnet50.onnx"
    x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    feeds = {"gpu_0/data_0": x}
    return Case("light_resnet50", model, write_inputs(work / "r50set", feeds), feeds, 1.00)


def tiny_mlp(work: Path) -> Case:
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((16, 32)).astype(np.float32)
    w2 = rng.standard_normal((32, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("Gemm", ["r", "w2"], ["y"])],
        "tiny_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    model = bundle_model(m, work / "mlp")
    feeds = {"x": rng.standard_normal((1, 16)).astype(np.float32)}
    return Case("tiny_mlp", model, write_inputs(work / "mlp" / "set", feeds), feeds, 0.5)


def run_runner(binary: Path, case: Case, iterations: int, warmup: int, threads: int
               ) -> list[float]:
    proc = subprocess.run(
        [str(binary), "--model", str(case.model), "--inputs", str(case.inputs), "--warmup",
         str(warmup), "--iterations", str(iterations), "--threads", str(threads)],
        capture_output=True, text=True, check=False,
    )
    doc = json.loads(proc.stdout)
    if doc.get("status") != "ok":
        raise SystemExit(f"runner failed on {case.name}: {doc}")
    return [float(v) for v in doc["latencies_ms"]]


def run_python(session, case: Case, iterations: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        session.run(None, case.feeds)
    out = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        session.run(None, case.feeds)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def measure(case: Case, binary: Path, rounds: int, iterations: int, warmup: int,
            threads: int) -> Row:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(case.model), opts, providers=["CPUExecutionProvider"])
    runner_rounds: list[list[float]] = []
    python_rounds: list[list[float]] = []
    for r in range(rounds):
        # Alternating order: neither side always goes first.
        if r % 2 == 0:
            runner_rounds.append(run_runner(binary, case, iterations, warmup, threads))
            python_rounds.append(run_python(session, case, iterations, warmup))
        else:
            python_rounds.append(run_python(session, case, iterations, warmup))
            runner_rounds.append(run_runner(binary, case, iterations, warmup, threads))
    runner = [v for r in runner_rounds for v in r]
    python = [v for r in python_rounds for v in r]
    rm, pm = statistics.median(runner), statistics.median(python)
    return Row(case.name, rm, pm, rm / pm, case.goal, rm / pm <= case.goal, len(runner),
               len(python), pct(runner, 10), pct(runner, 90), pct(python, 10), pct(python, 90),
               bootstrap_ratio(runner_rounds, python_rounds))


def bootstrap_ratio(runner_rounds: list[list[float]], python_rounds: list[list[float]],
                    samples: int = 2000) -> tuple[float, float]:
    """95% interval of the ratio of medians, resampling whole rounds (paired, as interleaved)."""
    rng = np.random.default_rng(0)
    n = len(runner_rounds)
    ratios = []
    for _ in range(samples):
        pick = rng.integers(0, n, n)
        r = np.median(np.concatenate([runner_rounds[i] for i in pick]))
        p = np.median(np.concatenate([python_rounds[i] for i in pick]))
        ratios.append(r / p)
    return float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=0,
                        help="timed runs per round (default: by model, about 1 s per round)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", default="resnet20,light_resnet50,tiny_mlp")
    parser.add_argument("--cpu", type=int, default=-1,
                        help="pin this process and the runner (which inherits it) to one CPU; "
                             "default: the last CPU, -2 for no pinning")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.cpu != -2:
        import os

        # Both engines on the same core, and no migrations in the middle of a timed run.
        cpu = sorted(os.sched_getaffinity(0))[-1] if args.cpu == -1 else args.cpu
        os.sched_setaffinity(0, {cpu})

    sys.path.insert(0, str(REPO))
    from edgepack.runner.build import build_runner

    build = build_runner("host", log=lambda m: print(m, file=sys.stderr))
    makers = {"resnet20": resnet20, "light_resnet50": light_resnet50, "tiny_mlp": tiny_mlp}
    default_iterations = {"resnet20": 300, "light_resnet50": 10, "tiny_mlp": 3000}
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgepack-bench-") as tmp:
        for name in args.models.split(","):
            case = makers[name](Path(tmp))
            iterations = args.iterations or default_iterations[name]
            rows.append(measure(case, build.binary, args.rounds, iterations, args.warmup,
                                args.threads))
    if args.json:
        print(json.dumps({"runner": build.id, "threads": args.threads, "rounds": args.rounds,
                          "rows": [asdict(r) for r in rows]}, indent=2))
    else:
        import onnxruntime

        print(f"runner {build.id}; onnxruntime {onnxruntime.__version__} (Python); "
              f"threads {args.threads}; {args.rounds} interleaved rounds")
        print(f"{'model':<16}{'runner ms':>12}{'python ms':>12}{'ratio':>8}{'95% CI':>15}"
              f"{'goal':>7}  {'runner p10-p90':>18}{'python p10-p90':>18}  n")
        for r in rows:
            ci = f"{r.ratio_ci95[0]:.3f}-{r.ratio_ci95[1]:.3f}"
            print(f"{r.model:<16}{r.runner_median_ms:>12.4f}{r.python_median_ms:>12.4f}"
                  f"{r.ratio:>8.3f}{ci:>15}{'<=' + format(r.goal, '.2f'):>7}  "
                  f"{r.runner_p10_ms:>8.4f}-{r.runner_p90_ms:<9.4f}"
                  f"{r.python_p10_ms:>8.4f}-{r.python_p90_ms:<9.4f} {r.runner_n}/{r.python_n}"
                  f"  {'ok' if r.passed else 'MISSED'}")
    return 0 if all(r.passed for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
