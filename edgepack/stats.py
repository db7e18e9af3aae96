"""Latency statistics, computed on the host from every iteration a runner reports."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# A run whose iterations vary more than this (std / mean) is flagged as unstable: on a phone it
# usually means thermal throttling, a governor changing frequency, or a busy core.
UNSTABLE_CV = 0.10


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
    cv: float

    @property
    def unstable(self) -> bool:
        return self.cv > UNSTABLE_CV


def latency_stats(samples_ms: list[float]) -> LatencyStats:
    if not samples_ms:
        nan = math.nan
        return LatencyStats(0, nan, nan, nan, nan, nan, nan, nan, nan, nan)
    x = np.sort(np.asarray(samples_ms, dtype=np.float64))
    mean = float(np.mean(x))
    std = float(np.std(x, ddof=1)) if x.size > 1 else 0.0
    median, p90, p95, p99 = percentiles_of_sorted(x, (50, 90, 95, 99))
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
    )


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
