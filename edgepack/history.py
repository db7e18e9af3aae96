"""Every bench run, kept in SQLite: what ran, where, how fast, and whether it computed right.

The store is one file (`~/.local/share/edgepack/history.db`; `--db PATH` or EDGEPACK_DB choose
another). It is opened in WAL mode with a busy timeout, so `edgepack history` can read while a
bench writes and two benches can share a file. Each run is written in one transaction, the run
and its verdicts together: an interrupted bench leaves whole runs or none, never half of one.

Schema (PRAGMA user_version is its version; `MIGRATIONS[i]` takes a file from version i to i+1,
each in its own transaction, and a file newer than this edgepack is refused rather than misread):

    sessions  one bench or regress invocation: id, label, started_at, finished_at, interrupted,
              host, edgepack_version, params_json
    runs      one bundle x configuration x repeat on one device: bundle sha256 and name, device
              serial/model/ABI/SDK (+ device_json), config_key and config_json, status (pass,
              fail, error) and error, engine, runner and onnxruntime versions, EP used, start and
              end, every iteration's latency (latencies_json), their statistics, session-create
              and first-inference ms, peak RSS, device state before/after, warnings, profile;
              from version 2 also result_json, the whole DeployResult, from which a stored
              session's reports are written again (`regress --from-history --report-dir`);
              from version 3 a profiled run's config_key ends in `/profile` (the migration
              adds it to runs stored before, whose config_json says they were profiled)
    verdicts  one per run x test set x output: pass/fail, reason and the comparison metrics

Timestamps are UTC ISO-8601 strings of one format, so they sort and compare as text.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from edgepack import __version__
from edgepack.compare import Metrics
from edgepack.devices.base import DeviceInfo
from edgepack.devices.state import CpuFreq, DeviceState
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
)
from edgepack.runner.result import RunConfig
from edgepack.serialize import INTERNAL, from_jsonable, to_jsonable
from edgepack.stats import LatencyStats, latency_stats

ENV_DB = "EDGEPACK_DB"

_V1 = """
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    label TEXT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    interrupted INTEGER NOT NULL DEFAULT 0,
    host TEXT,
    edgepack_version TEXT,
    params_json TEXT NOT NULL
);
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id),
    bundle_sha256 TEXT NOT NULL,
    bundle_name TEXT NOT NULL,
    device_serial TEXT NOT NULL,
    device_model TEXT,
    device_abi TEXT,
    device_sdk INTEGER,
    device_json TEXT,
    config_key TEXT NOT NULL,
    config_json TEXT NOT NULL,
    repeat INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pass', 'fail', 'error')),
    error TEXT,
    engine TEXT,
    runner_version TEXT,
    ort_version TEXT,
    ep_used TEXT,
    started_at TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    latencies_json TEXT NOT NULL DEFAULT '[]',
    n INTEGER NOT NULL DEFAULT 0,
    mean_ms REAL, median_ms REAL, std_ms REAL, min_ms REAL, max_ms REAL,
    p90_ms REAL, p95_ms REAL, p99_ms REAL, cv REAL,
    session_create_ms REAL,
    first_inference_ms REAL,
    peak_rss_kb INTEGER,
    state_before_json TEXT,
    state_after_json TEXT,
    warnings_json TEXT NOT NULL DEFAULT '[]',
    profile_json TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE verdicts (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    set_index INTEGER NOT NULL,
    output TEXT NOT NULL,
    passed INTEGER NOT NULL,
    reason TEXT,
    max_abs_error REAL, max_rel_error REAL, mean_abs_error REAL, cosine_similarity REAL,
    snr_db REAL, mismatched INTEGER, total INTEGER, top1_agreement REAL, top5_agreement REAL,
    PRIMARY KEY (run_id, set_index, output)
);
CREATE INDEX runs_by_bundle ON runs (bundle_sha256, started_at);
CREATE INDEX runs_by_name ON runs (bundle_name, started_at);
CREATE INDEX runs_by_model ON runs (device_model, config_key, started_at);
CREATE INDEX runs_by_session ON runs (session_id);
CREATE INDEX sessions_by_label ON sessions (label, started_at);
"""

# MIGRATIONS[i] takes a database from user_version i to i + 1. Append; never edit a shipped one.
_V2 = """
ALTER TABLE runs ADD COLUMN result_json TEXT;
"""

# Profiling slows every iteration, so a profiled run is no baseline for a plain one: the key
# regress matches baselines by says so since bench.config_key added `/profile` (always last).
_V3 = """
UPDATE runs SET config_key = config_key || '/profile'
    WHERE json_extract(config_json, '$.profile') = 1 AND config_key NOT LIKE '%/profile';
"""

MIGRATIONS: list[str] = [_V1, _V2, _V3]


def default_db_path() -> Path:
    env = os.environ.get(ENV_DB)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "edgepack" / "history.db"


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
    # The whole DeployResult as stored (schema 2 on); parsed on demand: listings never need it.
    result_json: str | None = field(default=None, repr=False, metadata={INTERNAL: True})

    def deploy_result(self) -> DeployResult | None:
        if self.result_json is None:
            return None
        result = from_jsonable(DeployResult, json.loads(self.result_json))
        # Statistics again from the samples: one stored by an older edgepack lacks the spread
        # and outliers the reports show.
        return replace(result, stats=latency_stats(result.sets[0].runner.latencies_ms))

    @property
    def device_model(self) -> str:
        """The key baselines are matched by: the model, or the serial when it has none."""
        return self.model or self.serial


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


# ---------------------------------------------------------------------------- the store


class HistoryStore:
    """The SQLite file; one connection, used from one thread (the bench's listeners run there)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: transactions are the explicit BEGIN ... COMMIT below.
            self.conn = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None)
            self.conn.row_factory = sqlite3.Row
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA foreign_keys=ON")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            migrate(self.conn, self.path)
        except sqlite3.DatabaseError as exc:
            raise EdgepackError(f"{self.path}: cannot open the history database ({exc}); "
                                "pass --db PATH to use another file") from None
        except OSError as exc:
            raise EdgepackError(f"{self.path}: cannot create the history database ({exc}); "
                                "pass --db PATH to use another file") from None

    @classmethod
    def open(cls, path: Path | None = None) -> HistoryStore:
        return cls(Path(path) if path is not None else default_db_path())

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    # -------------------------------------------------------------------- writing

    def begin_session(self, plan: BenchPlan) -> None:
        with _transaction(self.conn):
            self.conn.execute(
                "INSERT OR REPLACE INTO sessions (id, label, started_at, host, edgepack_version,"
                " params_json) VALUES (?, ?, ?, ?, ?, ?)",
                (plan.session, plan.label, plan.started_at, platform.node(), __version__,
                 _json({"params": plan.params, "bundles": plan.bundles,
                        "serials": plan.serials})),
            )

    def end_session(self, result: BenchResult) -> None:
        with _transaction(self.conn):
            self.conn.execute(
                "UPDATE sessions SET finished_at = ?, interrupted = ? WHERE id = ?",
                (result.finished_at, int(result.interrupted), result.session),
            )

    def add_run(self, session: str, run: BenchRun) -> int:
        """Store one run and its verdicts in one transaction; returns the run's id."""
        result = run.result
        runner = result.sets[0].runner if result else None
        stats = result.stats if result is not None and result.stats.count else None
        device = run.device
        with _transaction(self.conn):
            cursor = self.conn.execute(
                """INSERT INTO runs (session_id, bundle_sha256, bundle_name, device_serial,
                   device_model, device_abi, device_sdk, device_json, config_key, config_json,
                   repeat, status, error, engine, runner_version, ort_version, ep_used,
                   started_at, finished_at, latencies_json, n, mean_ms, median_ms, std_ms,
                   min_ms, max_ms, p90_ms, p95_ms, p99_ms, cv, session_create_ms,
                   first_inference_ms, peak_rss_kb, state_before_json, state_after_json,
                   warnings_json, profile_json, result_json)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,
                           ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (
                    session, run.bundle_sha256, run.bundle_name, run.serial,
                    device.model if device else None,
                    device.abis[0] if device and device.abis else None,
                    device.sdk if device else None,
                    _json(device) if device else None,
                    run.config_key, _json(run.config), run.repeat, run.status, run.error,
                    result.engine if result else None,
                    runner.runner_version if runner else None,
                    runner.onnxruntime_version if runner else None,
                    runner.ep_used if runner else None,
                    run.started_at, run.finished_at, json.dumps(run.latencies_ms),
                    stats.count if stats else 0,
                    *(_stat_columns(stats)),
                    runner.session_create_ms if runner else None,
                    runner.first_inference_ms if runner else None,
                    runner.peak_rss_kb_end if runner else None,
                    _json(run.state_before) if run.state_before else None,
                    _json(run.state_after) if run.state_after else None,
                    json.dumps(run.warnings), _json(run.profile),
                    _json(result) if result is not None else None,
                ),
            )
            run_id = int(cursor.lastrowid or 0)
            if result is not None:
                self.conn.executemany(
                    """INSERT INTO verdicts (run_id, set_index, output, passed, reason,
                       max_abs_error, max_rel_error, mean_abs_error, cosine_similarity, snr_db,
                       mismatched, total, top1_agreement, top5_agreement)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                    [(run_id, s.index, v.name, int(v.passed), v.reason, *_metric_columns(v.metrics))
                     for s in result.sets for v in s.verdicts],
                )
        return run_id

    # -------------------------------------------------------------------- reading

    def runs(
        self,
        *,
        bundle: str | None = None,
        device: str | None = None,
        since: str | None = None,
        label: str | None = None,
        session: str | None = None,
        model: str | None = None,
        config_key: str | None = None,
        before: str | None = None,
        ok_only: bool = False,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[HistoryRun]:
        """Runs matching every filter given, oldest first (or newest first).

        bundle: a sha256 prefix or a bundle name; device: a serial or a model (any case);
        since/before: ISO timestamps (see parse_since); ok_only: runs that finished (pass/fail).
        """
        where, args = [], []
        if bundle:
            where.append("(substr(r.bundle_sha256, 1, ?) = lower(?) OR r.bundle_name = ?)")
            args += [len(bundle), bundle, bundle]
        if device:
            where.append("(r.device_serial = ? OR lower(r.device_model) = lower(?))")
            args += [device, device]
        if model:
            where.append("coalesce(r.device_model, r.device_serial) = ?")
            args.append(model)
        for column, value in (("r.started_at >=", since), ("r.started_at <", before),
                              ("s.label =", label), ("r.session_id =", session),
                              ("r.config_key =", config_key)):
            if value is not None:
                where.append(f"{column} ?")
                args.append(value)
        if ok_only:
            where.append("r.status != 'error'")
        sql = ("SELECT r.*, s.label AS label FROM runs r JOIN sessions s ON s.id = r.session_id"
               + (" WHERE " + " AND ".join(where) if where else "")
               + f" ORDER BY r.started_at {'DESC' if newest_first else 'ASC'}, r.id"
               + (" LIMIT ?" if limit else ""))
        if limit:
            args.append(limit)
        rows = self.conn.execute(sql, args).fetchall()
        verdicts = self._verdicts([row["id"] for row in rows])
        return [_run_from_row(row, verdicts.get(row["id"], [])) for row in rows]

    def _verdicts(self, run_ids: Sequence[int]) -> dict[int, list[StoredVerdict]]:
        result: dict[int, list[StoredVerdict]] = {}
        for start in range(0, len(run_ids), 500):  # SQLite's bound-parameter limit
            chunk = list(run_ids[start:start + 500])
            marks = ",".join("?" * len(chunk))
            for row in self.conn.execute(
                f"SELECT * FROM verdicts WHERE run_id IN ({marks}) ORDER BY run_id, set_index, "
                "rowid", chunk
            ):
                result.setdefault(row["run_id"], []).append(_verdict_from_row(row))
        return result

    def labels(self) -> list[str]:
        return [r[0] for r in self.conn.execute(
            "SELECT label FROM sessions WHERE label IS NOT NULL GROUP BY label "
            "ORDER BY max(started_at) DESC")]

    def bundles_matching(self, prefix: str) -> list[tuple[str, str]]:
        """(sha256, name) of stored bundles whose sha256 starts with `prefix`."""
        return [(r[0], r[1]) for r in self.conn.execute(
            "SELECT bundle_sha256, max(bundle_name) FROM runs WHERE substr(bundle_sha256, 1, ?) "
            "= lower(?) GROUP BY bundle_sha256", (len(prefix), prefix))]

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
        sessions = list(dict.fromkeys(r.session for r in runs))
        marks = ",".join("?" * len(sessions))
        rows = {row["id"]: row for row in self.conn.execute(
            f"SELECT * FROM sessions WHERE id IN ({marks})", sessions)}
        first = json.loads(rows[sessions[0]]["params_json"])
        known = {b.sha256: b for s in sessions
                 for b in from_jsonable(list[BundleRef], json.loads(rows[s]["params_json"])
                                        .get("bundles", []))}
        # The bench lists its bundles, devices and runs in the order it was given them, not in
        # the order runs happened to end: the reports read back the same way.
        in_runs = {r.bundle_sha256: r.bundle_name for r in runs}
        shas = [sha for sha in dict.fromkeys([*known, *in_runs]) if sha in in_runs]
        serials = [s for s in dict.fromkeys([*first.get("serials", []), *(r.serial for r in runs)])
                   if any(r.serial == s for r in runs)]
        configs: dict[str, list[str]] = {}  # per device, in the order its configurations ran
        for r in runs:
            keys = configs.setdefault(r.serial, [])
            if r.config_key not in keys:
                keys.append(r.config_key)
        ordered = sorted(runs, key=lambda r: (serials.index(r.serial),
                                              shas.index(r.bundle_sha256),
                                              configs[r.serial].index(r.config_key), r.repeat))
        bench_runs = [BenchRun(
            serial=r.serial, bundle_name=r.bundle_name, bundle_sha256=r.bundle_sha256,
            config=r.config, config_key=r.config_key, repeat=r.repeat, status=r.status,
            started_at=r.started_at, finished_at=r.finished_at, device=r.device,
            result=r.deploy_result(), error=r.error, state_before=r.state_before,
            state_after=r.state_after, warnings=r.warnings, profile=r.profile,
        ) for r in ordered]
        started = min(r.started_at for r in runs)
        finished = max(r.finished_at for r in runs)
        if len(sessions) == 1:  # the bench's own times, when the runs are all of one bench
            started = rows[sessions[0]]["started_at"] or started
            finished = rows[sessions[0]]["finished_at"] or finished
        return BenchResult(
            session=sessions[0],
            label=rows[sessions[0]]["label"],
            params=from_jsonable(BenchParams, first["params"]),
            bundles=[known.get(sha) or BundleRef(in_runs[sha], sha, "") for sha in shas],
            serials=serials,
            runs=bench_runs,
            started_at=started,
            finished_at=finished,
            wall_s=(datetime.fromisoformat(finished)
                    - datetime.fromisoformat(started)).total_seconds(),
            interrupted=any(bool(rows[s]["interrupted"]) for s in sessions),
        )

    def latest_session(self, bundle_sha256: str, device: str | None = None) -> str | None:
        """The newest session that ran this bundle (on `device`, a serial or model)."""
        runs = self.runs(bundle=bundle_sha256, device=device, ok_only=True, limit=1,
                         newest_first=True)
        return runs[0].session if runs else None

    def trend(self, bundle_name: str, keys: set[tuple[str, str]], sessions: int = 30
              ) -> list[TrendSeries]:
        """Median latency per session of a bundle (every version of it, by name) per model and
        configuration, the latest `sessions` sessions of each, oldest first."""
        series: list[TrendSeries] = []
        for model, key in sorted(keys):
            runs = self.runs(bundle=bundle_name, model=model, config_key=key, ok_only=True)
            by_session: dict[str, list[HistoryRun]] = {}
            for run in runs:
                if run.bundle_name == bundle_name:
                    by_session.setdefault(run.session, []).append(run)
            points = []
            for session, members in by_session.items():
                samples = [x for r in members for x in r.latencies_ms]
                if not samples:
                    continue
                s = latency_stats(samples)
                points.append(TrendPoint(session, members[0].label, members[0].started_at,
                                         members[0].bundle_sha256, s.median_ms, s.p90_ms,
                                         s.count))
            points.sort(key=lambda p: p.started_at)
            if points:
                series.append(TrendSeries(bundle_name, model, key, points[-sessions:]))
        return series


def migrate(conn: sqlite3.Connection, path: Path | str = "history") -> None:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > len(MIGRATIONS):
        raise EdgepackError(
            f"{path}: history schema version {version} is newer than this edgepack reads "
            f"({len(MIGRATIONS)}); upgrade edgepack, or pass --db PATH for a separate file",
            ExitCode.BAD_INPUT,
        )
    for target in range(version + 1, len(MIGRATIONS) + 1):
        # BEGIN IMMEDIATE: two processes opening a new file at once migrate it one at a time;
        # the second then finds the version already raised.
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if current < target:
                for statement in _statements(MIGRATIONS[target - 1]):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {target}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


class HistoryListener(BenchListener):
    """Writes every run to the store as soon as it ends."""

    def __init__(self, store: HistoryStore) -> None:
        self.store = store
        self.session: str | None = None

    def on_start(self, plan: BenchPlan) -> None:
        self.session = plan.session
        self.store.begin_session(plan)

    def on_run_end(self, run: BenchRun) -> None:
        assert self.session is not None
        self.store.add_run(self.session, run)

    def on_end(self, result: BenchResult) -> None:
        self.store.end_session(result)


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


# ---------------------------------------------------------------------------- row mapping


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception (Ctrl-C included)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _statements(script: str) -> list[str]:
    # executescript() would commit the open transaction first: split and execute one by one.
    parts, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            parts.append(current.strip())
            current = ""
    if current.strip():
        parts.append(current.strip())
    return parts


def _json(value: Any) -> str:
    return json.dumps(to_jsonable(value), sort_keys=True)


def _stat_columns(stats: LatencyStats | None) -> list[float | None]:
    if stats is None:
        return [None] * 9
    return [stats.mean_ms, stats.median_ms, stats.std_ms, stats.min_ms, stats.max_ms,
            stats.p90_ms, stats.p95_ms, stats.p99_ms, stats.cv]


def _metric_columns(m: Metrics | None) -> list[Any]:
    if m is None:
        return [None] * 9
    return [m.max_abs_error, m.max_rel_error, m.mean_abs_error, m.cosine_similarity,
            _finite_or_text(m.snr_db), m.mismatched, m.total, m.top1_agreement,
            m.top5_agreement]


def _finite_or_text(value: float) -> float | str:
    # SQLite turns NaN into NULL; keep the non-finite values a comparison can give as text.
    return to_jsonable(value)


def _known(cls: type, doc: dict[str, Any]) -> dict[str, Any]:
    # Rows written by a newer edgepack may carry fields this one does not know.
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in doc.items() if k in names}


def _state(text: str | None) -> DeviceState | None:
    if not text:
        return None
    doc = json.loads(text)
    doc["cpus"] = [CpuFreq(**_known(CpuFreq, c)) for c in doc.get("cpus", [])]
    return DeviceState(**_known(DeviceState, doc))


def _run_from_row(row: sqlite3.Row, verdicts: list[StoredVerdict]) -> HistoryRun:
    latencies = [float(x) for x in json.loads(row["latencies_json"])]
    # The statistics columns are for SQL readers; computed again from the samples, a row stored
    # by any edgepack gets the spread and outliers this one judges stability by.
    stats = latency_stats(latencies) if row["n"] and latencies else None
    return HistoryRun(
        id=row["id"],
        session=row["session_id"],
        label=row["label"],
        bundle_sha256=row["bundle_sha256"],
        bundle_name=row["bundle_name"],
        serial=row["device_serial"],
        model=row["device_model"],
        abi=row["device_abi"],
        sdk=row["device_sdk"],
        config_key=row["config_key"],
        config=RunConfig(**_known(RunConfig, json.loads(row["config_json"]))),
        repeat=row["repeat"],
        status=RunStatus(row["status"]),
        error=row["error"],
        engine=row["engine"],
        runner_version=row["runner_version"],
        onnxruntime_version=row["ort_version"],
        ep_used=row["ep_used"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        latencies_ms=latencies,
        stats=stats,
        session_create_ms=row["session_create_ms"],
        first_inference_ms=row["first_inference_ms"],
        peak_rss_kb=row["peak_rss_kb"],
        state_before=_state(row["state_before_json"]),
        state_after=_state(row["state_after_json"]),
        warnings=list(json.loads(row["warnings_json"])),
        profile=[OpTime(**_known(OpTime, o)) for o in json.loads(row["profile_json"])],
        verdicts=verdicts,
        device=from_jsonable(DeviceInfo, json.loads(row["device_json"]))
        if row["device_json"] else None,
        result_json=row["result_json"],
    )


def _verdict_from_row(row: sqlite3.Row) -> StoredVerdict:
    metrics = None
    if row["total"] is not None:
        metrics = Metrics(
            max_abs_error=row["max_abs_error"], max_rel_error=row["max_rel_error"],
            mean_abs_error=row["mean_abs_error"], cosine_similarity=row["cosine_similarity"],
            snr_db=None if row["snr_db"] is None else float(row["snr_db"]),
            mismatched=row["mismatched"], total=row["total"],
            top1_agreement=row["top1_agreement"], top5_agreement=row["top5_agreement"],
        )
    return StoredVerdict(row["set_index"], row["output"], bool(row["passed"]), row["reason"],
                         metrics)
