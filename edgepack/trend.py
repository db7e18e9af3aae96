"""How a bundle's latency moved from session to session: the history plot of the reports.

The store hands out the runs it keeps; what a trend point is (every iteration of a session's
runs pooled, their median and p90) is decided here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgepack.stats import latency_stats

if TYPE_CHECKING:
    from edgepack.history import HistoryRun, HistoryStore

# Sessions a series shows: enough to see a drift, few enough for a plot to stay legible.
DEFAULT_SESSIONS = 30


@dataclass(frozen=True)
class TrendPoint:
    session: str
    label: str | None
    started_at: str
    bundle_sha256: str
    median_ms: float
    p90_ms: float
    count: int


@dataclass(frozen=True)
class TrendSeries:
    bundle_name: str
    model: str
    config_key: str
    points: list[TrendPoint]


def session_points(runs: Iterable[HistoryRun]) -> list[TrendPoint]:
    """One point per session of these runs, its iterations pooled; oldest first. A session
    whose runs have no samples has no point."""
    by_session: dict[str, list[HistoryRun]] = {}
    for run in runs:
        by_session.setdefault(run.session, []).append(run)
    points = []
    for session, members in by_session.items():
        samples = [x for r in members for x in r.latencies_ms]
        if not samples:
            continue
        s = latency_stats(samples)
        first = members[0]
        points.append(TrendPoint(session, first.label, first.started_at, first.bundle_sha256,
                                 s.median_ms, s.p90_ms, s.count))
    points.sort(key=lambda p: p.started_at)
    return points


def bundle_trend(store: HistoryStore, bundle_name: str, keys: Iterable[tuple[str, str]],
                 sessions: int = DEFAULT_SESSIONS) -> list[TrendSeries]:
    """Median latency per session of a bundle (every version of it, by name) per (model,
    configuration key), the latest `sessions` sessions of each, oldest first; a pair with no
    finished run has no series."""
    series: list[TrendSeries] = []
    for model, key in sorted(set(keys)):
        runs: Sequence[HistoryRun] = store.runs(bundle=bundle_name, model=model, config_key=key,
                                                ok_only=True)
        # `bundle=` also matches a sha256 prefix: a bundle named like another's hash is not it.
        points = session_points(r for r in runs if r.bundle_name == bundle_name)
        if points:
            series.append(TrendSeries(bundle_name, model, key, points[-sessions:]))
    return series
