"""Session creation time, ORT format against ONNX format, side by side in one run.

    python bench/ort_format_bench.py [--rounds 15] [--models resnet20,super_resolution]

Each example is exported, packed twice (`--format onnx` and `--format ort`, the same inputs),
and each bundle's session is created `--rounds` times, the two formats interleaved round by
round so a load change on the machine falls on both: in this process with onnxruntime's Python
API, and in the native host runner (its own `session_create_ms`, what a device reports). The
median of each and the ratio ORT/ONNX are printed; below 1 the ORT format loads faster.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import EXAMPLES, EXPORTS, PACK_ARGS, run_cli  # noqa: E402


def export(name: str, out: Path) -> Path:
    ref, inputs, dynamic = EXPORTS[name]
    path = out / f"{name}.onnx"
    args = ["export", EXAMPLES / ref, "-o", path]
    for i in inputs:
        args += ["--input", i]
    for d in dynamic:
        args += ["--dynamic", d]
    r = run_cli(*args)
    if r.code:
        raise SystemExit(r.stderr)
    return path


def pack(model: Path, out: Path, *extra: str) -> Path:
    r = run_cli("pack", model, "-o", out, *extra)
    if r.code:
        raise SystemExit(r.stderr)
    return out


def python_create_ms(model: Path) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    t0 = time.perf_counter()
    ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    return (time.perf_counter() - t0) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--models", default="resnet20,super_resolution")
    args = parser.parse_args()

    from edgepack.bundle import load_bundle
    from edgepack.runner.build import build_runner
    from edgepack.runner.local import run_local
    from edgepack.runner.result import RunConfig

    runner = build_runner("host")
    config = RunConfig(warmup=0, iterations=1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in args.models.split(","):
            model = export(name, work)
            bundles = {fmt: load_bundle(pack(model, work / f"{name}-{fmt}", *PACK_ARGS[name],
                                             "--format", fmt))
                       for fmt in ("onnx", "ort")}
            times: dict[tuple[str, str], list[float]] = {}
            for _ in range(args.rounds):
                for fmt, b in bundles.items():
                    times.setdefault(("python", fmt), []).append(
                        python_create_ms(b.predict_path))
                    result = run_local(runner, b.predict_path, b.set_dir(0), work / "out",
                                       config)
                    times.setdefault(("native", fmt), []).append(result.session_create_ms)
            sizes = {fmt: b.size_bytes() for fmt, b in bundles.items()}
            for engine in ("python", "native"):
                onnx_ms = statistics.median(times[(engine, "onnx")])
                ort_ms = statistics.median(times[(engine, "ort")])
                rows.append((name, engine, onnx_ms, ort_ms, ort_ms / onnx_ms,
                             sizes["onnx"], sizes["ort"]))
    print(f"session creation, median of {args.rounds} interleaved rounds (1 thread, CPU EP)")
    print(f"{'model':<18}{'engine':<8}{'onnx ms':>9}{'ort ms':>9}{'ort/onnx':>10}"
          f"{'onnx pushed':>13}{'ort pushed':>12}")
    for name, engine, onnx_ms, ort_ms, ratio, s_onnx, s_ort in rows:
        print(f"{name:<18}{engine:<8}{onnx_ms:>9.2f}{ort_ms:>9.2f}{ratio:>10.2f}"
              f"{s_onnx / 1024:>11.0f} K{s_ort / 1024:>10.0f} K")


if __name__ == "__main__":
    main()
