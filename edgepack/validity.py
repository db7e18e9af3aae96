"""Can a run's figures be trusted? A verdict on every run: valid, semivalid or invalid, with
every reason.

Modelled on MLPerf Mobile's per-result validity (a minimum query count, a minimum duration, a
cap on the duration) and extended with what a phone bench knows and MLPerf leaves to the
operator: the device's own state before and after the run.

- invalid: the figures do not measure what was asked: the run did not finish, timed fewer
  iterations or seconds than the minimums, or ran on another execution provider than the one
  asked for (onnxruntime fell back to the CPU). A verdict (regress, ab) never rests on these.
- semivalid: the figures are real but the conditions moved: the thermal status or a CPU's
  frequency cap or governor changed during the run, the battery was below a level, the
  iterations spread wider than a bound (CV), the run went past the --max-seconds cap, or the
  cooldown before it was cut short. Shown beside the figure; verdicts still use them.
- valid: none of that.

Judged from the run's record alone (its samples, its state probes, its runner's report), so a
run read back from the history gets the same verdict the bench gave it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from edgepack.errors import EdgepackError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from edgepack.devices.state import DeviceState
    from edgepack.history import HistoryRun
    from edgepack.records import BenchRun
    from edgepack.runner.result import RunnerResult

# A CV above this is noise no median of tens of iterations irons out: on quiet phones runs
# measure 1-5 %, a governor hopping between two frequencies 10-20 %.
DEFAULT_MAX_CV = 0.25
# Below this a phone's power manager starts to cap frequencies on many Android builds.
DEFAULT_MIN_BATTERY = 20


class Verdict(StrEnum):
    VALID = "valid"
    SEMIVALID = "semivalid"
    INVALID = "invalid"


@dataclass(frozen=True)
class ValidityRules:
    """The bounds a run is judged against; 0 / None switch a rule off."""

    min_iterations: int = 1
    min_seconds: float = 0.0  # timed seconds (the sum of the iterations)
    max_seconds: float | None = None  # the run's wall time cap
    max_cv: float | None = DEFAULT_MAX_CV
    min_battery: int | None = DEFAULT_MIN_BATTERY

    def __post_init__(self) -> None:
        if self.min_iterations < 0:
            raise EdgepackError("--min-iterations must be >= 0")
        if not math.isfinite(self.min_seconds) or self.min_seconds < 0:
            raise EdgepackError("--min-seconds must be a finite number >= 0")
        if self.max_seconds is not None and (not math.isfinite(self.max_seconds)
                                             or self.max_seconds <= 0):
            raise EdgepackError("--max-seconds must be a finite number > 0")
        if self.max_cv is not None and not self.max_cv > 0:
            raise EdgepackError("the CV bound must be > 0")


@dataclass(frozen=True)
class Validity:
    verdict: Verdict
    reasons: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        """Whether a verdict may rest on the run."""
        return self.verdict is not Verdict.INVALID

    def text(self) -> str:
        return self.verdict.value + (f" ({'; '.join(self.reasons)})" if self.reasons else "")


VALID = Validity(Verdict.VALID)


def of_runs(runs: Sequence[BenchRun], rules: ValidityRules | None = None) -> Validity:
    """A group of runs (a bench's repeats of one configuration): the worst run's verdict, with
    every reason once and how many runs it applied to."""
    verdicts = [judge_run(r, rules) for r in runs]
    counts: dict[str, int] = {}
    for v in verdicts:
        for reason in v.reasons:
            counts[reason] = counts.get(reason, 0) + 1
    worst = combine(*verdicts).verdict
    n = len(verdicts)
    return Validity(worst, [reason if n == 1 else f"{reason} ({k} of {n} runs)"
                            for reason, k in counts.items()])


def combine(*parts: Validity) -> Validity:
    """The worst verdict of several (a round of two runs), with every reason once."""
    order = [Verdict.VALID, Verdict.SEMIVALID, Verdict.INVALID]
    worst = max((p.verdict for p in parts), key=order.index, default=Verdict.VALID)
    reasons = list(dict.fromkeys(r for p in parts for r in p.reasons))
    return Validity(worst, reasons)


def judge_run(run: BenchRun, rules: ValidityRules | None = None, *,
              cooldown_cut_s: float | None = None) -> Validity:
    """A bench run's verdict. `cooldown_cut_s`: the cooldown before it gave up waiting for the
    device to come back to its starting state after that many seconds."""
    rules = rules or ValidityRules()
    if cooldown_cut_s is None and run.cooldown_cut:
        cooldown_cut_s = run.cooldown_waited_s
    if run.result is None:
        return Validity(Verdict.INVALID, [f"did not finish: {run.error or 'error'}"])
    runner = run.result.sets[0].runner
    wall_s = _seconds_between(run.started_at, run.finished_at)
    return judge(runner, rules, run.state_before, run.state_after, wall_s=wall_s,
                 cooldown_cut_s=cooldown_cut_s)


def judge(runner: RunnerResult, rules: ValidityRules, before: DeviceState | None = None,
          after: DeviceState | None = None, *, wall_s: float | None = None,
          cooldown_cut_s: float | None = None) -> Validity:
    """One runner invocation's verdict (deploy's, and each bench run's)."""
    return judge_parts(runner.latencies_ms, runner.ep_requested, runner.ep_used, rules, before,
                       after, wall_s=wall_s, cooldown_cut_s=cooldown_cut_s,
                       fallback_reason=runner.ep_fallback_reason)


def judge_stored(run: HistoryRun, rules: ValidityRules | None = None) -> Validity:
    """A run read back from the history: the same verdict its bench gave it."""
    if run.status == "error" or not run.latencies_ms:
        return Validity(Verdict.INVALID, [f"did not finish: {run.error or 'error'}"])
    return judge_parts(run.latencies_ms, run.config.ep, run.ep_used, rules or ValidityRules(),
                       run.state_before, run.state_after,
                       wall_s=_seconds_between(run.started_at, run.finished_at),
                       cooldown_cut_s=run.cooldown_waited_s if run.cooldown_cut else None)


def judge_parts(samples: Sequence[float], ep_requested: str | None, ep_used: str | None,
                rules: ValidityRules, before: DeviceState | None = None,
                after: DeviceState | None = None, *, wall_s: float | None = None,
                cooldown_cut_s: float | None = None,
                fallback_reason: str | None = None) -> Validity:
    invalid: list[str] = []
    semi: list[str] = []
    if len(samples) < rules.min_iterations:
        invalid.append(f"{len(samples)} iterations, fewer than the minimum "
                       f"{rules.min_iterations}")
    timed_s = sum(samples) / 1000
    if rules.min_seconds and timed_s < rules.min_seconds:
        invalid.append(f"{timed_s:.2f} s timed, less than the minimum {rules.min_seconds:g} s")
    if rules.max_seconds is not None and wall_s is not None and wall_s > rules.max_seconds:
        semi.append(f"ran {wall_s:.1f} s, past the {rules.max_seconds:g} s cap")
    if ep_used and ep_requested and ep_used != ep_requested:
        why = f": {fallback_reason}" if fallback_reason else ""
        invalid.append(f"execution provider fell back from {ep_requested} to {ep_used}{why}")
    if rules.max_cv is not None and len(samples) > 1:
        cv = fenced_cv(samples)
        if cv > rules.max_cv:
            semi.append(f"CV {cv * 100:.1f} % above {rules.max_cv * 100:g} % (outliers "
                        "left out)")
    semi += state_changes(before, after)
    if rules.min_battery is not None:
        levels = [s.battery_level for s in (before, after)
                  if s is not None and s.battery_level is not None]
        if levels and min(levels) < rules.min_battery:
            semi.append(f"battery {min(levels)} %, below {rules.min_battery} %")
    if cooldown_cut_s is not None:
        semi.append(f"cooldown cut short after {cooldown_cut_s:.0f} s: the device had not "
                    "come back to the session's starting state")
    if invalid:
        return Validity(Verdict.INVALID, invalid + semi)
    if semi:
        return Validity(Verdict.SEMIVALID, semi)
    return VALID


def fenced_cv(samples: Sequence[float]) -> float:
    """The CV of the iterations inside stats' outlier fence (stats.OUTLIER_RULE). A few far
    outliers (an interrupt, a GC) are counted by the stats and say nothing about whether the
    run's bulk was steady; one 10x iteration among 200 alone gives a CV of 0.61."""
    import numpy as np

    from edgepack.stats import OUTLIER_IQRS, OUTLIER_MIN_IQR, percentiles_of_sorted

    x = np.sort(np.asarray(samples, dtype=np.float64))
    q1, median, q3 = percentiles_of_sorted(x, (25, 50, 75))
    fence = q3 + OUTLIER_IQRS * max(q3 - q1, OUTLIER_MIN_IQR * abs(median))
    kept = x[x <= fence]
    if kept.size < 2 or kept.mean() <= 0:
        return 0.0
    return float(kept.std(ddof=1) / kept.mean())


def state_changes(before: DeviceState | None, after: DeviceState | None) -> list[str]:
    """What moved between two probes that changes what an iteration costs."""
    if before is None or after is None:
        return []
    reasons = []
    if (before.thermal_status is not None and after.thermal_status is not None
            and before.thermal_status != after.thermal_status):
        reasons.append(f"thermal status changed {before.thermal_status} -> "
                       f"{after.thermal_status} during the run")
    old = {c.cpu: c for c in before.cpus}
    moved = []
    for cpu in after.cpus:
        prev = old.get(cpu.cpu)
        if prev is None:
            continue
        if prev.max_khz and cpu.max_khz and prev.max_khz != cpu.max_khz:
            moved.append(f"{cpu.cpu} max {prev.max_khz // 1000}->{cpu.max_khz // 1000} MHz")
        if prev.governor and cpu.governor and prev.governor != cpu.governor:
            moved.append(f"{cpu.cpu} governor {prev.governor}->{cpu.governor}")
    if moved:
        reasons.append("CPU frequency changed during the run (" + ", ".join(moved) + ")")
    return reasons


def _seconds_between(start: str, end: str) -> float | None:
    from datetime import datetime

    try:
        return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    except ValueError:
        return None
