"""Issue 14's figures: does `edgepack ab` tell a 2 % difference, keep A/A quiet, survive a drift
that fools a bundle-major bench; and how regress's defaults fare on A/A and on a 3 % slowdown.

    python bench/ab_bench.py [--trials 20] [--targets host,virtual] [--max-seconds 60]

Bundles: a chain of --layers identical MatMul layers (--size x --size) against one more layer
(2 % more compute for 50 against 51). On each target (this machine's native runner; a virtual
adb device, reached through a private real adb server, running the same runner):

1. `ab` A against B, --trials times, each within --max-seconds, with ab's defaults
   (--iterations auto, --precision 1, --figure median): how often `slower` (target: at least
   19 of 20); the other --figure's verdict on the same rounds is printed beside it;
2. `ab` A against A, --trials times: how often `same` or `inconclusive` (target: at least 19
   of 20);
2b. known (virtual device only): B is a copy of A under another name, and the device's clock
   knob slows every B run by exactly --known-factor (1.02): how often the interval covers it;
3. drift: A = a chain of --layers + 1 layers, B = --layers layers (B has 2 % LESS compute:
   the truth is `faster`), --drift-rounds rounds each order, a drift starting at the
   session's halfway run (a round boundary): interleaved (ABBA) and bundle-major (all A, then
   all B) side by side. Interleaved should say faster (at worst inconclusive); bundle-major
   reads the drift as B being slower. The drift: on the virtual device its own knob (the one
   `edgepack virtual-device --slowdown-after SECONDS:FACTOR` sets; here set at the halfway run
   through the in-process device, so it starts on a round boundary rather than at a guessed
   second): every inference --drift-factor times slower. On the host, --hogs CPU-bound
   processes pinned to the runner's CPU;
4. regress with its defaults (3 runs a side, 50 iterations, 99 % interval, 5 % margin): the
   false-regression rate on A/A (100 layers against a copy of itself) and the detection rate
   of a 3 % slowdown (100 layers against 103), --trials of each, both sides run interleaved
   ABBA by run as `regress --run-baseline` runs them; with --sequential-regress (default) also
   as two benches one after the other, for contrast.

The runner and the background load are pinned to one CPU (--cpu), so the drift's size does not
depend on what else the machine runs. Prints one table per target; exits 1 when a target of
the issue is missed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def chain_bundle(directory: Path, layers: int, size: int, tag: str = "") -> Path:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgepack.bundle import PackOptions, pack
    from edgepack.inputs import InputRequest

    w = (np.random.default_rng(0).standard_normal((size, size)) / np.sqrt(size)).astype(
        np.float32)
    nodes, prev = [], "x"
    for i in range(layers):
        out = "y" if i == layers - 1 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [prev, "w"], [out]))
        prev = out
    graph = helper.make_graph(
        nodes, f"chain{layers}", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, size])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    name = f"{tag}chain{layers}"
    path = directory / f"{name}.onnx"
    onnx.save(model, path)
    return pack(path, directory / name, InputRequest(random_sets=1, seed=0),
                PackOptions(name=name)).path


class Hog:
    """CPU-bound processes pinned to the runner's CPU: the drift. Several, so the runner's share
    of its CPU drops clearly even on a machine already busy with other work."""

    def __init__(self, cpu: int, count: int) -> None:
        self.cpu, self.count = cpu, count
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        code = f"import os; os.sched_setaffinity(0, {{{self.cpu}}})\nwhile True: pass"
        while len(self.procs) < self.count:
            self.procs.append(subprocess.Popen([sys.executable, "-c", code]))

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()
        self.procs = []


def start_at_run(hog: Hog, run_index: int):  # noqa: ANN201 - a BenchListener
    from edgepack.records import BenchListener

    class Trigger(BenchListener):
        def __init__(self) -> None:
            self.seen = 0

        def on_run_start(self, serial, bundle, config, repeat) -> None:  # noqa: ANN001
            if self.seen == run_index:
                hog.start()
            self.seen += 1

    return Trigger()


@dataclass
class Figures:
    target: str
    ab_slower: int = 0
    ab_trials: int = 0
    ab_seconds: list[float] | None = None
    ab_ratios: list[float] | None = None
    aa_quiet: int = 0
    aa_trials: int = 0
    aa_verdicts: list[str] | None = None
    drift: list[tuple[str, str, str]] | None = None  # (order, ratio [ci], verdict)
    regress_false: int = 0
    regress_slower_flagged: int = 0
    regress_detected: int = 0
    regress_trials: int = 0
    seq_false: int = 0
    seq_detected: int = 0
    seq_wrong_way: int = 0
    other_slower: int = 0  # the other --figure's verdicts on the same rounds
    other_aa_wrong: int = 0
    known: list[tuple[bool, str, str, int, float]] | None = None  # covered, verdict, est, n, s
    load: list[tuple[str, str]] | None = None


def run_ab_once(a, b, target, bench, params, work: Path, listeners=()):  # noqa: ANN001, ANN201
    from edgepack.ab import run_ab

    config = bench.configs(target.cpu_affinity)[0]
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        return run_ab(a, b, target, config, bench, params, work_dir=Path(tmp),
                      listeners=listeners)


class Slowdown:
    """The virtual device's drift knob, as Hog's interface: on at the halfway run, then off."""

    def __init__(self, device, factor: float) -> None:  # noqa: ANN001 - a VirtualDevice
        self.device, self.factor = device, factor

    def start(self) -> None:
        self.device.set_slowdown(0, self.factor)

    def stop(self) -> None:
        self.device.set_slowdown(None)


def measure(name: str, target, bundles: dict, args: argparse.Namespace,  # noqa: ANN001
            work: Path, device=None) -> Figures:  # noqa: ANN001 - an in-process VirtualDevice
    from edgepack.ab import AbParams
    from edgepack.bench import run_bench
    from edgepack.records import BenchParams
    from edgepack.regress import latency_test, run_interleaved

    mask = format(1 << args.cpu, "x")
    auto = args.iterations == "auto"
    bench = BenchParams(repeat=1, iterations=30 if auto else int(args.iterations), warmup=1,
                        cpu_affinity=mask, probe_state=name != "host")
    # ab's defaults (precision 1 %, equivalence 1 %, min 8 rounds), the 60 s limit.
    params = AbParams(max_seconds=args.max_seconds, auto_iterations=auto,
                      precision=args.precision / 100, figure=args.figure)
    fig = Figures(name, ab_seconds=[], ab_ratios=[], aa_verdicts=[], drift=[], known=[],
                  load=[])
    fig.load.append(("start", _load()))
    a, b = bundles["a"], bundles["b"]
    for trial in range(args.trials if "ab" in args.parts else 0):
        # Interleaved, so a drift of the machine hits both questions alike.
        r = run_ab_once(a, b, target, bench, params, work)
        fig.ab_trials += 1
        fig.ab_slower += r.verdict == "slower"
        fig.ab_seconds.append(r.wall_s)
        fig.ab_ratios.append(r.judged.ratio if r.judged else float("nan"))
        aa = run_ab_once(a, a, target, bench, params, work)
        fig.aa_trials += 1
        fig.aa_quiet += aa.verdict in ("same", "inconclusive")
        fig.aa_verdicts.append(aa.verdict)
        # The other figure's verdict on the same rounds (the session stopped by --figure's).
        other = (lambda x: x.p25) if args.figure == "median" else (lambda x: x.median)
        fig.other_slower += _verdict(other(r), params) == "slower"
        fig.other_aa_wrong += _verdict(other(aa), params) in ("faster", "slower")
        print(f"  {name} trial {trial + 1}: A/B {r.verdict} {_est(r)} in {r.wall_s:.0f} s "
              f"({len(r.rounds)} rounds of {r.iterations} iterations a run, {r.stopped_by}); "
              f"A/A {aa.verdict} {_est(aa)} in {aa.wall_s:.0f} s ({len(aa.rounds)} rounds, "
              f"{aa.stopped_by}); load {_load()}"
              + "".join(f"; STOPPED: {x.error}" for x in (r, aa) if x.error), flush=True)

    fig.load.append(("after ab", _load()))
    # A known ratio: B is A's bundle (a copy under another name) with the virtual device's
    # clock knob slowing every B run's inferences by exactly --known-factor: how often the
    # interval covers that ratio, and how often the verdict is `slower`.
    for trial in range(args.trials if "known" in args.parts and device is not None else 0):
        knob = slow_side(device, "B", args.known_factor, {bundles["a"].name: "A",
                                                          bundles["a_copy"].name: "B"})
        try:
            r = run_ab_once(bundles["a"], bundles["a_copy"], target, bench, params, work,
                            [knob])
        finally:
            device.set_slowdown(None)
        m = r.judged
        covered = m is not None and m.low <= args.known_factor <= m.high
        fig.known.append((covered, r.verdict, _est(r), len(r.rounds), r.wall_s))
        print(f"  {name} known x{args.known_factor:g} trial {trial + 1}: {r.verdict} {_est(r)}"
              f" covers: {covered}; {len(r.rounds)} rounds in {r.wall_s:.0f} s", flush=True)
    if fig.known:
        fig.load.append(("after known", _load()))

    # Drift: A has layers + 1, B layers: B is 2 % faster, the truth is `faster`. The drift
    # starts at the halfway run. On the host, iterations longer than the scheduler's slice
    # (--drift-size), so that sharing the CPU slows the median iteration and not only a few.
    rounds = args.drift_rounds
    da, db = bundles["drift_a"], bundles["drift_b"]
    drift_bench = replace(bench, iterations=args.drift_iterations)
    for order in ("abba", "bundle-major") if "drift" in args.parts else ():
        hog = (Slowdown(device, args.drift_factor) if device is not None
               else Hog(args.cpu, args.hogs))
        p = AbParams(min_rounds=rounds, max_rounds=rounds, max_seconds=1e5, order=order,
                     precision=1e-6)
        try:
            r = run_ab_once(da, db, target, drift_bench, p, work, [start_at_run(hog, rounds)])
        finally:
            hog.stop()
        fig.drift.append((order, _est(r), r.verdict if r.error is None else "error"))
        print(f"  {name} drift, {order}: {r.verdict} {_est(r)} over {len(r.usable_rounds)} "
              f"rounds; per round " + ", ".join(f"{x.ratio:.3f}" for x in r.rounds if x.ratio)
              + (f"; STOPPED: {r.error}" if r.error else ""), flush=True)

    if fig.drift:
        fig.load.append(("after drift", _load()))
    # regress's defaults: 3 runs a side of 50 iterations, a 99 % interval, a 5 % margin.
    # `regress --run-baseline` runs both sides itself, interleaved ABBA by run; for contrast,
    # the two benches one after the other (stored baseline, then the candidate).
    rb = BenchParams(repeat=3, iterations=50, warmup=1, cpu_affinity=mask, probe_state=False)

    def runs_of(bundle) -> list[list[float]]:  # noqa: ANN001
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            result = run_bench([bundle], [target], rb, work_dir=Path(tmp))
        return [run.latencies_ms for run in result.runs if run.latencies_ms]

    def interleaved(base, cand):  # noqa: ANN001, ANN202
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            r = run_interleaved(base, cand, target, rb, work_dir=Path(tmp))
        return latency_test([x.a.latencies_ms for x in r.usable_rounds],
                            [x.b.latencies_ms for x in r.usable_rounds if x.b is not None])

    for trial in range(args.trials if "regress" in args.parts else 0):
        fig.regress_trials += 1
        i_same = interleaved(bundles["r100"], bundles["r100_copy"])
        i_slow = interleaved(bundles["r100"], bundles["r103"])
        fig.regress_false += i_same.regression
        fig.regress_detected += i_slow.regression
        fig.regress_slower_flagged += i_slow.slower
        line = (f"  {name} regress trial {trial + 1}: interleaved A/A {i_same.verdict} "
                f"{i_same.interval_text()}; +3 % {i_slow.verdict} {i_slow.interval_text()}")
        if args.sequential_regress:
            base = runs_of(bundles["r100"])
            same, slower = runs_of(bundles["r100"]), runs_of(bundles["r103"])
            t_same, t_slow = latency_test(base, same), latency_test(base, slower)
            fig.seq_false += t_same.regression
            fig.seq_detected += t_slow.regression
            fig.seq_wrong_way += t_same.improvement or t_same.faster
            line += (f" | one after the other: A/A {t_same.verdict} {t_same.interval_text()}; "
                     f"+3 % {t_slow.verdict} {t_slow.interval_text()}")
        print(line, flush=True)
    if fig.regress_trials:
        fig.load.append(("after regress", _load()))
    return fig


def _load() -> str:
    """The machine's load when a figure was taken (1, 5 and 15 minutes): it is shared."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def slow_side(device, side: str, factor: float,  # noqa: ANN001, ANN201 - a VirtualDevice
              sides: dict[str, str]):
    """A BenchListener: the virtual device's clock knob on for one side's runs, off for the
    other's (set before each run starts, so a whole run is slowed or none of it)."""
    from edgepack.records import BenchListener

    class SlowSide(BenchListener):
        def on_run_start(self, serial, bundle, config, repeat) -> None:  # noqa: ANN001
            if sides.get(bundle.name) == side:
                device.set_slowdown(0, factor)
            else:
                device.set_slowdown(None)

    return SlowSide()


def _verdict(e, params) -> str:  # noqa: ANN001
    return e.verdict(params.equivalence) if e is not None else "inconclusive"


def _est(r) -> str:  # noqa: ANN001
    m = r.judged
    return f"{m.ratio:.4f} [{m.low:.4f}, {m.high:.4f}]" if m else "(no interval)"


def report(figs: list[Figures], args: argparse.Namespace) -> bool:
    ok = True
    for f in figs:
        need = -(-19 * f.ab_trials // 20)  # 19 of 20, scaled to the trials run
        mean_s = sum(f.ab_seconds or [0]) / max(len(f.ab_seconds or []), 1)
        print(f"\n== {f.target} (chain {args.layers} vs {args.layers + 1}, {args.size}x"
              f"{args.size}, --iterations {args.iterations}, --precision {args.precision:g} %, "
              f"CPU {args.cpu})")
        print(f"ab A/B says slower:           {f.ab_slower}/{f.ab_trials} (need {need}); "
              f"seconds per trial: mean {mean_s:.1f}, max {max(f.ab_seconds or [0]):.1f} "
              f"(limit {args.max_seconds:g}); ratios "
              + ", ".join(f"{x:.3f}" for x in f.ab_ratios or []))
        print(f"ab A/A same or inconclusive:  {f.aa_quiet}/{f.aa_trials} (need {need}); "
              f"verdicts {', '.join(f.aa_verdicts or [])}")
        other = "p25" if args.figure == "median" else "median"
        if f.ab_trials:
            print(f"    the {other} ratio on the same rounds: A/B slower {f.other_slower}/"
                  f"{f.ab_trials}, A/A faster or slower {f.other_aa_wrong}/{f.aa_trials}")
        how = (f"the device's slowdown knob, x{args.drift_factor:g}" if f.target != "host"
               else f"{args.hogs} CPU-bound process(es) on the runner's CPU")
        print(f"drift (B has 2 % less compute: truth `faster`; {args.drift_size}x"
              f"{args.drift_size}; {how} from the halfway run; {args.drift_rounds} rounds):")
        print(f"    {'order':13} {'verdict':13} {'B/A [95 % CI]':26} judged")
        for order, est, verdict in f.drift or []:
            right = ("right" if verdict == "faster" else "WRONG" if verdict == "slower"
                     else "no verdict")
            print(f"    {order:13} {verdict:13} {est:26} {right}")
        verdicts = dict((o, v) for o, _, v in f.drift or [])
        if verdicts:
            print(f"    side by side: interleaved {verdicts.get('abba', '-')}, bundle-major "
                  f"{verdicts.get('bundle-major', '-')} (truth: faster)")
        # Interleaving must never turn the drift into the wrong answer.
        ok &= verdicts.get("abba") in (None, "faster", "inconclusive")
        if f.known:
            cov = sum(c for c, *_ in f.known)
            slow = sum(v == "slower" for _, v, *_ in f.known)
            print(f"known ratio x{args.known_factor:g} (B's runs slowed by the device's clock "
                  f"knob): interval covers it {cov}/{len(f.known)}, says slower "
                  f"{slow}/{len(f.known)}; rounds " + ", ".join(str(x[3]) for x in f.known))
        print(f"regress defaults, --run-baseline (interleaved): A/A false regressions "
              f"{f.regress_false}/{f.regress_trials}; 3 % slowdown: regression (exit 1) "
              f"{f.regress_detected}/{f.regress_trials}, flagged slower "
              f"{f.regress_slower_flagged}/{f.regress_trials}")
        if args.sequential_regress and f.regress_trials:
            print(f"regress defaults, benches one after the other: A/A false regressions "
                  f"{f.seq_false}/{f.regress_trials} (read as faster: {f.seq_wrong_way}); "
                  f"3 % slowdown: regression {f.seq_detected}/{f.regress_trials}")
        print("load (1/5/15 min) " + "; ".join(f"{w}: {x}" for w, x in f.load or []))
        ok &= f.ab_slower >= need and f.aa_quiet >= need
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--targets", default="host,virtual")
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--layers", type=int, default=50)
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--iterations", default="auto",
                        help="ab's iterations per run: auto (ab's default) or a number")
    parser.add_argument("--figure", default="median", choices=("median", "p25"),
                        help="ab's --figure (its default: median)")
    parser.add_argument("--precision", type=float, default=1.0,
                        help="ab's --precision, percent (its default: 1)")
    parser.add_argument("--parts", default="ab,known,drift,regress",
                        help="which figures: ab, known, drift, regress (comma-separated)")
    parser.add_argument("--known-factor", type=float, default=1.02,
                        help="known: the virtual device slows B's runs by exactly this")
    parser.add_argument("--sequential-regress", action=argparse.BooleanOptionalAction,
                        default=True, help="regress: also the two benches one after the other")
    parser.add_argument("--drift-rounds", type=int, default=10)
    parser.add_argument("--drift-size", type=int, default=1024)
    parser.add_argument("--drift-iterations", type=int, default=10)
    parser.add_argument("--cpu", type=int, default=max(os.sched_getaffinity(0)))
    parser.add_argument("--hogs", type=int, default=1,
                        help="CPU-bound processes of the host's drift")
    parser.add_argument("--drift-factor", type=float, default=1.5,
                        help="the virtual device's drift: inferences this many times slower")
    args = parser.parse_args()

    from edgepack.bench import device_target, host_target
    from edgepack.bundle import load_bundle
    from edgepack.runner.build import build_runner

    build_runner("host")  # the virtual device runs the host's runner too
    t0 = time.monotonic()
    figs = []
    with tempfile.TemporaryDirectory(prefix="edgepack-ab-bench-") as tmp:
        work = Path(tmp)
        bundles = {
            "a": load_bundle(chain_bundle(work, args.layers, args.size)),
            "b": load_bundle(chain_bundle(work, args.layers + 1, args.size)),
            # The same model under another name: A/A for the known ratio and for regress.
            "a_copy": load_bundle(chain_bundle(work, args.layers, args.size, "copy")),
            "drift_a": load_bundle(chain_bundle(work, args.layers + 1, args.drift_size,
                                                "drift")),
            "drift_b": load_bundle(chain_bundle(work, args.layers, args.drift_size, "drift")),
            # A 3 % slowdown exactly: 103 layers against 100.
            "r100": load_bundle(chain_bundle(work, 100, args.size)),
            "r103": load_bundle(chain_bundle(work, 103, args.size)),
            "r100_copy": load_bundle(chain_bundle(work, 100, args.size, "copy")),
        }
        targets = [t.strip() for t in args.targets.split(",") if t.strip()]
        if "host" in targets:
            figs.append(measure("host", host_target("native"), bundles, args, work))
        if "virtual" in targets:
            from edgepack.devices.adb import AdbDevice, ServerAddress
            from edgepack.devices.virtual.harness import AdbServer, DeviceFactory

            with AdbServer() as server, DeviceFactory(server, work / "vd") as factory:
                dev = factory.start()
                target = device_target(AdbDevice(dev.serial,
                                                 ServerAddress(server.host, server.port)))
                figs.append(measure("virtual device", target, bundles, args, work,
                                    device=dev.device))
    ok = report(figs, args)
    print(f"\n{time.monotonic() - t0:.0f} s in all")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
