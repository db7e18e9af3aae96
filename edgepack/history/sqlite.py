"""The history in one SQLite file: the default backend (see history.store for the interface).

The file is opened in WAL mode with a busy timeout, so `edgepack history` can read while a
bench writes and two benches can share a file. Each run is written in one transaction, the run
and its verdicts together: an interrupted bench leaves whole runs or none, never half of one.

What is SQLite's own here: the connection and its pragmas; BEGIN IMMEDIATE transactions (two
processes opening a new file migrate it one at a time); the schema version kept in
PRAGMA user_version; NaN and infinities written as text, since SQLite turns NaN into NULL.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgepack.errors import EdgepackError
from edgepack.history import schema
from edgepack.history.rows import (
    Row,
    run_from_row,
    run_row,
    session_end_row,
    session_from_row,
    session_row,
    verdict_from_row,
    verdict_rows,
)
from edgepack.history.schema import SQLITE
from edgepack.history.store import (
    HistoryRun,
    HistoryStore,
    RunFilter,
    StoredSession,
    StoredVerdict,
)
from edgepack.records import BenchPlan, BenchResult, BenchRun
from edgepack.serialize import to_jsonable

# Fewer bound parameters than the 999 an SQLite before 3.32 allows in one statement.
_CHUNK = 500


class SQLiteStore(HistoryStore):
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
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise EdgepackError(f"{self.path}: cannot open the history database ({exc}); "
                                "pass --db PATH to use another file") from None
        except OSError as exc:
            raise EdgepackError(f"{self.path}: cannot create the history database ({exc}); "
                                "pass --db PATH to use another file") from None

    @property
    def location(self) -> str:
        return str(self.path)

    @property
    def schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        self.conn.close()

    # -------------------------------------------------------------------- writing

    def begin_session(self, plan: BenchPlan) -> None:
        row = session_row(plan)
        with self._transaction():
            self.conn.execute(schema.upsert("sessions", list(row), "id", SQLITE), _bind(row))

    def end_session(self, result: BenchResult) -> None:
        row = session_end_row(result)
        with self._transaction():
            self.conn.execute(schema.update("sessions", list(row), "id", SQLITE),
                              [*_bind(row), result.session])

    def add_run(self, session: str, run: BenchRun) -> int:
        row = run_row(session, run)
        with self._transaction():
            cursor = self.conn.execute(schema.insert("runs", list(row), SQLITE), _bind(row))
            run_id = int(cursor.lastrowid or 0)
            verdicts = verdict_rows(run_id, run)
            if verdicts:
                self.conn.executemany(schema.insert("verdicts", list(verdicts[0]), SQLITE),
                                      [_bind(v) for v in verdicts])
        return run_id

    # -------------------------------------------------------------------- reading

    def query(self, where: RunFilter) -> list[HistoryRun]:
        sql, args = schema.select_runs(where, SQLITE)
        rows = self.conn.execute(sql, args).fetchall()
        verdicts = self._verdicts([row["id"] for row in rows])
        return [run_from_row(dict(row), verdicts.get(row["id"], [])) for row in rows]

    def _verdicts(self, run_ids: Sequence[int]) -> dict[int, list[StoredVerdict]]:
        result: dict[int, list[StoredVerdict]] = {}
        for start in range(0, len(run_ids), _CHUNK):
            chunk = list(run_ids[start:start + _CHUNK])
            for row in self.conn.execute(schema.select_verdicts(len(chunk), SQLITE), chunk):
                result.setdefault(row["run_id"], []).append(verdict_from_row(dict(row)))
        return result

    def sessions(self, ids: Sequence[str]) -> list[StoredSession]:
        found: dict[str, StoredSession] = {}
        for start in range(0, len(ids), _CHUNK):
            chunk = list(ids[start:start + _CHUNK])
            for row in self.conn.execute(schema.select_sessions(len(chunk), SQLITE), chunk):
                found[row["id"]] = session_from_row(dict(row))
        return [found[i] for i in ids if i in found]

    def labels(self) -> list[str]:
        return [row["label"] for row in self.conn.execute(schema.SELECT_LABELS)]

    def bundles_matching(self, prefix: str) -> list[tuple[str, str]]:
        rows = self.conn.execute(schema.select_bundles(SQLITE), (len(prefix), prefix))
        return [(row[0], row[1]) for row in rows]

    # -------------------------------------------------------------------- SQLite's own

    def _migrate(self) -> None:
        for target in schema.upgrades(self.schema_version, str(self.path)):
            with self._transaction():
                # Another process may have migrated the file while this one waited for the
                # lock BEGIN IMMEDIATE takes.
                if self.schema_version < target:
                    for statement in _statements(schema.migration(target, SQLITE)):
                        self.conn.execute(statement)
                    self.conn.execute(f"PRAGMA user_version = {target}")

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception (Ctrl-C included)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")


def _bind(row: Row) -> list[Any]:
    # SQLite stores NaN as NULL: a non-finite float is kept as the text to_jsonable gives it,
    # which history.rows reads back as the float.
    return [to_jsonable(v) if isinstance(v, float) and not math.isfinite(v) else v
            for v in row.values()]


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
