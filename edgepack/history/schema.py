"""The history's tables, their migrations and the statements that read them, written once for
every backend.

Schema version N is what `MIGRATIONS[:N]` make; `MIGRATIONS[i]` takes a store from version i to
i + 1, each in its own transaction. Append; never edit a shipped one. A store newer than this
edgepack is refused rather than misread (`upgrades`).

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
              adds it to runs stored before, whose config_json says they were profiled);
              from version 4 cooldown_waited_s and cooldown_cut: how long the cooldown before
              the run waited, and whether `--cooldown auto` gave up (NULL: stored before)
    verdicts  one per run x test set x output: pass/fail, reason and the comparison metrics

Timestamps are UTC ISO-8601 strings of one format, so they sort and compare as text.

The SQL is what SQLite and PostgreSQL both accept, but for the few words a `Dialect` names: a
migration's text is formatted with the backend's dialect (`{row_id}`, `{real}`, `{profiled}`;
braces meant literally are doubled), and the statements below take its bound-parameter mark.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from edgepack.errors import EdgepackError, ExitCode
from edgepack.history.store import RunFilter


@dataclass(frozen=True)
class Dialect:
    """The SQL a backend words its own way; everything else here is shared."""

    name: str
    row_id: str  # an integer primary key the database numbers itself
    real: str  # a column of 8-byte floats
    profiled: str  # true for a runs row whose config_json says the run was profiled
    row_order: str  # orders a table's rows as they were inserted
    mark: str  # a bound parameter: `?` (sqlite3) or `%s` (psycopg)


# PostgreSQL's is history.postgres.POSTGRES, with its backend.
SQLITE = Dialect(
    name="sqlite",
    row_id="INTEGER PRIMARY KEY",
    real="REAL",
    profiled="json_extract(config_json, '$.profile') = 1",
    row_order="rowid",
    mark="?",
)

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
    id {row_id},
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
    mean_ms {real}, median_ms {real}, std_ms {real}, min_ms {real}, max_ms {real},
    p90_ms {real}, p95_ms {real}, p99_ms {real}, cv {real},
    session_create_ms {real},
    first_inference_ms {real},
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
    max_abs_error {real}, max_rel_error {real}, mean_abs_error {real}, cosine_similarity {real},
    snr_db {real}, mismatched INTEGER, total INTEGER, top1_agreement {real}, top5_agreement {real},
    PRIMARY KEY (run_id, set_index, output)
);
CREATE INDEX runs_by_bundle ON runs (bundle_sha256, started_at);
CREATE INDEX runs_by_name ON runs (bundle_name, started_at);
CREATE INDEX runs_by_model ON runs (device_model, config_key, started_at);
CREATE INDEX runs_by_session ON runs (session_id);
CREATE INDEX sessions_by_label ON sessions (label, started_at);
"""

_V2 = """
ALTER TABLE runs ADD COLUMN result_json TEXT;
"""

# Profiling slows every iteration, so a profiled run is no baseline for a plain one: the key
# regress matches baselines by says so since records.config_key added `/profile` (always last).
_V3 = """
UPDATE runs SET config_key = config_key || '/profile'
    WHERE {profiled} AND config_key NOT LIKE '%/profile';
"""

# The wait before a run (bench's and ab's --cooldown) and whether --cooldown auto gave up: a
# stored run is then judged as its bench judged it (a cut wait makes it semivalid), and a
# report written again from the history shows the wait.
_V4 = """
ALTER TABLE runs ADD COLUMN cooldown_waited_s {real};
ALTER TABLE runs ADD COLUMN cooldown_cut INTEGER;
"""

MIGRATIONS: list[str] = [_V1, _V2, _V3, _V4]


def upgrades(version: int, where: str) -> range:
    """The versions a store at `version` goes through to be current, in order."""
    if version > len(MIGRATIONS):
        raise EdgepackError(
            f"{where}: history schema version {version} is newer than this edgepack reads "
            f"({len(MIGRATIONS)}); upgrade edgepack, or pass --db PATH for a separate file",
            ExitCode.BAD_INPUT,
        )
    return range(version + 1, len(MIGRATIONS) + 1)


def migration(target: int, dialect: Dialect) -> str:
    """The SQL that takes a store from version target - 1 to `target`, in the backend's words."""
    return MIGRATIONS[target - 1].format_map(asdict(dialect))


# ---------------------------------------------------------------------------- statements


def insert(table: str, columns: Sequence[str], dialect: Dialect) -> str:
    """An INSERT of these columns: built from a row's keys (see history.rows), never by place."""
    return (f"INSERT INTO {table} ({', '.join(columns)}) "
            f"VALUES ({', '.join(dialect.mark for _ in columns)})")


def upsert(table: str, columns: Sequence[str], key: str, dialect: Dialect) -> str:
    """An INSERT that overwrites the row with the same `key` (SQLite >= 3.24, PostgreSQL)."""
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != key)
    return f"{insert(table, columns, dialect)} ON CONFLICT ({key}) DO UPDATE SET {updates}"


def update(table: str, columns: Sequence[str], key: str, dialect: Dialect) -> str:
    """An UPDATE of these columns of the row whose `key` is the last parameter."""
    sets = ", ".join(f"{c} = {dialect.mark}" for c in columns)
    return f"UPDATE {table} SET {sets} WHERE {key} = {dialect.mark}"


def select_runs(where: RunFilter, dialect: Dialect) -> tuple[str, list[Any]]:
    """The runs a filter selects, each with its session's label, in the filter's order."""
    m = dialect.mark
    clauses: list[str] = []
    args: list[Any] = []
    if where.bundle:
        clauses.append(f"(substr(r.bundle_sha256, 1, {m}) = lower({m}) OR r.bundle_name = {m})")
        args += [len(where.bundle), where.bundle, where.bundle]
    if where.device:
        clauses.append(f"(r.device_serial = {m} OR lower(r.device_model) = lower({m}))")
        args += [where.device, where.device]
    if where.model:
        clauses.append(f"coalesce(r.device_model, r.device_serial) = {m}")
        args.append(where.model)
    for column, value in (("r.started_at >=", where.since), ("r.started_at <", where.before),
                          ("s.label =", where.label), ("r.session_id =", where.session),
                          ("r.config_key =", where.config_key)):
        if value is not None:
            clauses.append(f"{column} {m}")
            args.append(value)
    if where.ok_only:
        clauses.append("r.status != 'error'")
    sql = ("SELECT r.*, s.label AS label, s.host AS host FROM runs r "
           "JOIN sessions s ON s.id = r.session_id"
           + (" WHERE " + " AND ".join(clauses) if clauses else "")
           + f" ORDER BY r.started_at {'DESC' if where.newest_first else 'ASC'}, r.id"
           + (f" LIMIT {m}" if where.limit else ""))
    if where.limit:
        args.append(where.limit)
    return sql, args


def select_verdicts(count: int, dialect: Dialect) -> str:
    """The verdicts of `count` runs, each run's in the order they were stored."""
    marks = ", ".join(dialect.mark for _ in range(count))
    return (f"SELECT * FROM verdicts WHERE run_id IN ({marks}) "
            f"ORDER BY run_id, set_index, {dialect.row_order}")


def select_sessions(count: int, dialect: Dialect) -> str:
    return f"SELECT * FROM sessions WHERE id IN ({', '.join(dialect.mark for _ in range(count))})"


# Newest first: the label a lab used last is the one a user most likely means.
SELECT_LABELS = ("SELECT label FROM sessions WHERE label IS NOT NULL GROUP BY label "
                 "ORDER BY max(started_at) DESC")


def select_bundles(dialect: Dialect) -> str:
    """(sha256, name) of every stored bundle whose sha256 starts with a prefix."""
    m = dialect.mark
    return ("SELECT bundle_sha256, max(bundle_name) FROM runs "
            f"WHERE substr(bundle_sha256, 1, {m}) = lower({m}) GROUP BY bundle_sha256")
