"""int8 and fp16 against float: accuracy cost and host latency, side by side in one run.

    python bench/quantize_bench.py [--rounds 5] [--iterations 20]
                                   [--models resnet20,super_resolution]

Each example is exported and packed three times with the same inputs (float, `--quantize int8`,
`--quantize fp16`; resnet20 with three input sets: its image and two random ones). The accuracy
cost is the one pack measured against the float model (the manifest's `quantization.cost`).
Latency is the native host runner's median over `--iterations` runs of input set 0, one thread,
the three bundles interleaved for `--rounds` rounds so a load change on the machine falls on all
of them; the ratio is against float (below 1: faster than float).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from ort_format_bench import PACK_ARGS, export, pack  # noqa: E402

EXTRA = {"resnet20": ["--random-sets", "2"]}
VARIANTS = {"float": [], "int8": ["--quantize", "int8"], "fp16": ["--quantize", "fp16"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--models", default="resnet20,super_resolution")
    args = parser.parse_args()

    from edgepack.bundle import load_bundle
    from edgepack.runner.build import build_runner
    from edgepack.runner.local import run_local
    from edgepack.runner.result import RunConfig

    runner = build_runner("host")
    config = RunConfig(warmup=2, iterations=args.iterations)
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in args.models.split(","):
            model = export(name, work)
            bundles = {v: load_bundle(pack(model, work / f"{name}-{v}", *PACK_ARGS[name],
                                           *EXTRA.get(name, []), *extra))
                       for v, extra in VARIANTS.items()}
            medians: dict[str, list[float]] = {v: [] for v in bundles}
            for _ in range(args.rounds):
                for v, b in bundles.items():
                    r = run_local(runner, b.predict_path, b.set_dir(0), work / "out", config)
                    medians[v].append(statistics.median(r.latencies_ms))
            base = statistics.median(medians["float"])
            for v, b in bundles.items():
                ms = statistics.median(medians[v])
                q = b.manifest.quantization
                cost = q.cost[0] if q is not None else None

                def show(x: float | None, spec: str) -> str:
                    return "-" if x is None else format(x, spec)

                lines.append(
                    f"{name:<18}{v:<7}{ms:>9.3f}{ms / base:>7.2f}{b.size_bytes() / 1024:>9.0f} K"
                    + (f"{show(cost.snr_db, '.1f'):>8}{show(cost.cosine, '.6f'):>10}"
                       f"{show(cost.top1_agreement, '.0%'):>7}{show(cost.top5_agreement, '.0%'):>7}"
                       f"{show(cost.max_abs_error, '.3g'):>10}" if cost else
                       f"{'(reference)':>16}"))
    print(f"host latency: native runner, 1 thread, median of {args.rounds} interleaved rounds of "
          f"{args.iterations} iterations' medians; accuracy cost against float, from pack")
    print(f"{'model':<18}{'kind':<7}{'ms':>9}{'ratio':>7}{'pushed':>11}{'SNR dB':>8}"
          f"{'cosine':>10}{'top-1':>7}{'top-5':>7}{'max abs':>10}")
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
