"""Is B really faster than A? Both bundles on one device, interleaved in rounds.

A bundle-major bench (every run of A, then every run of B, as FAI-PEP runs treatment and
control) puts any drift of the session (a phone heating, a governor change, a background job)
on one side only, and reads it as a difference between the bundles. Here each round runs A and
B once each, alternating which goes first (ABBA: AB, BA, AB, BA, ...), so a drift that is
linear over two rounds lands on both sides equally; each run is a fresh runner invocation with
its own warm-up, and both run with the same configuration (threads, EP, affinity, cooldown).

The statistics (docs/statistics.md has the derivation):

- the units are rounds, not iterations: iterations within one invocation are correlated (the
  same process, the same frequency, the same cache state), so treating them as independent
  gives intervals far too narrow;
- per round, the ratio B/A of the two runs' medians (also of their means and p90s); the
  estimate is the 25 % trimmed mean of the rounds' log ratios (the mean of their middle half),
  exponentiated. On a shared machine a round whose A or B run lands in a burst of another
  process's work is an outlier several times the typical round's spread; the trimmed mean
  ignores those without the jumpy, hard-to-bootstrap behaviour of the plain median, and B/A
  and A/B still give reciprocal answers;
- the 95 % interval is a bootstrap over rounds (seeded: the same rounds give the same
  interval) of that trimmed mean, widened for small samples as Hesterberg's "expanded
  percentile" bootstrap does (by sqrt(n / (n - 1)) and t(n-1) / z), since the plain
  percentile bootstrap covers too little with few units;
- rounds are short and many: with `--iterations auto` (the default) the first round runs
  AUTO_FIRST_ITERATIONS iterations and later rounds as many as make a run's timed part about
  a third of its start-up (process start, session creation, warm-up, file I/O), measured in
  that first round, from AUTO_MIN_ITERATIONS to AUTO_MAX_ITERATIONS. Longer runs do not
  help: the noise between runs comes from the machine's state over a second or so, not from
  too few iterations (docs/statistics.md has the measurements);
- verdict for B against A: `same` when the whole interval lies inside 1 +/- --equivalence,
  else `slower` when it lies above 1, `faster` when below, else `inconclusive`;
- stopping rule: rounds go on until the interval's half-width is at most --precision (after at
  least --min-rounds), or until --max-seconds would be passed by another round; the result
  says which ended it. Rounds with an invalid run (edgepack.validity) are kept and shown but
  left out of the statistics.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from edgepack.errors import EdgepackError, ExitCode
from edgepack.records import (
    BenchListener,
    BenchParams,
    BenchPlan,
    BenchResult,
    BenchRun,
    BundleRef,
    RunStatus,
)
from edgepack.stats import LatencyStats, latency_stats
from edgepack.validity import Validity, ValidityRules, Verdict, combine, judge_run

if TYPE_CHECKING:
    import numpy as np

    from edgepack.bench import Target
    from edgepack.bundle import Bundle
    from edgepack.compare import OutputVerdict
    from edgepack.runner.result import RunConfig

ORDERS = ("abba", "bundle-major")
# --figure: which of a run's figures the ratio, the stopping rule and the verdict rest on. The
# median is the issue's; p25 (the first quartile) is for a machine shared with other work:
# another process's bursts lengthen a run's slower iterations first, so its first quartile
# moves less than its median (measured: docs/statistics.md).
FIGURES = {"median": "median_ms", "p25": "q1_ms"}
VERDICTS = ("faster", "slower", "same", "inconclusive")
# Stopped by: the interval got narrow enough; the time ran out; --max-rounds (or the rounds
# planned for a bundle-major session) were run; a run failed (a device lost); Ctrl-C.
STOPPED_BY = ("precision", "max-seconds", "rounds", "error", "interrupted")
RESAMPLES = 4000
# Each side of the trimmed mean drops this share of the rounds (0.25: the midmean).
TRIM = 0.25
# --iterations auto: the first round's iterations, and the bounds on what later rounds get.
AUTO_FIRST_ITERATIONS = 30
AUTO_MIN_ITERATIONS = 10
AUTO_MAX_ITERATIONS = 50
AUTO_TIMED_SHARE = 1 / 3  # a run's timed part, as a share of its start-up


@dataclass(frozen=True)
class AbParams:
    """The A/B loop's own settings; the run configuration comes from BenchParams."""

    min_rounds: int = 8
    max_rounds: int | None = None  # None: the stopping rule and --max-seconds decide
    max_seconds: float = 300.0
    precision: float = 0.01  # the interval's half-width, as a fraction of the ratio
    equivalence: float = 0.01  # `same`: the interval inside 1 +/- this
    max_slowdown: float | None = None  # exit 1 when B is slower than this with confidence
    cooldown_s: float = 0.0
    cooldown_auto: bool = False
    order: str = "abba"
    figure: str = "median"  # one of FIGURES
    # --iterations auto: size each run's iterations after the first round (size_iterations)
    auto_iterations: bool = False
    seed: int = 0
    level: float = 0.95
    rules: ValidityRules = field(default_factory=ValidityRules)

    def __post_init__(self) -> None:
        if self.min_rounds < 2:
            raise EdgepackError("--min-rounds must be >= 2: an interval needs two rounds")
        if self.max_rounds is not None and self.max_rounds < self.min_rounds:
            raise EdgepackError("--max-rounds must be >= --min-rounds")
        if not math.isfinite(self.max_seconds) or self.max_seconds <= 0:
            raise EdgepackError("--max-seconds must be a finite number > 0")
        if not math.isfinite(self.precision) or self.precision <= 0:
            raise EdgepackError("--precision must be > 0 %: an interval never has width 0")
        if not math.isfinite(self.equivalence) or not 0 <= self.equivalence < 1:
            raise EdgepackError("--equivalence must be >= 0 % and < 100 %")
        if self.max_slowdown is not None and (not math.isfinite(self.max_slowdown)
                                              or self.max_slowdown < 0):
            raise EdgepackError("--max-slowdown must be a finite number >= 0 %")
        if not math.isfinite(self.cooldown_s) or self.cooldown_s < 0:
            raise EdgepackError("--cooldown must be auto or a number of seconds >= 0")
        if self.figure not in FIGURES:
            raise EdgepackError(f"--figure must be one of {', '.join(FIGURES)}")
        if self.order not in ORDERS:
            raise EdgepackError(f"--order must be one of {', '.join(ORDERS)}")
        if not 0 < self.level < 1:
            raise EdgepackError("the confidence level must be between 0 and 1")


# ---------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class RatioEstimate:
    """B / A over paired rounds: the geometric mean of the rounds' ratios and its interval."""

    ratio: float
    low: float
    high: float
    rounds: int
    level: float

    @property
    def half_width(self) -> float:
        """Half the interval's width, relative to the ratio (0.01: +/- 1 %)."""
        return (self.high - self.low) / 2 / self.ratio

    def verdict(self, equivalence: float) -> str:
        if 1 - equivalence <= self.low and self.high <= 1 + equivalence:
            return "same"
        if self.low > 1:
            return "slower"
        if self.high < 1:
            return "faster"
        return "inconclusive"


def trimmed_mean(x: np.ndarray, trim: float = TRIM) -> np.ndarray:
    """The mean of each row (or of a 1-d array) after dropping floor(trim * n) of the lowest
    and of the highest values."""
    import numpy as np

    n = x.shape[-1]
    g = int(math.floor(trim * n))
    return np.sort(x, axis=-1)[..., g:n - g].mean(axis=-1)


def bootstrap_ratio(a: Sequence[float], b: Sequence[float], level: float = 0.95,
                    seed: int = 0, resamples: int = RESAMPLES,
                    trim: float = TRIM) -> RatioEstimate:
    """The ratio B/A of paired per-round figures: the trimmed mean of the rounds' log ratios,
    with an expanded-percentile bootstrap interval over rounds (see the module's docstring).
    Needs two rounds with positive figures."""
    import numpy as np
    from scipy.stats import norm, t

    if len(a) != len(b):
        raise ValueError("paired rounds: a and b need the same length")
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x > 0 and y > 0]
    n = len(pairs)
    if n < 2:
        raise ValueError("an interval needs at least two rounds")
    d = np.log(np.array([y for _, y in pairs]) / np.array([x for x, _ in pairs]))
    centre = float(trimmed_mean(d, trim))
    rng = np.random.default_rng(seed)
    means = trimmed_mean(d[rng.integers(0, n, size=(resamples, n))], trim)
    tail = (1 - level) / 2
    q_lo, q_hi = np.quantile(means, [tail, 1 - tail])
    # n - 1 degrees of freedom, as for a mean: simulated, the interval then covers 95-97 %
    # from 8 rounds on, with or without outliers (tests/lab/test_ab_calibration.py); those of
    # the rounds the trim keeps (Tukey-McLaughlin) cover 98-99.5 % at 8-20 rounds.
    widen = math.sqrt(n / (n - 1)) * float(t.ppf(1 - tail, n - 1)) / float(norm.ppf(1 - tail))
    low = centre + widen * (float(q_lo) - centre)
    high = centre + widen * (float(q_hi) - centre)
    return RatioEstimate(math.exp(centre), math.exp(low), math.exp(high), n, level)


def size_iterations(runs: Sequence[tuple[float, Sequence[float]]]) -> int:
    """--iterations auto: how many iterations make a run's timed part about a third of its
    start-up (AUTO_TIMED_SHARE), from finished runs given as (wall seconds, iteration latencies
    in ms), from AUTO_MIN_ITERATIONS to AUTO_MAX_ITERATIONS.

    Why short: the noise between rounds (the machine's state over a second or so) does not
    shrink with longer runs, and a shorter round means more rounds, the units of the interval,
    in the same time; the noise of a run's own median does shrink with its iterations, hence
    the floor. Measured on this project's 2-core CI machine while shared (docs/statistics.md):
    50 iterations a run gave the narrowest interval per minute, at loads from 2 to 10; 100-200
    (timed as long as the start-up, or longer) and 15 gave wider ones. Under load the
    start-up itself grows (2 s at a load of 14), hence the cap rather than a share alone."""
    import numpy as np

    overheads, iteration_s = [], []
    for wall_s, latencies in runs:
        if not latencies:
            continue
        overheads.append(max(wall_s - sum(latencies) / 1e3, 0.0))
        iteration_s.append(float(np.median(latencies)) / 1e3)
    if not overheads:
        return AUTO_FIRST_ITERATIONS
    per = max(float(np.median(iteration_s)), 1e-6)
    wanted = math.ceil(AUTO_TIMED_SHARE * float(np.median(overheads)) / per)
    return min(max(wanted, AUTO_MIN_ITERATIONS), AUTO_MAX_ITERATIONS)


def round_order(index: int, order: str = "abba") -> str:
    """Which bundle runs first in round `index`: ABBA alternates, so neither always leads."""
    if order == "bundle-major":
        return "AB"
    return "AB" if index % 2 == 0 else "BA"


def bundle_major_schedule(rounds: int) -> list[tuple[int, str]]:
    """(round, side) in the order a bundle-major session runs them: every A, then every B."""
    return [(k, "A") for k in range(rounds)] + [(k, "B") for k in range(rounds)]


def abba_schedule(rounds: int) -> list[tuple[int, str]]:
    return [(k, side) for k in range(rounds) for side in round_order(k)]


@dataclass(frozen=True)
class StopDecision:
    stop: bool
    reason: str | None


def should_stop(estimate: RatioEstimate | None, usable_rounds: int, elapsed_s: float,
                round_s: float, params: AbParams) -> StopDecision:
    """After a round: stop when the interval is narrow enough (after --min-rounds), or when one
    more round (as long as the last) would run past --max-seconds."""
    if (estimate is not None and usable_rounds >= params.min_rounds
            and estimate.half_width <= params.precision):
        return StopDecision(True, "precision")
    if params.max_rounds is not None and usable_rounds >= params.max_rounds:
        return StopDecision(True, "rounds")
    if elapsed_s + round_s > params.max_seconds:
        return StopDecision(True, "max-seconds")
    return StopDecision(False, None)


# ---------------------------------------------------------------------------- records


@dataclass(frozen=True)
class AbRound:
    index: int
    order: str  # "AB" or "BA"
    a: BenchRun
    b: BenchRun | None  # None: the round was cut off after A (or before B) by an error
    validity: Validity
    cooldown_s: float = 0.0  # waited before the round's runs, in all

    @property
    def complete(self) -> bool:
        return (self.b is not None and self.a.result is not None
                and self.b.result is not None)

    @property
    def usable(self) -> bool:
        return self.complete and self.validity.usable

    def stats(self, side: str) -> LatencyStats | None:
        run = self.a if side == "A" else self.b
        return latency_stats(run.latencies_ms) if run is not None and run.latencies_ms else None

    @property
    def ratio(self) -> float | None:
        a, b = self.stats("A"), self.stats("B")
        if a is None or b is None or not a.median_ms > 0:
            return None
        return b.median_ms / a.median_ms


@dataclass(frozen=True)
class OutputDiff:
    """B's outputs against A's on one input set (A is the reference)."""

    set_index: int
    verdicts: list[OutputVerdict]

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.verdicts)


@dataclass(frozen=True)
class AbResult:
    session: str
    label: str | None
    serial: str
    a: BundleRef
    b: BundleRef
    config_key: str
    params: AbParams
    rounds: list[AbRound]
    median: RatioEstimate | None  # of the usable rounds' medians
    mean: RatioEstimate | None
    p90: RatioEstimate | None
    verdict: str  # one of VERDICTS; "inconclusive" below two usable rounds
    stopped_by: str
    wall_s: float
    outputs: list[OutputDiff] = field(default_factory=list)
    outputs_note: str | None = None  # why outputs were not compared
    error: str | None = None  # what stopped a session cut short by a failed run
    notes: list[str] = field(default_factory=list)
    iterations: int | None = None  # a run's timed iterations after the first round
    p25: RatioEstimate | None = None  # of the usable rounds' first quartiles

    @property
    def judged(self) -> RatioEstimate | None:
        """The estimate the verdict and the stopping rule rest on (--figure)."""
        return self.median if self.params.figure == "median" else self.p25

    @property
    def usable_rounds(self) -> list[AbRound]:
        return [r for r in self.rounds if r.usable]

    @property
    def excluded(self) -> list[AbRound]:
        """Complete rounds left out of the statistics because a run was invalid."""
        return [r for r in self.rounds if r.complete and not r.validity.usable]

    def side_stats(self, side: str) -> LatencyStats | None:
        """Every iteration of one bundle over the usable rounds."""
        runs = [r.a if side == "A" else r.b for r in self.usable_rounds]
        samples = [x for run in runs if run is not None for x in run.latencies_ms]
        return latency_stats(samples) if samples else None

    @property
    def too_slow(self) -> bool:
        """B is slower than A by more than --max-slowdown, with confidence."""
        judged = self.judged
        return (self.params.max_slowdown is not None and judged is not None
                and judged.low > 1 + self.params.max_slowdown)

    @property
    def outputs_differ(self) -> bool:
        return any(not d.passed for d in self.outputs)

    @property
    def exit_code(self) -> ExitCode:
        if self.stopped_by == "error":
            return ExitCode.DEVICE
        if self.too_slow:
            return ExitCode.MISMATCH
        return ExitCode.OK


class AbListener:
    """Hears the A/B session as it goes (the CLI prints a line per round)."""

    def on_round(self, rnd: AbRound, estimate: RatioEstimate | None) -> None:
        pass


# ---------------------------------------------------------------------------- the loop


def ab_params_for_history(bench: BenchParams, rounds_hint: int) -> BenchParams:
    return replace(bench, repeat=max(1, rounds_hint), kind="ab")


def run_ab(
    bundle_a: Bundle,
    bundle_b: Bundle,
    target: Target,
    config: RunConfig,
    bench: BenchParams,
    params: AbParams,
    *,
    work_dir: Path,
    listeners: Sequence[BenchListener] = (),
    progress: AbListener | None = None,
    label: str | None = None,
    session: str | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> AbResult:
    """Run A and B in rounds on `target` until the stopping rule ends it; every run goes to
    `listeners` (the history store) as it ends, so a session cut short keeps what it ran."""
    from edgepack.bench import _alive, _one_run, cool_down
    from edgepack.devices.state import now_iso, probe_state

    progress = progress or AbListener()
    refs = {"A": BundleRef(bundle_a.name, bundle_a.sha256, str(bundle_a.path)),
            "B": BundleRef(bundle_b.name, bundle_b.sha256, str(bundle_b.path))}
    bundles = {"A": bundle_a, "B": bundle_b}
    session = session or uuid.uuid4().hex[:12]
    hist_params = ab_params_for_history(bench, params.min_rounds)
    plan = BenchPlan(session, label, hist_params, [refs["A"], refs["B"]], [target.serial],
                     {target.serial: 2 * params.min_rounds}, now_iso())
    for listener in listeners:
        listener.on_start(plan)
    t0 = clock()
    try:
        info = target.describe() if target.describe else None
    except Exception as exc:
        info = None
        describe_error: str | None = f"unavailable: {_reason(exc)}"
    else:
        describe_error = None
    shell = target.shell if bench.probe_state else None
    start_state = probe_state(shell) if shell is not None else None

    runs: list[BenchRun] = []
    finished: dict[int, dict[str, BenchRun]] = {}
    waits: dict[int, float] = {}
    cut: dict[tuple[int, str], float] = {}
    rounds: list[AbRound] = []
    stopped_by: str | None = None
    error: str | None = None
    estimate: RatioEstimate | None = None
    round_started = t0

    def cooldown(first: bool) -> tuple[float, float | None]:
        """Seconds waited, and (when auto gave up) after how long."""
        if first:
            return 0.0, None
        if params.cooldown_auto:
            return cool_down(shell, start_state, clock)
        if params.cooldown_s:
            time.sleep(params.cooldown_s)
        return params.cooldown_s, None

    current = config
    timed_runs: list[tuple[float, list[float]]] = []  # (wall s, latencies): for auto sizing

    def one(k: int, side: str, seq: int) -> BenchRun:
        waited, gave_up = cooldown(seq == 0)
        waits[k] = waits.get(k, 0.0) + waited
        if gave_up is not None:
            cut[(k, side)] = gave_up
        for listener in listeners:
            listener.on_run_start(target.serial, refs[side], current, seq)
        if describe_error is not None:
            stamp = now_iso()
            run = BenchRun(target.serial, refs[side].name, refs[side].sha256, current,
                           _key(current), seq, RunStatus.ERROR, stamp, stamp, None,
                           error=describe_error)
        else:
            started = clock()
            run = _one_run(target, bundles[side], refs[side], current, seq,
                           Path(work_dir) / f"r{k:04d}-{side}", info, bench)
            # A bundle's first run on a device pushes it, once: not part of what every run
            # costs, so not part of the start-up --iterations auto sizes runs by.
            moved = (run.result.transfer.push_s + run.result.transfer.pull_s
                     if run.result is not None else 0.0)
            timed_runs.append((clock() - started - moved, run.latencies_ms))
        # The wait before the run goes with it into the history (and a cut wait into its
        # validity), as bench's runs carry theirs.
        run = replace(run, cooldown_waited_s=waited, cooldown_cut=gave_up is not None)
        runs.append(run)
        finished.setdefault(k, {})[side] = run
        for listener in listeners:
            listener.on_run_end(run)
        return run

    def close_round(k: int) -> AbRound:
        sides = finished.get(k, {})
        a, b = sides.get("A"), sides.get("B")
        parts = []
        for side, run in (("A", a), ("B", b)):
            if run is not None:
                v = judge_run(run, params.rules, cooldown_cut_s=cut.get((k, side)))
                parts.append(Validity(v.verdict, [f"{side}: {r}" for r in v.reasons]))
        first = a if a is not None else b
        assert first is not None
        rnd = AbRound(k, round_order(k, params.order), first if a is None else a, b,
                      combine(*parts), waits.get(k, 0.0))
        return rnd

    def estimate_now() -> RatioEstimate | None:
        usable = [r for r in rounds if r.usable]
        if len(usable) < 2:
            return None
        return _estimate(usable, FIGURES[params.figure], params)

    seq = 0
    try:
        if params.order == "bundle-major":
            # All of A, then all of B: no stopping rule can judge halfway, so the rounds are
            # planned (--min-rounds of them) and the comparison pairs A's k-th run with B's.
            for k, side in bundle_major_schedule(params.min_rounds):
                run = one(k, side, seq)
                seq += 1
                if run.status is RunStatus.ERROR:
                    error = run.error
                    break
            for k in sorted(finished):
                rounds.append(close_round(k))
            stopped_by = "error" if error else "rounds"
        else:
            k = 0
            while True:
                round_started = clock()
                for side in round_order(k):
                    run = one(k, side, seq)
                    seq += 1
                    if run.status is RunStatus.ERROR:
                        error = run.error
                        break
                rounds.append(close_round(k))
                if k == 0 and params.auto_iterations and error is None:
                    sized = max(size_iterations(timed_runs), params.rules.min_iterations)
                    current = replace(current, iterations=sized)
                estimate = estimate_now()
                progress.on_round(rounds[-1], estimate)
                if error is not None:
                    stopped_by = "error"
                    if runs[-1].status is RunStatus.ERROR and not _alive(target):
                        error = f"device lost: {error}"
                    break
                now = clock()
                decision = should_stop(estimate, sum(r.usable for r in rounds), now - t0,
                                       now - round_started, params)
                if decision.stop:
                    stopped_by = decision.reason
                    break
                k += 1
    except KeyboardInterrupt:
        _end(listeners, plan, runs, refs, target, t0, clock, interrupted=True)
        raise
    _end(listeners, plan, runs, refs, target, t0, clock, interrupted=False)
    assert stopped_by is not None

    usable = [r for r in rounds if r.usable]
    median = _estimate(usable, "median_ms", params) if len(usable) >= 2 else None
    mean = _estimate(usable, "mean_ms", params) if len(usable) >= 2 else None
    p90 = _estimate(usable, "p90_ms", params) if len(usable) >= 2 else None
    p25 = _estimate(usable, "q1_ms", params) if len(usable) >= 2 else None
    judged = median if params.figure == "median" else p25
    verdict = judged.verdict(params.equivalence) if judged is not None else "inconclusive"
    diffs, why = compare_bundle_outputs(bundle_a, bundle_b, rounds)
    notes = []
    excluded = [r for r in rounds if r.complete and not r.validity.usable]
    if excluded:
        notes.append(f"{len(excluded)} round(s) left out of the statistics: a run was invalid "
                     f"({excluded[0].validity.reasons[0] if excluded[0].validity.reasons else ''})")
    if judged is None:
        notes.append(f"only {len(usable)} usable round(s): no interval, so no verdict")
    if params.auto_iterations and current.iterations != config.iterations:
        notes.append(f"--iterations auto: {config.iterations} iteration(s) in the first round, "
                     f"then {current.iterations} a run (timed about a third as long as a "
                     "run's start-up)")
    return AbResult(session, label, target.serial, refs["A"], refs["B"], _key(config), params,
                    rounds, median, mean, p90, verdict, stopped_by, clock() - t0,
                    outputs=diffs, outputs_note=why, error=error, notes=notes,
                    iterations=current.iterations, p25=p25)


@dataclass(frozen=True)
class AbRequest:
    """`edgepack ab` as the command line gave it, checked."""

    a: Path
    b: Path
    device: str
    bench: BenchParams  # one configuration: threads, EP, affinity, iterations, warm-up
    params: AbParams
    engine: str = "auto"
    db: Path | None = None
    label: str | None = None
    report_dir: Path | None = None

    def __post_init__(self) -> None:
        if len(self.bench.configs(None)) != 1:
            raise EdgepackError("ab compares one configuration: give one --threads and one --ep")
        names = [n.strip() for n in self.device.split(",") if n.strip()]
        if len(names) != 1 or names[0] == "all":
            raise EdgepackError("ab runs on one device: --device SERIAL or --device host")


def ab_session(request: AbRequest, progress: AbListener | None = None) -> AbResult:
    """Load both bundles, resolve the device, run the rounds with every run stored in the
    history, and write the reports when asked."""
    import tempfile

    from edgepack.bundle import load_bundle
    from edgepack.history import HistoryListener, HistoryStore
    from edgepack.lab import LabSettings, resolve_targets

    bundle_a = load_bundle(request.a)
    # The same path twice is the A/A check: one bundle, loaded once, run on both sides.
    same = Path(request.a).resolve() == Path(request.b).resolve()
    bundle_b = bundle_a if same else load_bundle(request.b)
    settings = LabSettings(params=request.bench, threshold=0.0, alpha=0.05,
                           device=request.device, engine=request.engine)
    targets, notes = resolve_targets(settings)
    target = targets[0]
    config = request.bench.configs(target.cpu_affinity)[0]
    with HistoryStore.open(request.db) as store, tempfile.TemporaryDirectory(
            prefix="edgepack-ab-", ignore_cleanup_errors=True) as work:
        result = run_ab(bundle_a, bundle_b, target, config, request.bench, request.params,
                        work_dir=Path(work), listeners=[HistoryListener(store)],
                        progress=progress, label=request.label)
    if notes:
        result = replace(result, notes=[*notes, *result.notes])
    if request.report_dir is not None:
        from edgepack.report.ab_report import write_ab_reports

        write_ab_reports(result, request.report_dir)
    return result


def ab_document(result: AbResult) -> dict[str, object]:
    """What --json prints and ab.json holds."""

    def est(e: RatioEstimate | None) -> dict[str, object] | None:
        if e is None:
            return None
        return {"ratio": e.ratio, "ci95": [e.low, e.high], "half_width": e.half_width}

    def side(name: str, ref: BundleRef) -> dict[str, object]:
        return {"name": ref.name, "sha256": ref.sha256, "path": ref.path,
                "latency": result.side_stats(name)}

    m = result.judged
    return {
        "session": result.session,
        "label": result.label,
        "device": result.serial,
        "config": result.config_key,
        "ratio": m.ratio if m else None,
        "ci95": [m.low, m.high] if m else None,
        "verdict": result.verdict,
        "rounds": len(result.rounds),
        "usable_rounds": len(result.usable_rounds),
        "stopped_by": result.stopped_by,
        "error": result.error,
        "wall_s": result.wall_s,
        "equivalence": result.params.equivalence,
        "precision": result.params.precision,
        "max_slowdown": result.params.max_slowdown,
        "too_slow": result.too_slow,
        "order": result.params.order,
        "seed": result.params.seed,
        "estimator": f"trimmed mean ({TRIM * 100:g} % a side) of per-round log ratios",
        "iterations_per_run": result.iterations,
        "iterations_auto": result.params.auto_iterations,
        "cooldown_waited_s": sum(r.cooldown_s for r in result.rounds),
        "cooldown_cut": any(r.a.cooldown_cut or (r.b is not None and r.b.cooldown_cut)
                            for r in result.rounds),
        "figure": result.params.figure,
        "median": est(result.median),
        "p25": est(result.p25),
        "mean": est(result.mean),
        "p90": est(result.p90),
        "a": side("A", result.a),
        "b": side("B", result.b),
        "per_round": [
            {"round": r.index, "order": r.order, "ratio": r.ratio,
             "a_median_ms": s.median_ms if (s := r.stats("A")) else None,
             "b_median_ms": t.median_ms if (t := r.stats("B")) else None,
             "validity": r.validity.verdict.value, "reasons": r.validity.reasons,
             "used": r.usable, "cooldown_s": r.cooldown_s}
            for r in result.rounds
        ],
        "outputs": [{"set": d.set_index, "passed": d.passed, "verdicts": d.verdicts}
                    for d in result.outputs],
        "outputs_note": result.outputs_note,
        "notes": result.notes,
    }


def _estimate(rounds: Sequence[AbRound], figure: str, params: AbParams) -> RatioEstimate:
    a = [getattr(r.stats("A"), figure) for r in rounds]
    b = [getattr(r.stats("B"), figure) for r in rounds]
    return bootstrap_ratio(a, b, params.level, params.seed)


def _end(listeners: Sequence[BenchListener], plan: BenchPlan, runs: list[BenchRun],
         refs: dict[str, BundleRef], target: Target, t0: float, clock: Callable[[], float],
         interrupted: bool) -> None:
    from edgepack.devices.state import now_iso

    result = BenchResult(plan.session, plan.label, plan.params, [refs["A"], refs["B"]],
                         [target.serial], list(runs), plan.started_at, now_iso(),
                         clock() - t0, interrupted)
    for listener in listeners:
        listener.on_end(result)


# ---------------------------------------------------------------------------- outputs


def compare_bundle_outputs(a: Bundle, b: Bundle,
                           rounds: Sequence[AbRound]) -> tuple[list[OutputDiff], str | None]:
    """B's outputs against A's on every input set, from the first round both finished; or why
    they cannot be compared (different inputs: then the outputs answer different questions)."""
    from edgepack.compare import compare_outputs, read_outputs

    why = inputs_differ(a, b)
    if why is not None:
        return [], why
    done = next((r for r in rounds if r.complete and r.a.work_dir and r.b is not None
                 and r.b.work_dir), None)
    if done is None:
        return [], "no round finished both bundles: outputs not compared"
    assert done.b is not None and done.a.work_dir and done.b.work_dir
    names = [o.name for o in a.manifest.outputs]
    tolerances = {o.name: o.tolerance for o in a.manifest.outputs}
    diffs = []
    for ts in a.manifest.test_sets:
        expected = read_outputs(Path(done.a.work_dir) / ts.dir, names)
        actual = read_outputs(Path(done.b.work_dir) / b.manifest.test_sets[ts.index].dir,
                              names)
        diffs.append(OutputDiff(ts.index, compare_outputs(expected, actual, tolerances)))
    return diffs, None


def inputs_differ(a: Bundle, b: Bundle) -> str | None:
    """Why A's and B's outputs cannot be compared, or None when their inputs are the same."""
    ia = [(i.name, i.dtype, list(i.shape)) for i in a.manifest.inputs]
    ib = [(i.name, i.dtype, list(i.shape)) for i in b.manifest.inputs]
    if ia != ib:
        return ("outputs not compared: the bundles' inputs differ in names, types or shapes "
                f"(A: {_names(a)}; B: {_names(b)})")
    if [o.name for o in a.manifest.outputs] != [o.name for o in b.manifest.outputs]:
        return "outputs not compared: the bundles' outputs have different names"
    if len(a.manifest.test_sets) != len(b.manifest.test_sets):
        return "outputs not compared: the bundles have different numbers of input sets"
    for sa, sb in zip(a.manifest.test_sets, b.manifest.test_sets, strict=True):
        for fa, fb in zip(sa.inputs, sb.inputs, strict=True):
            if (a.path / fa.file).read_bytes() != (b.path / fb.file).read_bytes():
                return (f"outputs not compared: input set {sa.index}'s {fa.name} holds "
                        "different values in the two bundles")
    return None


def _names(bundle: Bundle) -> str:
    return ", ".join(f"{i.name}{i.shape_text()}" for i in bundle.manifest.inputs)


def _key(config: RunConfig) -> str:
    from edgepack.records import config_key

    return config_key(config)


def _reason(exc: BaseException) -> str:
    from edgepack.errors import short

    if isinstance(exc, EdgepackError):
        return exc.message
    return f"{type(exc).__name__}: {short(exc)}"


__all__ = ["AbParams", "AbResult", "AbRound", "RatioEstimate", "Verdict", "bootstrap_ratio",
           "run_ab"]
