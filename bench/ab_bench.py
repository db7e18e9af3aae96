"""Issue 14's figures: does `edgepack ab` tell a 2 % difference, keep A/A quiet, survive a drift
that fools a bundle-major bench; and how regress's defaults fare on A/A and on a 3 % slowdown.

    python bench/ab_bench.py [--trials 20] [--targets host,virtual] [--max-seconds 60]

Bundles: a chain of --layers identical MatMul layers (--size x --size) against one more layer
(2 % more compute for 50 against 51). On each target (this machine's native runner; a virtual
adb device, reached through a private real adb server, running the same runner):

1. `ab` A against B, --trials times, each within --max-seconds: how often `slower` (target:
   at least 19 of 20);
2. `ab` A against A, --trials times: how often `same` or `inconclusive` (target: at least 19
   of 20, never faster or slower);
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
   false-regression rate on A/A and the detection rate of a 3 % slowdown (layers against
   100 layers against 103), --trials pairs of benches each.

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
    from edgepack.regress import latency_test

    mask = format(1 << args.cpu, "x")
    bench = BenchParams(repeat=1, iterations=args.iterations, warmup=1, cpu_affinity=mask,
                        probe_state=name != "host")
    params = AbParams(max_seconds=args.max_seconds)
    fig = Figures(name, ab_seconds=[], ab_ratios=[], aa_verdicts=[], drift=[])
    a, b = bundles["a"], bundles["b"]
    for trial in range(args.trials if "ab" in args.parts else 0):
        # Interleaved, so a drift of the machine hits both questions alike.
        r = run_ab_once(a, b, target, bench, params, work)
        fig.ab_trials += 1
        fig.ab_slower += r.verdict == "slower"
        fig.ab_seconds.append(r.wall_s)
        fig.ab_ratios.append(r.median.ratio if r.median else float("nan"))
        aa = run_ab_once(a, a, target, bench, params, work)
        fig.aa_trials += 1
        fig.aa_quiet += aa.verdict in ("same", "inconclusive")
        fig.aa_verdicts.append(aa.verdict)
        print(f"  {name} trial {trial + 1}: A/B {r.verdict} {_est(r)} in {r.wall_s:.0f} s "
              f"({len(r.rounds)} rounds, {r.stopped_by}); A/A {aa.verdict} {_est(aa)}"
              + "".join(f"; STOPPED: {x.error}" for x in (r, aa) if x.error), flush=True)

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

    # regress's defaults, as a bench with them makes runs: 3 runs a side of 50 iterations.
    rb = BenchParams(repeat=3, iterations=50, warmup=1, cpu_affinity=mask, probe_state=False)

    def runs_of(bundle) -> list[list[float]]:  # noqa: ANN001
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            result = run_bench([bundle], [target], rb, work_dir=Path(tmp))
        return [run.latencies_ms for run in result.runs if run.latencies_ms]

    for trial in range(args.trials if "regress" in args.parts else 0):
        base = runs_of(bundles["r100"])
        same, slower = runs_of(bundles["r100"]), runs_of(bundles["r103"])
        fig.regress_trials += 1
        t_same, t_slow = latency_test(base, same), latency_test(base, slower)
        fig.regress_false += t_same.regression
        fig.regress_detected += t_slow.regression
        fig.regress_slower_flagged += t_slow.slower
        print(f"  {name} regress trial {trial + 1}: A/A {t_same.verdict} "
              f"{t_same.interval_text()}; +3 % {t_slow.verdict} {t_slow.interval_text()}",
              flush=True)
    return fig


def _est(r) -> str:  # noqa: ANN001
    m = r.median
    return f"{m.ratio:.4f} [{m.low:.4f}, {m.high:.4f}]" if m else "(no interval)"


def report(figs: list[Figures], args: argparse.Namespace) -> bool:
    ok = True
    for f in figs:
        need = -(-19 * f.ab_trials // 20)  # 19 of 20, scaled to the trials run
        mean_s = sum(f.ab_seconds or [0]) / max(len(f.ab_seconds or []), 1)
        print(f"\n== {f.target} (chain {args.layers} vs {args.layers + 1}, {args.size}x"
              f"{args.size}, {args.iterations} iterations a run, CPU {args.cpu})")
        print(f"ab A/B says slower:           {f.ab_slower}/{f.ab_trials} (need {need}); "
              f"seconds per trial: mean {mean_s:.1f}, max {max(f.ab_seconds or [0]):.1f} "
              f"(limit {args.max_seconds:g}); ratios "
              + ", ".join(f"{x:.3f}" for x in f.ab_ratios or []))
        print(f"ab A/A same or inconclusive:  {f.aa_quiet}/{f.aa_trials} (need {need}); "
              f"verdicts {', '.join(f.aa_verdicts or [])}")
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
        print(f"regress defaults, A/A false regressions: {f.regress_false}/{f.regress_trials}; "
              f"3 % slowdown: regression (exit 1) {f.regress_detected}/{f.regress_trials}, "
              f"flagged slower {f.regress_slower_flagged}/{f.regress_trials}")
        ok &= f.ab_slower >= need and f.aa_quiet >= need
        ok &= all(v in ("same", "inconclusive") for v in f.aa_verdicts or [])
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--targets", default="host,virtual")
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--layers", type=int, default=50)
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--parts", default="ab,drift,regress",
                        help="which figures: ab, drift, regress (comma-separated)")
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
            "drift_a": load_bundle(chain_bundle(work, args.layers + 1, args.drift_size,
                                                "drift")),
            "drift_b": load_bundle(chain_bundle(work, args.layers, args.drift_size, "drift")),
            # A 3 % slowdown exactly: 103 layers against 100.
            "r100": load_bundle(chain_bundle(work, 100, args.size)),
            "r103": load_bundle(chain_bundle(work, 103, args.size)),
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
