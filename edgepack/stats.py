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
    x = np.asarray(samples_ms, dtype=np.float64)
    mean = float(np.mean(x))
    std = float(np.std(x, ddof=1)) if x.size > 1 else 0.0
    p90, p95, p99 = (float(v) for v in np.percentile(x, [90, 95, 99]))
    return LatencyStats(
        count=int(x.size),
        mean_ms=mean,
        median_ms=float(np.median(x)),
        std_ms=std,
        min_ms=float(np.min(x)),
        max_ms=float(np.max(x)),
        p90_ms=p90,
        p95_ms=p95,
        p99_ms=p99,
        cv=std / mean if mean > 0 else 0.0,
    )
