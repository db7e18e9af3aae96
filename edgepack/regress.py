"""Did anything get worse? Candidate runs against baseline runs of the same model and config.

Latency: runs are the units, not iterations. Iterations of one runner invocation share its
process, its frequency and its cache state, so they are not independent samples of what a
bundle costs on a device; a test over iterations (this module used Mann-Whitney U on them)
calls a difference between two runs' conditions significant. Each run gives its median; each
side's figure is the geometric mean of its runs' medians; the change is candidate / baseline - 1,
with a bootstrap interval over runs (each side resampled on its own, seeded; widened for small
samples as edgepack.ab does: docs/statistics.md) at the level 1 - --alpha (99 % by default).

The threshold (default 5 %) is an equivalence margin, not a gate that hides smaller changes:

- regression: the whole interval is above 0 (slower with confidence) and it reaches past the
  threshold (the data cannot show the slowdown is within the margin);
- slower, within the margin: slower with confidence, and the whole interval is below the
  threshold: reported (a real 2-3 % slowdown is not hidden), exit 0;
- improvement / faster, within the margin: the same, the other way;
- no change: the interval covers 0 and lies within +/- the threshold;
- inconclusive: the interval covers 0 and reaches past the threshold: more runs needed;
- too few runs: fewer than two usable runs on a side: no interval at all; `regress` exits 2
  when a comparison could not be judged and none regressed.

Runs whose validity (edgepack.validity) is `invalid` are left out on both sides, and the
comparison says how many.

Accuracy regression: an output (of a test set) that passed in every baseline run and fails in a
candidate run.

Baselines are matched by device model (not serial: a lab has several phones of one model, and a
replaced phone keeps its history) and configuration key (EP, threads, optimization, affinity,
profiling: a profiled run is slower and only ever compared with profiled runs).
For each such pair the baseline is the newest session the reference selects that has runs for it.

`--baseline REF` is one of:

- `previous`: the newest earlier session of the same model and configuration, of any bundle
  (what changed since the last time this ran there);
- `label:NAME`: sessions stored with `--label NAME` (e.g. a branch or commit: `label:main`);
- `sha256:PREFIX`: runs of the bundle whose sha256 starts with PREFIX (at least 6 hex digits);
- a path to a bundle directory: runs of that bundle (its manifest's sha256);
- a bare word: a bundle directory if one is there, else a sha256 prefix if it is hex and one
  stored bundle has it, else a label.

The candidate's own session is never its baseline.

`--run-baseline` (with `--baseline` a bundle directory): regress runs both sides itself, in one
session on one device, interleaved run by run in ABBA order (baseline, candidate, candidate,
baseline, ...: edgepack.ab's rounds), instead of taking stored baseline runs benched at another
time. Stored runs of a baseline come from another session, and whatever the machine did between
the two sessions (heat, a background job, another engineer's tests) lands on one side only and
reads as a change; interleaved, it lands on both.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from edgepack.errors import EdgepackError, ExitCode
from edgepack.history import HistoryRun, HistoryStore
from edgepack.records import RunStatus

if TYPE_CHECKING:
    from edgepack.ab import AbResult
    from edgepack.bench import Target
    from edgepack.bundle import Bundle
    from edgepack.records import BenchListener, BenchParams
    from edgepack.validity import ValidityRules

DEFAULT_THRESHOLD = 0.05
DEFAULT_ALPHA = 0.01
MIN_RUNS = 2  # a side: an interval over runs needs two of them
RESAMPLES = 4000


@dataclass(frozen=True)
class LatencyTest:
    baseline_median_ms: float  # the geometric mean of the baseline runs' medians
    candidate_median_ms: float
    change: float  # candidate / baseline - 1: +0.10 is 10 % slower
    p_value: float  # one-sided bootstrap p: candidate slower than baseline
    p_value_faster: float  # one-sided the other way, for improvements
    n_baseline: int  # iterations, over the runs used
    n_candidate: int
    threshold: float
    alpha: float
    smallest_p: float = 0.0  # kept for readers of older JSON; the bootstrap has no floor
    runs_baseline: int = 0  # the units of the interval
    runs_candidate: int = 0
    ci_low: float = math.nan  # the change's interval at level 1 - alpha
    ci_high: float = math.nan

    @property
    def level(self) -> float:
        return 1 - self.alpha

    @property
    def judged(self) -> bool:
        """False with fewer than MIN_RUNS runs on a side: no interval can be made."""
        return self.runs_baseline >= MIN_RUNS and self.runs_candidate >= MIN_RUNS

    @property
    def slower(self) -> bool:
        return self.judged and self.ci_low > 0

    @property
    def faster(self) -> bool:
        return self.judged and self.ci_high < 0

    @property
    def regression(self) -> bool:
        return self.slower and self.ci_high > self.threshold

    @property
    def improvement(self) -> bool:
        return self.faster and self.ci_low < -self.threshold

    @property
    def verdict(self) -> str:
        """"regression", "slower, within the margin", "improvement", "faster, within the
        margin", "no change", "inconclusive" or "too few runs"."""
        if not self.judged:
            return "too few runs"
        if self.regression:
            return "regression"
        if self.slower:
            return "slower, within the margin"
        if self.improvement:
            return "improvement"
        if self.faster:
            return "faster, within the margin"
        if -self.threshold <= self.ci_low and self.ci_high <= self.threshold:
            return "no change"
        return "inconclusive"

    def interval_text(self) -> str:
        if not self.judged:
            return "-"
        return (f"[{self.ci_low * 100:+.1f}, {self.ci_high * 100:+.1f}] % "
                f"({self.level * 100:g} %)")

    def too_few(self) -> str:
        """Why latency is not judged, with what to run so that it is: bench's --repeat
        (default 3) on the side that is short."""
        from edgepack.records import BenchParams

        repeat = max(BenchParams().repeat, MIN_RUNS)
        fixes = []
        if self.runs_baseline < MIN_RUNS:
            fixes.append(f"bench the baseline again with --repeat {repeat} (the default)")
        if self.runs_candidate < MIN_RUNS:
            fixes.append(f"run the candidate with --repeat {repeat} (the default)")
        return (f"too few runs to judge: {self.runs_baseline} baseline and "
                f"{self.runs_candidate} candidate run(s) usable; an interval over runs needs "
                f"at least {MIN_RUNS} a side: " + " and ".join(fixes))


def latency_test(
    baseline: Sequence[Sequence[float]],
    candidate: Sequence[Sequence[float]],
    threshold: float = DEFAULT_THRESHOLD,
    alpha: float = DEFAULT_ALPHA,
    seed: int = 0,
) -> LatencyTest:
    """Baseline runs against candidate runs, each run a list of its iterations' latencies."""
    import numpy as np
    from scipy.stats import norm, t

    base = [list(r) for r in baseline if len(r)]
    cand = [list(r) for r in candidate if len(r)]
    if not base or not cand:
        raise ValueError("latency_test needs runs with samples on both sides")
    lb = np.log([max(float(np.median(r)), 1e-12) for r in base])
    lc = np.log([max(float(np.median(r)), 1e-12) for r in cand])
    centre = float(lc.mean() - lb.mean())
    common = dict(
        baseline_median_ms=math.exp(float(lb.mean())),
        candidate_median_ms=math.exp(float(lc.mean())),
        change=math.expm1(centre), n_baseline=sum(map(len, base)),
        n_candidate=sum(map(len, cand)), threshold=threshold, alpha=alpha,
        runs_baseline=len(base), runs_candidate=len(cand))
    if len(base) < MIN_RUNS or len(cand) < MIN_RUNS:
        return LatencyTest(p_value=1.0, p_value_faster=1.0, **common)
    rng = np.random.default_rng(seed)
    boot = (lc[rng.integers(0, lc.size, (RESAMPLES, lc.size))].mean(axis=1)
            - lb[rng.integers(0, lb.size, (RESAMPLES, lb.size))].mean(axis=1))
    tail = alpha / 2
    q_lo, q_hi = np.quantile(boot, [tail, 1 - tail])
    n = lb.size + lc.size
    widen = math.sqrt(n / (n - 2)) * float(t.ppf(1 - tail, n - 2)) / float(norm.ppf(1 - tail))
    low = centre + widen * (float(q_lo) - centre)
    high = centre + widen * (float(q_hi) - centre)
    # Bootstrap p-values, shown beside the interval for readers used to them.
    return LatencyTest(p_value=float(np.mean(boot <= 0)),
                       p_value_faster=float(np.mean(boot >= 0)), ci_low=math.expm1(low),
                       ci_high=math.expm1(high), **common)


@dataclass(frozen=True)
class Baseline:
    """What REF resolved to: runs are chosen by label, by bundle, or as the previous session."""

    ref: str
    kind: str  # "previous", "label" or "bundle"
    value: str | None
    description: str


@dataclass(frozen=True)
class BaselineSession:
    session: str
    label: str | None
    bundle_name: str
    bundle_sha256: str
    started_at: str
    runs: int
    samples: int


@dataclass(frozen=True)
class AccuracyRegression:
    set_index: int
    output: str
    reason: str  # the candidate's failure


@dataclass(frozen=True)
class Comparison:
    """One candidate group (device x bundle x configuration) against its baseline."""

    serial: str
    model: str
    bundle_name: str
    bundle_sha256: str
    config_key: str
    baseline: BaselineSession | None
    latency: LatencyTest | None
    accuracy: list[AccuracyRegression] = field(default_factory=list)
    note: str | None = None  # why there is nothing to compare

    @property
    def regressed(self) -> bool:
        return bool(self.accuracy) or (self.latency is not None and self.latency.regression)

    @property
    def unjudged(self) -> bool:
        """Latency was compared, but there are too few runs for an interval."""
        return self.latency is not None and not self.latency.judged

    def summary(self) -> str:
        parts = []
        if self.latency is not None:
            t = self.latency
            medians = (f"median {t.baseline_median_ms:.3f} -> {t.candidate_median_ms:.3f} ms "
                       f"({t.change * 100:+.1f} %")
            if not t.judged:
                parts.append(f"latency NOT JUDGED: {medians}); {t.too_few()}")
            else:
                kind = "REGRESSION" if t.regression else t.verdict
                parts.append(f"latency {kind}: {medians}, interval {t.interval_text()} over "
                             f"{t.runs_baseline} and {t.runs_candidate} runs)")
        for a in self.accuracy:
            parts.append(f"ACCURACY REGRESSION: set {a.set_index} output {a.output} passed in "
                         f"the baseline and fails now ({a.reason})")
        if self.note:
            parts.append(self.note)
        return "; ".join(parts)


@dataclass(frozen=True)
class RegressionReport:
    baseline: Baseline
    candidate_session: str | None
    threshold: float
    alpha: float
    comparisons: list[Comparison]
    notes: list[str] = field(default_factory=list)  # e.g. which validity rules judged

    @property
    def regressions(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.regressed]

    @property
    def compared(self) -> int:
        return sum(1 for c in self.comparisons if c.baseline is not None)

    @property
    def unjudged(self) -> list[Comparison]:
        """Comparisons whose latency these sample sizes cannot judge: not "no regression"."""
        return [c for c in self.comparisons if c.unjudged]

    def find(self, serial: str, bundle_sha256: str, config_key: str) -> Comparison | None:
        for c in self.comparisons:
            if (c.serial, c.bundle_sha256, c.config_key) == (serial, bundle_sha256, config_key):
                return c
        return None


# ---------------------------------------------------------------------------- baselines


def resolve_baseline(store: HistoryStore, ref: str) -> Baseline:
    """REF -> what selects baseline runs; an unknown REF is an error that lists what is known."""
    text = ref.strip()
    if not text:
        raise EdgepackError("--baseline needs a value: previous, label:NAME, sha256:PREFIX or a "
                            "bundle path")
    if text == "previous":
        return Baseline(ref, "previous", None, "the previous session of each model and "
                                               "configuration")
    kind, sep, value = text.partition(":")
    if sep and kind == "label":
        if value not in store.labels():
            raise _unknown(store, ref, f"no session is labelled {value!r}")
        return Baseline(ref, "label", value, f"sessions labelled {value!r}")
    if sep and kind == "sha256":
        found = _by_sha(store, ref, value, strict=True)
        assert found is not None  # strict: raises instead
        return found
    path = Path(text).expanduser()
    if path.is_dir():
        from edgepack.bundle import load_bundle

        bundle = load_bundle(path, verify=False)
        if not store.bundles_matching(bundle.sha256):
            raise _unknown(store, ref, f"bundle {bundle.name} (sha256 {bundle.sha256[:12]}) has "
                                       "no runs in the history")
        return Baseline(ref, "bundle", bundle.sha256,
                        f"bundle {bundle.name} at {path} (sha256 {bundle.sha256[:12]})")
    if re.fullmatch(r"[0-9a-fA-F]{6,64}", text):
        found = _by_sha(store, ref, text, strict=False)
        if found is not None:
            return found
    if text in store.labels():
        return Baseline(ref, "label", text, f"sessions labelled {text!r}")
    raise _unknown(store, ref, "it is not a bundle directory, a stored bundle's sha256 prefix, "
                               "or a label")


def _by_sha(store: HistoryStore, ref: str, prefix: str, strict: bool) -> Baseline | None:
    if not re.fullmatch(r"[0-9a-fA-F]{6,64}", prefix):
        raise EdgepackError(f"--baseline {ref}: a sha256 prefix needs 6 to 64 hex digits")
    matches = store.bundles_matching(prefix.lower())
    if len(matches) > 1:
        names = ", ".join(f"{sha[:12]} ({name})" for sha, name in matches[:5])
        raise EdgepackError(f"--baseline {ref}: the prefix matches several bundles ({names}); "
                            "give more digits")
    if not matches:
        if strict:
            raise _unknown(store, ref, f"no stored bundle's sha256 starts with {prefix}")
        return None
    sha, name = matches[0]
    return Baseline(ref, "bundle", sha, f"bundle {name} (sha256 {sha[:12]})")


def _unknown(store: HistoryStore, ref: str, why: str) -> EdgepackError:
    labels = store.labels()[:8]
    known = f"; labels in {store.location}: {', '.join(labels)}" if labels else ""
    return EdgepackError(
        f"--baseline {ref}: {why}. Use previous, label:NAME, sha256:PREFIX or a bundle "
        f"directory{known}",
        ExitCode.BAD_INPUT,
    )


def baseline_runs(
    store: HistoryStore, baseline: Baseline, model: str, config_key: str,
    exclude_sessions: set[str], before: str | None,
) -> list[HistoryRun]:
    """The baseline runs for one model and configuration: the newest selected session's."""
    runs = store.runs(
        model=model, config_key=config_key, ok_only=True,
        label=baseline.value if baseline.kind == "label" else None,
        bundle=baseline.value if baseline.kind == "bundle" else None,
        before=before if baseline.kind == "previous" else None,
        newest_first=True,
    )
    runs = [r for r in runs if r.session not in exclude_sessions]
    if not runs:
        return []
    newest = runs[0].session
    return [r for r in runs if r.session == newest]


# ---------------------------------------------------------------------------- comparing


def compare_runs(
    store: HistoryStore,
    candidate: Sequence[HistoryRun],
    baseline: Baseline,
    threshold: float = DEFAULT_THRESHOLD,
    alpha: float = DEFAULT_ALPHA,
    rules: ValidityRules | None = None,
    stored_rules: bool = False,
) -> RegressionReport:
    """Compare every candidate group (device x bundle x configuration) with its baseline;
    `rules` (the command's --min-iterations, --min-seconds, --max-seconds) judge both sides'
    runs, or with `stored_rules` (--from-history) each run is judged by the rules stored with
    its own session, as its bench judged it, and a note says so when `rules` differ."""
    groups: dict[tuple[str, str, str], list[HistoryRun]] = {}
    for run in candidate:
        groups.setdefault((run.serial, run.bundle_sha256, run.config_key), []).append(run)
    sessions = {r.session for r in candidate}
    candidate_session = next(iter(sessions)) if len(sessions) == 1 else None
    comparisons = []
    for (serial, _, key), members in groups.items():
        first = members[0]
        base = baseline_runs(store, baseline, first.device_model, key, exclude_sessions=sessions,
                             before=min(r.started_at for r in members))
        judge_by: ValidityRules | Callable[[HistoryRun], ValidityRules] | None = rules
        if stored_rules:
            judge_by = session_rules(store, [*members, *base], rules)
        comparisons.append(_compare_group(serial, first, key, members, base, threshold, alpha,
                                          judge_by))
    notes = []
    if stored_rules:
        notes = rules_notes(store, sessions, rules)
    return RegressionReport(baseline, candidate_session, threshold, alpha, comparisons, notes)


def session_rules(store: HistoryStore, runs: Sequence[HistoryRun],
                  fallback: ValidityRules | None) -> Callable[[HistoryRun], ValidityRules]:
    """Each run's validity rules: those stored with its session (`fallback` for a session
    stored without its parameters)."""
    from edgepack.validity import ValidityRules

    stored = {s.id: s.params.rules() for s in store.sessions(sorted({r.session for r in runs}))
              if s.params is not None}
    default = fallback or ValidityRules()
    return lambda run: stored.get(run.session, default)


def rules_notes(store: HistoryStore, sessions: set[str],
                given: ValidityRules | None) -> list[str]:
    """What --from-history judged the candidate by, said plainly when the command line's
    rules differ from those stored with the session."""
    notes = []
    for s in store.sessions(sorted(sessions)):
        if s.params is None:
            continue
        stored = s.params.rules()
        if given is not None and _rule_text(given) != _rule_text(stored):
            notes.append(f"runs judged valid or not by the rules stored with their sessions "
                         f"(candidate session {s.id}: {_rule_text(stored)}), not by this "
                         f"command line's ({_rule_text(given)})")
    return notes


def _rule_text(r: ValidityRules) -> str:
    cap = f"{r.max_seconds:g} s" if r.max_seconds is not None else "none"
    return (f"--min-iterations {r.min_iterations}, --min-seconds {r.min_seconds:g}, "
            f"--max-seconds (per run) {cap}")


def _compare_group(
    serial: str, first: HistoryRun, key: str, members: list[HistoryRun],
    base: list[HistoryRun], threshold: float, alpha: float,
    rules: ValidityRules | Callable[[HistoryRun], ValidityRules] | None = None,
) -> Comparison:
    common = dict(serial=serial, model=first.device_model, bundle_name=first.bundle_name,
                  bundle_sha256=first.bundle_sha256, config_key=key)
    if not base:
        why = (" (profiled runs are compared only with profiled runs: profiling slows them)"
               if first.config.profile else "")
        return Comparison(**common, baseline=None, latency=None,
                          note=f"no baseline runs for {first.device_model} {key}{why}")
    from edgepack.validity import judge_stored

    def rules_for(run: HistoryRun) -> ValidityRules | None:
        return rules(run) if callable(rules) else rules

    # Invalid runs (cut short, below the minimums, on a fallen-back EP) measure something else:
    # no verdict rests on them, on either side.
    base_ok = [r for r in base if judge_stored(r, rules_for(r)).usable]
    b0 = base[0]
    samples = [x for r in base_ok for x in r.latencies_ms]
    session = BaselineSession(b0.session, b0.label, b0.bundle_name, b0.bundle_sha256,
                              min(r.started_at for r in base), len(base), len(samples))
    done = [r for r in members if r.status is not RunStatus.ERROR]
    if not done:
        errors = "; ".join(dict.fromkeys(r.error or "error" for r in members))
        return Comparison(**common, baseline=session, latency=None,
                          note=f"the candidate did not run: {errors}")
    verdicts = {r.id: judge_stored(r, rules_for(r)) for r in done}
    cand_ok = [r for r in done if verdicts[r.id].usable]
    left_out = []
    if len(cand_ok) < len(done):
        why = next(v.reasons[0] for v in verdicts.values() if not v.usable and v.reasons)
        left_out.append(f"{len(done) - len(cand_ok)} invalid candidate run(s) not used ({why})")
    if len(base_ok) < len(base):
        left_out.append(f"{len(base) - len(base_ok)} invalid baseline run(s) not used")
    base_runs = [r.latencies_ms for r in base_ok if r.latencies_ms]
    cand_runs = [r.latencies_ms for r in cand_ok if r.latencies_ms]
    latency = (latency_test(base_runs, cand_runs, threshold, alpha)
               if base_runs and cand_runs else None)
    if latency is None and left_out:
        left_out.append("latency not judged: no valid runs on a side")

    # An output regresses when every baseline run passed it and a candidate run fails it.
    passed_before: dict[tuple[int, str], bool] = {}
    for r in base:
        for v in r.verdicts:
            k = (v.set_index, v.output)
            passed_before[k] = passed_before.get(k, True) and v.passed
    accuracy: dict[tuple[int, str], AccuracyRegression] = {}
    for r in done:
        for v in r.verdicts:
            k = (v.set_index, v.output)
            if not v.passed and passed_before.get(k) and k not in accuracy:
                accuracy[k] = AccuracyRegression(v.set_index, v.output, v.reason or "failed")
    return Comparison(**common, baseline=session, latency=latency,
                      accuracy=list(accuracy.values()),
                      note="; ".join(left_out) if left_out else None)


# ---------------------------------------------------------------------------- both sides here


def run_interleaved(baseline: Bundle, candidate: Bundle, target: Target, bench: BenchParams,
                    *, work_dir: Path, listeners: Sequence[BenchListener] = (),
                    label: str | None = None) -> AbResult:
    """`--run-baseline`: bench.repeat runs of each bundle on `target`, interleaved ABBA by run
    (baseline first in even rounds, candidate first in odd ones), every run stored by
    `listeners` as one session."""
    from edgepack.ab import AbParams, run_ab

    if bench.repeat < MIN_RUNS:
        raise EdgepackError(f"--run-baseline needs --repeat {MIN_RUNS} or more: an interval "
                            "over runs needs two a side")
    if len(bench.configs(None)) != 1:
        raise EdgepackError("--run-baseline compares one configuration: give one --threads "
                            "and one --ep")
    if baseline.sha256 == candidate.sha256:
        raise EdgepackError("--run-baseline: the baseline is the candidate bundle itself; for "
                            "an A/A check pack a copy under another name, or use `edgepack ab`")
    params = AbParams(min_rounds=bench.repeat, max_rounds=bench.repeat, max_seconds=1e9,
                      precision=1e-9, cooldown_s=bench.cooldown_s,
                      cooldown_auto=bench.cooldown_auto, rules=bench.rules())
    config = bench.configs(target.cpu_affinity)[0]
    return run_ab(baseline, candidate, target, config, bench, params, work_dir=work_dir,
                  listeners=listeners, label=label)


def compare_interleaved(store: HistoryStore, session: str, baseline_sha256: str,
                        candidate_sha256: str, baseline: Baseline,
                        threshold: float = DEFAULT_THRESHOLD, alpha: float = DEFAULT_ALPHA,
                        rules: ValidityRules | None = None) -> RegressionReport:
    """The candidate's runs of one interleaved session against the baseline's runs of the same
    session, group by group (device x configuration)."""
    runs = store.runs(session=session)
    comparisons = []
    groups: dict[tuple[str, str], list[HistoryRun]] = {}
    for run in runs:
        if run.bundle_sha256 == candidate_sha256:
            groups.setdefault((run.serial, run.config_key), []).append(run)
    for (serial, key), members in groups.items():
        base = [r for r in runs if r.bundle_sha256 == baseline_sha256 and r.serial == serial
                and r.config_key == key]
        comparisons.append(_compare_group(serial, members[0], key, members, base, threshold,
                                          alpha, rules))
    return RegressionReport(baseline, session, threshold, alpha, comparisons)
