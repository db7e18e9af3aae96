"""Latency statistics, computed on the host from every iteration a runner reports.

Three findings are kept apart, because each has its own cause and its own remedy:

- unstable: the bulk of the iterations is spread wide (IQR / median), e.g. a governor moving
  between two frequencies for the whole run;
- outliers: a few iterations far above the rest (an interrupt, a page fault, a GC), counted by a
  stated rule and never allowed to make a run "unstable" on their own;
- drift: repeats of one configuration whose medians differ more than their own spread explains
  (a phone heating up over the bench, a background job that came and went).

The coefficient of variation (std / mean) is still computed and reported, as the figure people
know, but it flags nothing: one 10x iteration among 200 gives a CV of 0.61.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# A run is unstable when its interquartile range exceeds 10 % of its median. The IQR ignores
# the slowest and fastest quarter, so single outliers cannot trip it; what does is the bulk of
# the run moving, e.g. a 1.0 / 1.25 ms bimodal split (IQR / median 0.22). Quiet runs on phones
# measure 1-3 %, and Gaussian noise with a CV of 0.074 gives 0.10, so 10 % leaves quiet runs a
# wide margin and still catches a run whose middle half spans a tenth of its median.
UNSTABLE_SPREAD = 0.10

# Outliers: iterations above Q3 + 3 x IQR (Tukey's "far out" fence). The IQR counts as at least
# 1 % of the median there, so a run whose IQR is 0 (a coarse timer that gives most iterations
# the same value) does not call each tick above it an outlier.
OUTLIER_IQRS = 3.0
OUTLIER_MIN_IQR = 0.01

# Repeats drift when their medians differ by more than 5 % (max / min - 1: the same size of
# change `regress` calls a regression by default) AND by more than the repeats' own spread (the
# median of their IQR / median): a difference the noise inside each repeat cannot explain.
DRIFT_THRESHOLD = 0.05

OUTLIER_RULE = "above Q3 + 3 x IQR"


@dataclass(frozen=True)
class LatencyStats:
    count: int
    mean_ms: float
    median_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    cv: float  # std / mean: reported, flags nothing (see the module's docstring)
    # Defaults: results stored by an edgepack that did not compute these still read.
    q1_ms: float = math.nan
    q3_ms: float = math.nan
    spread: float = math.nan  # IQR / median, what `unstable` is judged on
    outliers: int = 0  # iterations above the outlier fence (OUTLIER_RULE)

    @property
    def unstable(self) -> bool:
        return self.count > 1 and self.spread > UNSTABLE_SPREAD


def latency_stats(samples_ms: Sequence[float]) -> LatencyStats:
    if not len(samples_ms):
        nan = math.nan
        return LatencyStats(0, nan, nan, nan, nan, nan, nan, nan, nan, nan)
    x = np.sort(np.asarray(samples_ms, dtype=np.float64))
    mean = float(np.mean(x))
    std = float(np.std(x, ddof=1)) if x.size > 1 else 0.0
    q1, median, q3, p90, p95, p99 = percentiles_of_sorted(x, (25, 50, 75, 90, 95, 99))
    iqr = q3 - q1
    fence = q3 + OUTLIER_IQRS * max(iqr, OUTLIER_MIN_IQR * abs(median))
    return LatencyStats(
        count=int(x.size),
        mean_ms=mean,
        median_ms=median,
        std_ms=std,
        min_ms=float(x[0]),
        max_ms=float(x[-1]),
        p90_ms=p90,
        p95_ms=p95,
        p99_ms=p99,
        cv=std / mean if mean > 0 else 0.0,
        q1_ms=q1,
        q3_ms=q3,
        spread=iqr / median if median > 0 else 0.0,
        outliers=int(np.count_nonzero(x > fence)),
    )


@dataclass(frozen=True)
class RepeatDrift:
    """How far the repeats of one configuration moved apart (see DRIFT_THRESHOLD)."""

    repeats: int
    change: float  # max / min of the repeats' medians - 1
    within_spread: float  # median of the repeats' IQR / median
    drifting: bool


def repeat_drift(repeats: Sequence[LatencyStats]) -> RepeatDrift | None:
    """The drift between repeats, or None with fewer than two repeats that have samples."""
    timed = [s for s in repeats if s.count and s.median_ms > 0]
    if len(timed) < 2:
        return None
    medians = [s.median_ms for s in timed]
    change = max(medians) / min(medians) - 1.0
    spreads = [s.spread for s in timed if not math.isnan(s.spread)]
    within = float(np.median(spreads)) if spreads else 0.0
    return RepeatDrift(len(timed), change, within,
                       change > DRIFT_THRESHOLD and change > within)


def percentiles_of_sorted(x: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """np.percentile's default (linear) method on sorted samples. Written out because
    np.percentile imports numpy.ma on first use, 20 ms that a redeploy would otherwise spend."""
    n = x.size
    out = []
    for q in qs:
        h = (n - 1) * q / 100.0
        lo = math.floor(h)
        hi = min(lo + 1, n - 1)
        out.append(float(x[lo] + (h - lo) * (x[hi] - x[lo])))
    return out
