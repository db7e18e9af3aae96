"""The history store's interface: what the rest of edgepack asks of it, and the records it hands
back. Nothing here knows a database; a backend (history.sqlite, history.postgres) does.

What a backend implements, and nothing more, is `HistoryStore`'s abstract members:

    location          where it is, as messages name it (a file, a URL)
    schema_version    the version of its tables (history.schema)
    close()
    begin_session(plan), end_session(result)    a session started; ended or was interrupted
    add_run(session, run) -> id                  a run and its verdicts, in one transaction
    query(RunFilter) -> [HistoryRun]             runs matching a filter, with their verdicts
    sessions(ids) -> [StoredSession]
    labels(), bundles_matching(prefix)

Everything else is shared and stays out of a backend: the tables and their migrations
(history.schema: formatted with the backend's Dialect, and `upgrades` says which to run), the
statements that read them (history.schema), the one mapping between a record and a row
(history.rows), and what is built on the operations above (`runs`, `latest_session`,
`bench_result`, `HistoryListener`). What a backend keeps to itself is small and named there:
the connection, its transactions, where it keeps the schema version, and how it stores a value
its database cannot hold as is (SQLite turns NaN into NULL).
"""

from __future__ import annotations

import json
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from edgepack.compare import Metrics
from edgepack.devices.base import DeviceInfo
from edgepack.devices.state import DeviceState
from edgepack.errors import EdgepackError, ExitCode
from edgepack.profile import OpTime
from edgepack.records import (
    BenchListener,
    BenchParams,
    BenchPlan,
    BenchResult,
    BenchRun,
    BundleRef,
    DeployResult,
    RunStatus,
    bench_order,
)
from edgepack.runner.result import RunConfig
from edgepack.serialize import INTERNAL, from_jsonable
from edgepack.stats import LatencyStats, latency_stats

ENV_DB = "EDGEPACK_DB"


def default_db_path() -> Path:
    env = os.environ.get(ENV_DB)
    if env and not _URL.match(env):
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "edgepack" / "history.db"


# A URL's scheme; `postgres:/` too: a --db URL that went through a Path (typer's option type)
# has its `//` folded into `/`.
_URL = re.compile(r"(?i)([a-z][a-z0-9+.-]+):/+(.*)", re.S)
_POSTGRES_SCHEMES = ("postgresql", "postgres")


def db_location(given: Path | str | None = None) -> Path | str:
    """Where the history is: --db (`given`), else $EDGEPACK_DB, else the default file. A
    PostgreSQL URL comes back as a str, a SQLite file as a Path; a URL of any other scheme
    (a misspelled one) is refused rather than taken for a file name."""
    text = str(given) if given is not None else os.environ.get(ENV_DB) or ""
    if not text:
        return default_db_path()
    m = _URL.fullmatch(text)
    if m is None:
        return Path(text).expanduser()
    scheme = m.group(1).lower()
    if scheme not in _POSTGRES_SCHEMES:
        raise EdgepackError(
            f"--db {redact(m.group(1) + '://' + m.group(2))}: unknown database URL scheme "
            f"{m.group(1)!r}: give postgresql://USER@HOST:PORT/DB or a SQLite file path")
    return f"{scheme}://{m.group(2)}"


def redact(url: str) -> str:
    """A database URL as messages may show it: without its password."""
    url = re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:***@", url)
    return re.sub(r"(?i)([?&]password=)[^&]*", r"\1***", url)


class StoreUnavailable(EdgepackError):
    """The store's server went away; what was being written was not stored. The store tries
    again on the next write."""

    def __init__(self, message: str) -> None:
        super().__init__(message, ExitCode.DEVICE)


# ---------------------------------------------------------------------------- records read back


@dataclass(frozen=True)
class StoredVerdict:
    set_index: int
    output: str
    passed: bool
    reason: str | None
    metrics: Metrics | None


@dataclass(frozen=True)
class HistoryRun:
    id: int
    session: str
    label: str | None
    bundle_sha256: str
    bundle_name: str
    serial: str
    model: str | None
    abi: str | None
    sdk: int | None
    config_key: str
    config: RunConfig
    repeat: int
    status: RunStatus
    error: str | None
    engine: str | None
    runner_version: str | None
    onnxruntime_version: str | None
    ep_used: str | None
    started_at: str
    finished_at: str
    latencies_ms: list[float]
    stats: LatencyStats | None
    session_create_ms: float | None
    first_inference_ms: float | None
    peak_rss_kb: int | None
    state_before: DeviceState | None = None
    state_after: DeviceState | None = None
    warnings: list[str] = field(default_factory=list)
    profile: list[OpTime] = field(default_factory=list)
    verdicts: list[StoredVerdict] = field(default_factory=list)
    device: DeviceInfo | None = None
    host: str | None = None  # the machine whose bench ran it (its session's host)
    # The wait before the run (schema 4 on): seconds, and whether --cooldown auto gave up.
    cooldown_waited_s: float = 0.0
    cooldown_cut: bool = False
    # The whole DeployResult as stored (schema 2 on); parsed on demand: listings never need it.
    result_json: str | None = field(default=None, repr=False, metadata={INTERNAL: True})

    def deploy_result(self) -> DeployResult | None:
        if self.result_json is None:
            return None
        result = from_jsonable(DeployResult, json.loads(self.result_json))
        # Statistics again from the samples: one stored by an older edgepack lacks the spread
        # and outliers the reports show.
        return replace(result, stats=latency_stats(result.sets[0].runner.latencies_ms))

    def bench_run(self) -> BenchRun:
        """The run as the bench recorded it, but for where its outputs were kept (not stored)."""
        return BenchRun(
            serial=self.serial, bundle_name=self.bundle_name, bundle_sha256=self.bundle_sha256,
            config=self.config, config_key=self.config_key, repeat=self.repeat,
            status=self.status, started_at=self.started_at, finished_at=self.finished_at,
            device=self.device, result=self.deploy_result(), error=self.error,
            state_before=self.state_before, state_after=self.state_after,
            warnings=self.warnings, profile=self.profile,
            cooldown_waited_s=self.cooldown_waited_s, cooldown_cut=self.cooldown_cut,
        )

    @property
    def device_model(self) -> str:
        """The key baselines are matched by: the model, or the serial when it has none."""
        return self.model or self.serial


@dataclass(frozen=True)
class StoredSession:
    id: str
    label: str | None
    started_at: str
    finished_at: str | None
    interrupted: bool
    host: str | None
    edgepack_version: str | None
    params: BenchParams | None  # None: a row written without them (edgepack always writes them)
    bundles: list[BundleRef]
    serials: list[str]  # as the bench was given them


@dataclass(frozen=True)
class RunFilter:
    """Which runs a query returns: those matching every field given.

    bundle: a sha256 prefix or a bundle name; device: a serial or a model (any case); model: the
    key baselines are matched by (HistoryRun.device_model); since/before: ISO timestamps (see
    parse_since); ok_only: runs that finished (pass or fail). Oldest first, or newest first.
    """

    bundle: str | None = None
    device: str | None = None
    since: str | None = None
    label: str | None = None
    session: str | None = None
    model: str | None = None
    config_key: str | None = None
    before: str | None = None
    ok_only: bool = False
    limit: int | None = None
    newest_first: bool = False


# ---------------------------------------------------------------------------- the interface


class HistoryStore(ABC):
    """Where bench runs are kept: `HistoryStore.open()` opens the backend for a location.
    What a backend implements is in this module's docstring."""

    @classmethod
    def open(cls, path: Path | str | None = None) -> HistoryStore:
        """The store at `path` (default: $EDGEPACK_DB, else default_db_path()): a
        postgresql://USER@HOST:PORT/DB URL is a PostgreSQL database, anything else a SQLite
        file."""
        given = db_location(path)
        if isinstance(given, str):
            from edgepack.history.postgres import PostgresStore

            return PostgresStore(given)
        from edgepack.history.sqlite import SQLiteStore

        return SQLiteStore(given)

    # -------------------------------------------------------------------- what a backend does

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the store is, as messages name it."""

    @property
    @abstractmethod
    def schema_version(self) -> int: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def begin_session(self, plan: BenchPlan) -> None: ...

    @abstractmethod
    def end_session(self, result: BenchResult) -> None:
        """The session ended, or was interrupted (result.interrupted)."""

    @abstractmethod
    def add_run(self, session: str, run: BenchRun) -> int:
        """Store one run and its verdicts in one transaction; returns the run's id, which grows
        with every run stored (bench_result reads it as the order runs ran in)."""

    @abstractmethod
    def query(self, where: RunFilter) -> list[HistoryRun]: ...

    @abstractmethod
    def sessions(self, ids: Sequence[str]) -> list[StoredSession]:
        """The stored sessions of these ids, in that order; unknown ids are left out."""

    @abstractmethod
    def labels(self) -> list[str]:
        """Every label stored, the most recently used first."""

    @abstractmethod
    def bundles_matching(self, prefix: str) -> list[tuple[str, str]]:
        """(sha256, name) of stored bundles whose sha256 starts with `prefix`."""

    # -------------------------------------------------------------------- built on those

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def runs(self, **filters: Any) -> list[HistoryRun]:
        """Runs matching every filter given, oldest first (or newest first): see RunFilter."""
        return self.query(RunFilter(**filters))

    def latest_session(self, bundle_sha256: str, device: str | None = None) -> str | None:
        """The newest session that ran this bundle (on `device`, a serial or model)."""
        runs = self.runs(bundle=bundle_sha256, device=device, ok_only=True, limit=1,
                         newest_first=True)
        return runs[0].session if runs else None

    def bench_result(self, runs: Sequence[HistoryRun]) -> BenchResult:
        """Stored runs read back as the BenchResult of the bench that made them, for the
        reports. What a report shows that the store does not keep (the outputs themselves, so
        the image comparisons) is absent."""
        if not runs:
            raise EdgepackError("no stored runs to report on")
        old = [r for r in runs if r.status is not RunStatus.ERROR and r.result_json is None]
        if old:
            raise EdgepackError(
                f"session {old[0].session} was stored by an edgepack that kept no whole results "
                "(history schema 1): its reports cannot be written again; bench anew")
        runs = sorted(runs, key=lambda r: r.id)  # stored as they ended: the order they ran
        sessions = self.sessions(list(dict.fromkeys(r.session for r in runs)))
        first = sessions[0]
        known = {b.sha256: b for s in sessions for b in s.bundles}
        order = bench_order((r.bench_run() for r in runs),
                            [serial for s in sessions for serial in s.serials], list(known))
        names = {r.bundle_sha256: r.bundle_name for r in runs}
        started = min(r.started_at for r in runs)
        finished = max(r.finished_at for r in runs)
        if len(sessions) == 1:  # the bench's own times, when the runs are all of one bench
            started = first.started_at or started
            finished = first.finished_at or finished
        return BenchResult(
            session=first.id,
            label=first.label,
            params=first.params or BenchParams(),
            bundles=[known.get(sha) or BundleRef(names[sha], sha, "") for sha in order.bundles],
            serials=order.serials,
            runs=order.runs,
            started_at=started,
            finished_at=finished,
            wall_s=(datetime.fromisoformat(finished)
                    - datetime.fromisoformat(started)).total_seconds(),
            interrupted=any(s.interrupted for s in sessions),
        )


class HistoryListener(BenchListener):
    """Writes every run to the store as soon as it ends.

    A store whose server went away (StoreUnavailable) does not stop the bench: the runs that
    cannot be stored are noted, later ones are tried again (a restarted server takes them), and
    the bench ends with exit 3 naming every run not stored."""

    def __init__(self, store: HistoryStore) -> None:
        self.store = store
        self.session: str | None = None
        self.unstored: list[BenchRun] = []
        self._lost: StoreUnavailable | None = None

    def on_start(self, plan: BenchPlan) -> None:
        self.session = plan.session
        self.store.begin_session(plan)

    def on_run_end(self, run: BenchRun) -> None:
        assert self.session is not None
        try:
            self.store.add_run(self.session, run)
        except StoreUnavailable as exc:
            self._lost = exc
            self.unstored.append(run)

    def on_end(self, result: BenchResult) -> None:
        try:
            self.store.end_session(result)
        except StoreUnavailable as exc:
            self._lost = exc
        if self._lost is not None:
            names = ", ".join(f"{r.serial} {r.bundle_name} {r.config_key} #{r.repeat + 1}"
                              for r in self.unstored)
            stored = len(result.runs) - len(self.unstored)
            raise StoreUnavailable(
                f"{self._lost.message}; {stored} of {len(result.runs)} run(s) stored"
                + (f", not stored: {names}" if names else ", the session's end not stored"))


def parse_since(text: str, now: datetime | None = None) -> str:
    """`7d`, `12h`, `30m`, `2w`, or an ISO date/time -> the ISO timestamp the store compares."""
    now = now or datetime.now(UTC)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if m:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
        try:
            moment = now - timedelta(**{unit[m.group(2)]: float(m.group(1))})
        except OverflowError:
            raise EdgepackError(f"--since {text!r}: reaches back before the year 1") from None
    else:
        try:
            moment = datetime.fromisoformat(text.strip())
        except ValueError:
            raise EdgepackError(f"--since {text!r}: expected a duration (7d, 12h, 30m, 2w) or "
                                "an ISO date (2025-01-31 or 2025-01-31T08:00)") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")
