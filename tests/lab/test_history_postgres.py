"""The history in PostgreSQL: a real server the suite starts itself (tests/lab/pgserver.py),
several writers at once, a server restarted mid-bench, databases of other schema versions, bad
URLs and credentials, and a lab of two adb servers ("hosts") benching into one database."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import threading

import pytest

from edgepack.bench import run_bench
from edgepack.bundle import load_bundle
from edgepack.errors import ExitCode
from edgepack.history import MIGRATIONS, HistoryListener, HistoryStore
from edgepack.history.rows import run_row
from edgepack.history.store import StoreUnavailable
from edgepack.records import BenchListener, BenchParams
from tests.conftest import REPO, run_cli, unavailable
from tests.lab.conftest import FakePhone
from tests.lab.pgserver import PgServer
from tests.lab.test_history_rows import check_every_field, check_never_ran


@pytest.fixture(scope="session")
def pg_server():
    try:
        import psycopg  # noqa: F401
    except ImportError:
        unavailable("psycopg (pip install -e .[dev])")
    try:
        server = PgServer().init().start()
    except (FileNotFoundError, subprocess.CalledProcessError) as exc:
        unavailable(f"a PostgreSQL server cannot be started here: {exc}")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def pg_url(pg_server) -> str:
    if pg_server.pid is None:  # a test stopped it and failed before starting it again
        pg_server.start()
    return pg_server.database()


@pytest.fixture(scope="module")
def bundle(lab_bundle):
    return load_bundle(lab_bundle)


def sql(url: str, statement: str, *args):  # noqa: ANN002, ANN201
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement, args or None)
        return cur.fetchall() if cur.description else None


def bench_into(store, bundle, phones, tmp_path, listeners=(), **params):
    params = {"repeat": 2, "iterations": 10, **params}
    return run_bench([bundle], [p.target() for p in phones], BenchParams(**params),
                     [*listeners, HistoryListener(store)], work_dir=tmp_path, label="main")


def test_round_trip_and_host(pg_url, bundle, tmp_path):
    phones = [FakePhone("A"), FakePhone("B", model="Galaxy S23")]
    with HistoryStore.open(pg_url) as store:
        assert store.schema_version == len(MIGRATIONS)
        assert "s3cret" not in store.location
        result = bench_into(store, bundle, phones, tmp_path)
        stored = store.runs(session=result.session)
        assert store.labels() == ["main"]
        assert store.bundles_matching(bundle.sha256[:6]) == [(bundle.sha256, bundle.name)]
        again = store.bench_result(stored)
    assert len(stored) == 4 and len({r.id for r in stored}) == 4
    by_key = {(r.serial, r.repeat): r for r in stored}
    for run in result.runs:
        back = by_key[(run.serial, run.repeat)]
        assert back.latencies_ms == run.latencies_ms and back.stats == run.result.stats
        assert back.config_key == run.config_key and back.label == "main"
        assert back.host == socket.gethostname()
        # snr_db is +inf: PostgreSQL's double precision keeps it as it is.
        assert [v.metrics.snr_db for v in back.verdicts] == [float("inf")]
        assert back.deploy_result().sets[0].verdicts[0].passed
    assert [r.serial for r in again.runs] == [r.serial for r in result.runs]
    assert not again.interrupted and again.finished_at == result.finished_at


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_every_value_comes_back(pg_url):
    """NaN, infinities, None and odd text, every field, as through SQLite."""
    check_every_field(pg_url)


def test_a_run_that_never_ran_comes_back(pg_url):
    check_never_ran(pg_url)


WRITER = """
import sys
from pathlib import Path
from edgepack.bench import run_bench
from edgepack.bundle import load_bundle
from edgepack.history import HistoryListener, HistoryStore
from edgepack.records import BenchParams
from tests.lab.conftest import FakePhone
from tests.lab.test_history_rows import check_every_field, check_never_ran

url, bundle, work, name = sys.argv[1:]
with HistoryStore.open(url) as store:
    result = run_bench([load_bundle(bundle)],
                       [FakePhone(name + "-a").target(),
                        FakePhone(name + "-b", model="Galaxy S23").target()],
                       BenchParams(repeat=6, iterations=5), [HistoryListener(store)],
                       work_dir=Path(work), label=name)
print(result.session)
"""


def test_concurrent_writers_on_a_new_database(pg_url, lab_bundle, tmp_path):
    """Four processes open a database no one has set up and bench into it at once: the tables
    are made once, and every run of every session is stored whole, under its own id."""
    for i in range(4):
        (tmp_path / f"w{i}").mkdir()
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, pg_url, str(lab_bundle),
                                 str(tmp_path / f"w{i}"), f"w{i}"],
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
               for i in range(4)]
    outs = [w.communicate(timeout=300) for w in writers]
    assert [w.returncode for w in writers] == [0] * 4, [err for _, err in outs]
    sessions = {out.strip() for out, _ in outs}
    assert len(sessions) == 4
    with HistoryStore.open(pg_url) as store:
        runs = store.runs()
        assert store.schema_version == len(MIGRATIONS)
        stored = store.sessions(sorted(sessions))
    assert len(runs) == 4 * 2 * 6 and len({r.id for r in runs}) == len(runs)
    assert all(len(r.verdicts) == 1 for r in runs)
    for s in stored:
        assert s.finished_at is not None and not s.interrupted
        assert sum(r.session == s.id for r in runs) == 12
    assert sql(pg_url, "SELECT value FROM edgepack_meta") == [(str(len(MIGRATIONS)),)]


class Outage(BenchListener):
    """Stops the server before the history stores run `stop`, and starts it again before run
    `start`: listeners are heard in order, on the bench's thread."""

    def __init__(self, server: PgServer, stop: int, start: int) -> None:
        self.server, self.stop, self.start, self.seen = server, stop, start, 0

    def on_run_end(self, run) -> None:  # noqa: ANN001
        self.seen += 1
        if self.seen == self.stop:
            self.server.stop()
        if self.seen == self.start:
            self.server.start()


def test_server_restarted_mid_bench(pg_server, pg_url, bundle, tmp_path):
    phone = FakePhone("A")
    with HistoryStore.open(pg_url) as store:
        with pytest.raises(StoreUnavailable) as caught:
            bench_into(store, bundle, [phone], tmp_path, repeat=6,
                       listeners=[Outage(pg_server, stop=2, start=4)])
        stored = store.runs()
        session = store.sessions([stored[0].session])[0]
    error = caught.value
    assert error.exit_code == ExitCode.DEVICE
    assert "\n" not in error.message
    # Runs 2 and 3 ended while the server was down: named; the others stored, whole.
    assert "4 of 6 run(s) stored" in error.message, error.message
    assert "A picture" in error.message and "#2" in error.message and "#3" in error.message
    assert "#1" not in error.message and "#4" not in error.message
    assert sorted(r.repeat for r in stored) == [0, 3, 4, 5]
    assert all(len(r.verdicts) == 1 for r in stored)
    assert session.finished_at is not None


def test_a_newer_database_is_refused(pg_url):
    HistoryStore.open(pg_url).close()
    sql(pg_url, "UPDATE edgepack_meta SET value = '99' WHERE key = 'schema_version'")
    r = run_cli("history", "--db", pg_url)
    assert r.code == 2, r.stderr
    assert "history schema version 99 is newer" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "s3cret" not in r.stderr


def test_an_older_database_is_migrated(pg_url, bundle, tmp_path):
    """A database of schema 1 (a profiled run stored before config keys said so) is taken to
    the current version by the same migrations SQLite's files go through."""
    from edgepack.history import schema
    from edgepack.history.postgres import POSTGRES

    with HistoryStore.open(tmp_path / "h.db") as lite:
        result = bench_into(lite, bundle, [FakePhone("A")], tmp_path, repeat=1, profile=True)
    run = result.runs[0]
    assert run.config_key.endswith("/profile")
    row = run_row(result.session, run)
    del row["result_json"]  # schema 2's
    row["config_key"] = run.config_key.removesuffix("/profile")
    sql(pg_url, "CREATE TABLE edgepack_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    sql(pg_url, schema.migration(1, POSTGRES))
    sql(pg_url, "INSERT INTO edgepack_meta VALUES ('schema_version', '1')")
    sql(pg_url, "INSERT INTO sessions (id, started_at, params_json) VALUES (%s, %s, '{}')",
        result.session, result.started_at)
    sql(pg_url, schema.insert("runs", list(row), POSTGRES), *row.values())
    with HistoryStore.open(pg_url) as store:
        assert store.schema_version == len(MIGRATIONS)
        (back,) = store.runs()
    assert back.config_key == run.config_key and back.result_json is None


# ---------------------------------------------------------------------------- bad input


def _fake_old_server() -> tuple[socket.socket, threading.Thread]:
    """Speaks PostgreSQL's protocol far enough to say it is version 9.4."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                while True:
                    head = conn.recv(8, socket.MSG_WAITALL)
                    if len(head) < 8:
                        break
                    length, code = struct.unpack("!ii", head)
                    conn.recv(length - 8, socket.MSG_WAITALL)
                    if code in (80877103, 80877104):  # SSL or GSS encryption: no
                        conn.sendall(b"N")
                        continue
                    status = b"server_version\x009.4.26\x00"
                    conn.sendall(b"R" + struct.pack("!ii", 8, 0)
                                 + b"S" + struct.pack("!i", 4 + len(status)) + status
                                 + b"K" + struct.pack("!iii", 12, 1, 2)
                                 + b"Z" + struct.pack("!i", 5) + b"I")
                    conn.recv(64)  # Terminate
                    break

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


def test_an_old_server_is_refused():
    listener, thread = _fake_old_server()
    try:
        port = listener.getsockname()[1]
        r = run_cli("history", "--db", f"postgresql://u@127.0.0.1:{port}/db?sslmode=disable")
    finally:
        listener.close()
    assert r.code == 2, r.stderr
    assert "PostgreSQL 9.4.26 is older than edgepack supports (12 or newer)" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("make_url, expected", [
    (lambda s: s.url().replace("postgresql", "postgresq"), "unknown database URL scheme"),
    (lambda s: s.url(password="wrong"), "password authentication failed"),
    (lambda s: s.url(user="nobody"), "password authentication failed"),
    (lambda s: s.url("no_such_db"), 'database "no_such_db" does not exist'),
    (lambda s: s.url().replace(f":{s.port}/", ":1/"), "cannot connect"),
])
def test_bad_urls_and_credentials(pg_server, make_url, expected, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    url = make_url(pg_server)
    for args, env in ((["--db", url], None), ([], url)):
        if env:
            monkeypatch.setenv("EDGEPACK_DB", env)
        r = run_cli("history", *args)
        assert r.code == 2, (url, r.stdout, r.stderr)
        assert expected in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "wrong" not in r.stderr and "s3cret" not in r.stderr
    assert list(tmp_path.iterdir()) == []  # a misspelled URL is no file name


# ---------------------------------------------------------------------------- a lab of two hosts


@pytest.fixture
def second_host(tmp_path_factory, host_runner):
    """Another adb server on this machine, with its own virtual device: a second lab host."""
    from edgepack.devices.virtual.harness import AdbServer, DeviceFactory

    server = AdbServer(log_path=tmp_path_factory.mktemp("adb-b") / "server.log").start()
    try:
        with DeviceFactory(server, tmp_path_factory.mktemp("vdev-b")) as factory:
            yield server, factory
    finally:
        server.stop()


def test_a_lab_of_two_hosts_benches_into_one_history(
        virtual_devices, adb_env, second_host, host_runner, pg_url, lab_bundle, tmp_path):
    server_b, factory_b = second_host
    on_a = virtual_devices.start(model="Pixel 7")
    on_b = factory_b.start(model="Pixel 7")
    lab = tmp_path / "lab.toml"
    lab.write_text(f"""
[[servers]]
name = "host-a"
address = "{adb_env.host}:{adb_env.port}"

[[servers]]
name = "host-b"
address = "{server_b.host}:{server_b.port}"
""")
    only_a, only_b = tmp_path / "lab-a.toml", tmp_path / "lab-b.toml"
    for path, server in ((only_a, adb_env), (only_b, server_b)):
        path.write_text(f'[[servers]]\nname = "host"\naddress = "{server.host}:{server.port}"\n')
    bench = ("--db", pg_url, "--repeat", "2", "--iterations", "20", "--json")
    # Host A measures a baseline; then one bench across the lab stores both hosts' runs.
    for lab_file, label in ((only_a, "base"), (lab, "lab")):
        r = run_cli("bench", lab_bundle, "--lab", lab_file, "--label", label, *bench)
        assert r.code == 0, [x.get("error") for x in r.json()["runs"]] if r.stdout else r.stderr
    h = run_cli("history", "--db", pg_url, "--label", "lab", "--json")
    assert h.code == 0, h.stderr
    runs = h.json()["runs"]
    assert {x["serial"] for x in runs} == {on_a.serial, on_b.serial}
    assert len(runs) == 4 and all(x["status"] == "pass" for x in runs)
    assert {x["host"] for x in runs} == {socket.gethostname()}
    assert len({x["session"] for x in runs}) == 1
    # Host B alone: its regress finds the baseline host A measured, by model and configuration.
    g = run_cli("regress", lab_bundle, "--lab", only_b, "--baseline", "label:base",
                "--threshold", "400", *bench)
    assert g.code in (0, 1), g.stderr
    doc = g.json()
    (c,) = [c for c in doc["comparisons"] if c["baseline"] is not None]
    assert c["serial"] == on_b.serial and c["model"] == "Pixel 7", c
    (base,) = run_cli("history", "--db", pg_url, "--label", "base", "--json").json()["runs"][:1]
    assert c["baseline"]["session"] == base["session"] and base["serial"] == on_a.serial
