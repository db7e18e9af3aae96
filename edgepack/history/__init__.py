"""Every bench run, kept: what ran, where, how fast, and whether it computed right.

The store is one SQLite file (`~/.local/share/edgepack/history.db`; `--db PATH` or EDGEPACK_DB
choose another), or a PostgreSQL database that a lab's hosts share (`--db postgresql://...`),
that benches write as they go and `history`, `regress` and the reports read.

    store.py   the interface the rest of edgepack uses (HistoryStore), the records it hands
               back (HistoryRun, StoredVerdict, StoredSession), HistoryListener, and what a
               second backend implements: its docstring says
    schema.py  the tables, their migrations and the statements that read them, written once
               for every backend in SQL that SQLite and PostgreSQL share, but for the few words
               a Dialect names
    rows.py    the one mapping between a record and a row (a dict of column -> value)
    sqlite.py  the SQLite backend, the default
    postgres.py  the PostgreSQL backend (psycopg 3, imported only for a postgresql URL)

The store stores and reads records; what is computed from them lives with its users: a
BenchResult's order in records.bench_order, latency trends in edgepack.trend, regressions in
edgepack.regress.
"""

from edgepack.history.schema import MIGRATIONS
from edgepack.history.sqlite import SQLiteStore
from edgepack.history.store import (
    ENV_DB,
    HistoryListener,
    HistoryRun,
    HistoryStore,
    RunFilter,
    StoredSession,
    StoredVerdict,
    default_db_path,
    parse_since,
)

__all__ = [
    "ENV_DB",
    "MIGRATIONS",
    "HistoryListener",
    "HistoryRun",
    "HistoryStore",
    "RunFilter",
    "SQLiteStore",
    "StoredSession",
    "StoredVerdict",
    "default_db_path",
    "parse_since",
]
