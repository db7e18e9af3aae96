"""Did anything get worse? Candidate runs against baseline runs of the same model and config.

Latency regression: the candidate's median is slower than the baseline's by more than a threshold
(default 5 %) AND the candidate's per-iteration samples are significantly larger (Mann-Whitney U,
one-sided, p < alpha, default 0.01). Both are needed: the threshold alone fires on noise when
samples are few or unstable, the test alone fires on differences too small to matter when samples
are many. Mann-Whitney U, not a t-test, because latencies are skewed and have outliers (GC, an
interrupt, a frequency step) that would swamp a mean.

Few samples: the exact one-sided test cannot give a p below 1 / C(n1 + n2, n1), the chance that
every candidate sample is slower than every baseline one (4 a side: 1/70 = 0.014). When that is
not below alpha, no slowdown could ever be flagged, so latency is not judged ("too few samples")
rather than reported as "no significant change"; `regress` exits 2 when a comparison could not
be judged and none regressed.

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
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edgepack.errors import EdgepackError, ExitCode
from edgepack.history import HistoryRun, HistoryStore
from edgepack.records import RunStatus

DEFAULT_THRESHOLD = 0.05
DEFAULT_ALPHA = 0.01


@dataclass(frozen=True)
class LatencyTest:
    baseline_median_ms: float
    candidate_median_ms: float
    change: float  # (candidate - baseline) / baseline: +0.10 is 10 % slower
    p_value: float  # one-sided: candidate slower than baseline
    p_value_faster: float  # one-sided the other way, for improvements
    n_baseline: int
    n_candidate: int
    threshold: float
    alpha: float
    # 1 / C(n_baseline + n_candidate, n_baseline): the smallest p the exact test can give.
    smallest_p: float = 0.0

    @property
    def judged(self) -> bool:
        """False when these sample sizes cannot reach alpha whatever the samples are."""
        return self.smallest_p < self.alpha

    @property
    def regression(self) -> bool:
        # Also gated on `judged`: with ties scipy uses the normal approximation, whose p can go
        # below what the exact test could ever give.
        return self.judged and self.change > self.threshold and self.p_value < self.alpha

    @property
    def improvement(self) -> bool:
        return self.judged and self.change < -self.threshold and self.p_value_faster < self.alpha

    @property
    def verdict(self) -> str:
        """"regression", "improvement", "no significant change" or "too few samples"."""
        if not self.judged:
            return "too few samples"
        return ("regression" if self.regression else "improvement" if self.improvement
                else "no significant change")

    def too_few(self) -> str:
        """Why latency is not judged, with what would be enough."""
        return (f"too few samples to judge at alpha={self.alpha:g}: {self.n_baseline} baseline "
                f"and {self.n_candidate} candidate iterations cannot give a one-sided "
                f"Mann-Whitney p below 1/C({self.n_baseline + self.n_candidate}, "
                f"{self.n_baseline}) = {self.smallest_p:.2g}; need n1, n2 with "
                f"1/C(n1+n2, n1) < alpha, e.g. {samples_needed(self.alpha)} iterations a side, "
                f"or {samples_needed(self.alpha, self.n_baseline)} candidate iterations "
                f"against these {self.n_baseline}")


def smallest_p(n1: int, n2: int) -> float:
    """The smallest one-sided p the exact Mann-Whitney U test can give for these sizes: every
    sample of one side beyond every sample of the other, 1 of C(n1 + n2, n1) orderings. Ties
    only make the extreme more likely, so this bounds every outcome."""
    try:
        return 1.0 / math.comb(n1 + n2, n1)
    except OverflowError:  # past 1e308 orderings: 0 as far as any alpha is concerned
        return 0.0


def samples_needed(alpha: float, other: int | None = None) -> int:
    """The fewest samples whose smallest attainable p is below alpha: a side (n1 = n2 = n), or
    against `other` samples on the other side."""
    n = 1
    while smallest_p(other if other else n, n) >= alpha:
        n += 1
    return n


def latency_test(
    baseline: Sequence[float],
    candidate: Sequence[float],
    threshold: float = DEFAULT_THRESHOLD,
    alpha: float = DEFAULT_ALPHA,
) -> LatencyTest:
    import numpy as np
    from scipy.stats import mannwhitneyu

    if not baseline or not candidate:
        raise ValueError("latency_test needs samples on both sides")
    base = np.asarray(baseline, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    b_med, c_med = float(np.median(base)), float(np.median(cand))
    change = (c_med - b_med) / b_med if b_med > 0 else math.inf
    if np.ptp(np.concatenate([base, cand])) == 0:
        slower = faster = 1.0  # every sample equal: nothing to test, and scipy would warn
    else:
        slower = float(mannwhitneyu(cand, base, alternative="greater").pvalue)
        faster = float(mannwhitneyu(cand, base, alternative="less").pvalue)
    return LatencyTest(b_med, c_med, change, slower, faster, int(base.size), int(cand.size),
                       threshold, alpha, smallest_p(int(base.size), int(cand.size)))


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
        """Latency was compared, but these sample sizes cannot reach alpha."""
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
                kind = ("REGRESSION" if t.regression else "improvement" if t.improvement
                        else "no significant change")
                parts.append(f"latency {kind}: {medians}, Mann-Whitney p={t.p_value:.2g})")
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
) -> RegressionReport:
    """Compare every candidate group (device x bundle x configuration) with its baseline."""
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
        comparisons.append(_compare_group(serial, first, key, members, base, threshold, alpha))
    return RegressionReport(baseline, candidate_session, threshold, alpha, comparisons)


def _compare_group(
    serial: str, first: HistoryRun, key: str, members: list[HistoryRun],
    base: list[HistoryRun], threshold: float, alpha: float,
) -> Comparison:
    common = dict(serial=serial, model=first.device_model, bundle_name=first.bundle_name,
                  bundle_sha256=first.bundle_sha256, config_key=key)
    if not base:
        why = (" (profiled runs are compared only with profiled runs: profiling slows them)"
               if first.config.profile else "")
        return Comparison(**common, baseline=None, latency=None,
                          note=f"no baseline runs for {first.device_model} {key}{why}")
    b0 = base[0]
    samples = [x for r in base for x in r.latencies_ms]
    session = BaselineSession(b0.session, b0.label, b0.bundle_name, b0.bundle_sha256,
                              min(r.started_at for r in base), len(base), len(samples))
    done = [r for r in members if r.status is not RunStatus.ERROR]
    if not done:
        errors = "; ".join(dict.fromkeys(r.error or "error" for r in members))
        return Comparison(**common, baseline=session, latency=None,
                          note=f"the candidate did not run: {errors}")
    cand_samples = [x for r in done for x in r.latencies_ms]
    latency = latency_test(samples, cand_samples, threshold, alpha) if samples and cand_samples \
        else None

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
                      accuracy=list(accuracy.values()))
