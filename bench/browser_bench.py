"""The browser against the native runner on this machine, side by side in one run (issue 17).

    python bench/browser_bench.py [--quick] [--rounds 5] [--iterations 20] [--examples a,b]
                                  [--json]

For each of the tutorials' examples (ResNet-20, super-resolution, the face detector and parser,
fast-neural-style), exported and packed as their docstrings say: onnxruntime-web's WASM backend
in headless Chromium with 1 and 2 threads, against edgepack-runner (onnxruntime, native) on the
host with 1 and 2 threads. Both go through edgepack's executors (`edgepack deploy --device
browser` and `edgepack run --engine native` do the same), so timing is each side's own: the
runner's clock around Run, performance.now() around session.run in the page. The four
configurations run in interleaved rounds, in an order that flips every round, so the load of
this shared machine lands on all of them alike.

Per example and configuration: median and p90 over every timed iteration of every round, the
median session creation time (each browser run is a fresh page, as numThreads needs, so the
page's includes initialising onnxruntime-web's WASM module), and the largest absolute
difference of any output from the host's expected outputs (onnxruntime on this machine, at pack
time), with the verdict.
Needs the host runner (`edgepack runner build --target host`), Chromium and Playwright.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"

sys.path.insert(0, str(REPO))
from examples.recipes import RECIPES as CASES  # noqa: E402

SIDES = (("host", 1), ("browser", 1), ("browser", 2), ("host", 2))


@dataclass
class Side:
    """One configuration of one example, pooled over rounds."""

    where: str  # "host" (native runner) or "browser" (onnxruntime-web wasm)
    threads: int
    latencies_ms: list[float] = field(default_factory=list)
    session_create_ms: list[float] = field(default_factory=list)
    max_abs_diff: float = 0.0
    passed: bool = True
    threads_used: int | None = None
    engine: str = ""

    def pct(self, q: float) -> float:
        import numpy as np

        return float(np.percentile(self.latencies_ms, q))


@dataclass
class Row:
    example: str
    sides: list[Side]

    def side(self, where: str, threads: int) -> Side:
        return next(s for s in self.sides if (s.where, s.threads) == (where, threads))


def cli(*args: str | Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "edgepack", *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"edgepack {args[0]} failed:\n{proc.stderr[-2000:]}")


def make_bundle(name: str, work: Path) -> Path:
    ref, export_args, pack_args = CASES[name]
    onnx_path, bundle = work / f"{name}.onnx", work / name
    cli("export", EXAMPLES / ref, "-o", onnx_path, *export_args)
    cli("pack", onnx_path, "-o", bundle, *pack_args)
    return bundle


def measure(name: str, bundle_dir: Path, rounds: int, warmup: int, iterations: int,
            work: Path) -> Row:
    from contextlib import ExitStack

    from edgepack.bundle import load_bundle
    from edgepack.executors import NativeExecutor, judge
    from edgepack.runner.result import RunConfig
    from edgepack.web.executor import BrowserExecutor

    bundle = load_bundle(bundle_dir)
    sides = [Side(where, threads) for where, threads in SIDES]
    base = RunConfig(warmup=warmup, iterations=iterations, threads=1)
    with ExitStack() as stack:
        # Prepared once per side: the runner found, the browser started; each run below is one
        # runner process or one fresh page, as deploy and bench do it.
        prepared = {
            "host": stack.enter_context(NativeExecutor().prepare(bundle, base)),
            "browser": stack.enter_context(BrowserExecutor().prepare(bundle, base)),
        }
        for r in range(rounds):
            for side in (sides if r % 2 == 0 else sides[::-1]):
                out = work / f"{name}-{side.where}-t{side.threads}-r{r}"
                config = RunConfig(warmup=warmup, iterations=iterations, threads=side.threads)
                result = prepared[side.where].run_set(0, config, out)
                verdicts = judge(bundle, 0, out)
                side.latencies_ms += result.latencies_ms
                side.session_create_ms.append(result.session_create_ms)
                side.threads_used = result.threads_used
                side.engine = (result.runner_version if side.where == "browser" else
                               f"edgepack-runner {result.runner_version}, onnxruntime "
                               f"{result.onnxruntime_version}")
                side.passed = side.passed and all(v.passed for v in verdicts)
                side.max_abs_diff = max(
                    [side.max_abs_diff]
                    + [v.metrics.max_abs_error for v in verdicts if v.metrics is not None])
    return Row(name, sides)


def table(rows: list[Row]) -> str:
    head = ("| example | host t1 med / p90 | browser t1 med / p90 | browser / host t1 | "
            "host t2 med / p90 | browser t2 med / p90 | browser / host t2 | "
            "session create host / browser | max abs diff browser (host runner) |")
    lines = [head, "|" + "---|" * 9]
    for row in rows:
        cells = [row.example]
        for threads in (1, 2):
            h, b = row.side("host", threads), row.side("browser", threads)
            cells += [f"{statistics.median(h.latencies_ms):.2f} / {h.pct(90):.2f}",
                      f"{statistics.median(b.latencies_ms):.2f} / {b.pct(90):.2f}",
                      f"{statistics.median(b.latencies_ms) / statistics.median(h.latencies_ms):.2f}"
                      "x"]
        host = row.side("host", 1).session_create_ms + row.side("host", 2).session_create_ms
        web = row.side("browser", 1).session_create_ms + row.side("browser", 2).session_create_ms
        cells.append(f"{statistics.median(host):.1f} / {statistics.median(web):.1f} ms")
        web_diff = max(row.side("browser", t).max_abs_diff for t in (1, 2))
        host_diff = max(row.side("host", t).max_abs_diff for t in (1, 2))
        ok = all(s.passed for s in row.sides)
        cells.append(f"{web_diff:.3g} ({host_diff:.3g}){'' if ok else ' FAIL'}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 rounds of 5 iterations: a smoke run, not figures to quote")
    parser.add_argument("--rounds", type=int, default=None, help="default 5 (--quick: 2)")
    parser.add_argument("--iterations", type=int, default=None,
                        help="timed runs per configuration and round (default 20, --quick: 5)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--examples", default=",".join(CASES))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 5)
    iterations = args.iterations or (5 if args.quick else 20)
    names = [n.strip() for n in args.examples.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown example {unknown[0]!r}: choose from {', '.join(CASES)}")

    sys.path.insert(0, str(REPO))
    from edgepack.runner.cache import find_runner

    if find_runner("host") is None:
        raise SystemExit("no host runner: run `edgepack runner build --target host` first")
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgepack-browser-bench-") as tmp:
        work = Path(tmp)
        for name in names:
            print(f"{name}: export and pack ...", file=sys.stderr)
            bundle = make_bundle(name, work)
            print(f"{name}: {rounds} round(s) x {len(SIDES)} configurations ...",
                  file=sys.stderr)
            rows.append(measure(name, bundle, rounds, args.warmup, iterations, work))
    if args.json:
        print(json.dumps({"rounds": rounds, "iterations": iterations, "warmup": args.warmup,
                          "rows": [asdict(r) for r in rows]}, indent=2))
        return 0
    print(f"{rounds} round(s) x {iterations} iteration(s) per configuration, after "
          f"{args.warmup} warm-up run(s); ms; the order of configurations flips every round")
    engines = {s.where: s.engine for r in rows for s in r.sides}
    print(f"host: {engines.get('host', '?')}; browser: {engines.get('browser', '?')} (wasm)")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
