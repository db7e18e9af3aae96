"""The history store: round trip, migrations, WAL, one transaction per run, queries."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from edgepack.bench import run_bench
from edgepack.bundle import load_bundle
from edgepack.errors import EdgepackError
from edgepack.history import (
    MIGRATIONS,
    HistoryListener,
    HistoryStore,
    default_db_path,
    parse_since,
)
from edgepack.records import BenchListener, BenchParams, config_key
from edgepack.trend import bundle_trend
from tests.lab.conftest import FakePhone, deploy_result, samples


@pytest.fixture(scope="module")
def bundle(lab_bundle):
    return load_bundle(lab_bundle)


def bench_into(store, bundle, phones, tmp_path, label=None, **params):
    params = {"repeat": 2, "iterations": 20, **params}
    return run_bench([bundle], [p.target() for p in phones], BenchParams(**params),
                     [HistoryListener(store)], work_dir=tmp_path, label=label)


def test_round_trip(bundle, tmp_path):
    phones = [FakePhone("A", heat=2.5), FakePhone("B", model="Galaxy S23")]
    with HistoryStore.open(tmp_path / "h.db") as store:
        result = bench_into(store, bundle, phones, tmp_path, label="main")
        stored = store.runs(session=result.session)
    assert len(stored) == len(result.runs) == 4
    by_key = {(r.serial, r.repeat): r for r in stored}
    for run in result.runs:
        back = by_key[(run.serial, run.repeat)]
        runner = run.result.sets[0].runner
        assert back.session == result.session and back.label == "main"
        assert (back.bundle_sha256, back.bundle_name) == (bundle.sha256, bundle.name)
        assert (back.model, back.abi, back.sdk) == (run.device.model, "arm64-v8a", 34)
        assert back.config == run.config and back.config_key == run.config_key
        assert back.status == "pass" and back.error is None
        assert back.latencies_ms == run.latencies_ms
        assert back.stats == run.result.stats
        assert (back.runner_version, back.onnxruntime_version, back.engine, back.ep_used) == (
            "0.1.0", "1.32.0", "native", "cpu")
        assert (back.session_create_ms, back.first_inference_ms, back.peak_rss_kb) == (
            runner.session_create_ms, runner.first_inference_ms, runner.peak_rss_kb_end)
        assert back.state_before == run.state_before and back.state_after == run.state_after
        assert back.warnings == run.warnings
        assert back.started_at == run.started_at and back.finished_at == run.finished_at
        (v,) = back.verdicts
        assert (v.set_index, v.output, v.passed) == (0, "output", True)
        assert v.metrics is not None and v.metrics.snr_db == float("inf")
        assert v.metrics.total == 784
    assert any(w.startswith("heated") for w in by_key[("A", 0)].warnings)
    # The whole result comes back too, and with it the bench's own BenchResult.
    for run in result.runs:
        back = by_key[(run.serial, run.repeat)]
        assert back.device == run.device and back.deploy_result() == run.result
    with HistoryStore.open(tmp_path / "h.db") as store:
        again = store.bench_result(store.runs(session=result.session))
    assert again.session == result.session and again.label == "main"
    assert again.params == result.params and again.serials == result.serials
    assert [(b.name, b.sha256) for b in again.bundles] == [(b.name, b.sha256)
                                                           for b in result.bundles]
    # In the bench's own order, whichever device's run happened to end first.
    assert [replace(r, work_dir=None) for r in again.runs] == [
        replace(r, work_dir=None) for r in result.runs]
    assert again.groups() == result.groups()


def test_files_of_schema_1_are_upgraded_and_say_why_they_cannot_be_reported(bundle, tmp_path,
                                                                             monkeypatch):
    path = tmp_path / "h.db"
    monkeypatch.setattr("edgepack.history.schema.MIGRATIONS", MIGRATIONS[:1])
    with HistoryStore.open(path) as store:
        assert store.schema_version == 1
    monkeypatch.setattr("edgepack.history.schema.MIGRATIONS", MIGRATIONS)
    with HistoryStore.open(path) as store:
        assert store.schema_version == len(MIGRATIONS)
        result = bench_into(store, bundle, [FakePhone("A")], tmp_path)
        # Runs stored before the upgrade have no whole result: everything else still reads.
        store.conn.execute("UPDATE runs SET result_json = NULL")
        runs = store.runs(session=result.session)
        assert len(runs) == 2 and runs[0].stats is not None and runs[0].deploy_result() is None
        with pytest.raises(EdgepackError, match="history schema 1"):
            store.bench_result(runs)


def test_schema_2_files_get_profiled_runs_keyed_apart(bundle, tmp_path, monkeypatch):
    """Before schema 3 a profiled run's key did not say so, and regress matched it with plain
    runs; the migration adds `/profile` to the keys of runs whose config was profiled."""
    path = tmp_path / "h.db"
    monkeypatch.setattr("edgepack.history.schema.MIGRATIONS", MIGRATIONS[:2])
    with HistoryStore.open(path) as store:
        plain = bench_into(store, bundle, [FakePhone("A")], tmp_path, label="main")
        profiled = bench_into(store, bundle, [FakePhone("A")], tmp_path, profile=True)
        nnapi = bench_into(store, bundle, [FakePhone("A")], tmp_path, eps=("nnapi",),
                           profile=True)
        # The keys as an edgepack of schema 2 wrote them.
        store.conn.execute("UPDATE runs SET config_key = replace(config_key, '/profile', '')")
        assert store.schema_version == 2
    monkeypatch.setattr("edgepack.history.schema.MIGRATIONS", MIGRATIONS)
    with HistoryStore.open(path) as store:
        assert store.schema_version == len(MIGRATIONS) == 4
        keys = {(r.session, r.config_key) for r in store.runs()}
        assert keys == {(plain.session, "cpu/t1"), (profiled.session, "cpu/t1/profile"),
                        (nnapi.session, "nnapi/t1/profile")}
        assert all(r.config_key == config_key(r.config) for r in store.runs())
    with HistoryStore.open(path) as store:  # opened again: nothing is added twice
        assert {r.config_key for r in store.runs()} == {"cpu/t1", "cpu/t1/profile",
                                                        "nnapi/t1/profile"}


def test_errors_and_failures_are_stored_too(bundle, tmp_path):
    def broken(config):
        raise EdgepackError("runner failed (model_load): bad opset")

    bad = FakePhone("bad", run=broken)
    wrong = FakePhone("wrong", run=lambda c: deploy_result("wrong", samples(0, 20), passed=False))
    with HistoryStore.open(tmp_path / "h.db") as store:
        bench_into(store, bundle, [bad, wrong], tmp_path, repeat=1)
        runs = {r.serial: r for r in store.runs()}
    assert runs["bad"].status == "error" and "bad opset" in runs["bad"].error
    assert runs["bad"].latencies_ms == [] and runs["bad"].stats is None
    assert runs["wrong"].status == "fail" and runs["wrong"].verdicts[0].passed is False
    assert runs["wrong"].verdicts[0].metrics.snr_db == 3.0


def test_wal_mode_and_schema_version(tmp_path):
    with HistoryStore.open(tmp_path / "h.db") as store:
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.schema_version == len(MIGRATIONS)


def test_a_run_is_written_whole_or_not_at_all(bundle, tmp_path):
    with HistoryStore.open(tmp_path / "h.db") as store:
        listener = HistoryListener(store)
        result = run_bench([bundle], [FakePhone("A").target()],
                           BenchParams(repeat=1, iterations=5), [listener], work_dir=tmp_path)
        (run,) = result.runs
        # The same output twice in one set breaks the verdicts' primary key half-way through
        # the run's transaction: the run row written before it must go too.
        sets = run.result.sets
        broken = type(sets[0])(0, sets[0].runner, sets[0].verdicts * 2)
        bad = type(run)(**{**run.__dict__, "result": type(run.result)(
            **{**run.result.__dict__, "sets": [broken]})})
        with pytest.raises(sqlite3.IntegrityError):
            store.add_run(result.session, bad)
        assert store.conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
        assert store.conn.execute("SELECT count(*) FROM verdicts").fetchone()[0] == 1


def test_an_interrupted_bench_keeps_the_runs_that_finished(bundle, tmp_path):
    class Interrupt(BenchListener):
        seen = 0

        def on_run_end(self, run):  # noqa: ANN001, ANN201
            self.seen += 1
            if self.seen == 2:
                raise KeyboardInterrupt

    with HistoryStore.open(tmp_path / "h.db") as store:
        with pytest.raises(KeyboardInterrupt):
            run_bench([bundle], [FakePhone("A").target()], BenchParams(repeat=5, iterations=5),
                      [HistoryListener(store), Interrupt()], work_dir=tmp_path)
        assert len(store.runs()) == 2
        assert store.conn.execute("SELECT interrupted FROM sessions").fetchone()[0] == 1


def test_migrations_upgrade_old_files_and_refuse_newer_ones(tmp_path, monkeypatch):
    path = tmp_path / "h.db"
    with HistoryStore.open(path) as store:
        store.conn.execute("INSERT INTO sessions (id, started_at, params_json) "
                           "VALUES ('s1', '2025-01-01', '{}')")
    # A later edgepack adds a migration: an existing file is upgraded and keeps its rows.
    monkeypatch.setattr("edgepack.history.schema.MIGRATIONS",
                        [*MIGRATIONS, "ALTER TABLE sessions ADD COLUMN ci_job TEXT;"])
    with HistoryStore.open(path) as store:
        assert store.schema_version == len(MIGRATIONS) + 1
        assert store.conn.execute("SELECT id, ci_job FROM sessions").fetchall()[0][:] == (
            "s1", None)
    monkeypatch.setattr("edgepack.history.schema.MIGRATIONS", MIGRATIONS)
    # That file is now newer than this edgepack: refused, not misread.
    with pytest.raises(EdgepackError, match=f"history schema version {len(MIGRATIONS) + 1} is "
                                            "newer than this edgepack reads"):
        HistoryStore.open(path)


def test_a_failed_migration_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "h.db"
    HistoryStore.open(path).close()
    monkeypatch.setattr("edgepack.history.schema.MIGRATIONS",
                        [*MIGRATIONS, "ALTER TABLE sessions ADD COLUMN x TEXT;\nNOT SQL;"])
    with pytest.raises(EdgepackError, match="cannot open the history database"):
        HistoryStore.open(path)
    monkeypatch.setattr("edgepack.history.schema.MIGRATIONS", MIGRATIONS)
    with HistoryStore.open(path) as store:
        assert store.schema_version == len(MIGRATIONS)
        columns = [r[1] for r in store.conn.execute("PRAGMA table_info(sessions)")]
        assert "x" not in columns


def test_queries_filter_by_bundle_device_label_and_time(bundle, tmp_path):
    with HistoryStore.open(tmp_path / "h.db") as store:
        first = bench_into(store, bundle, [FakePhone("A"), FakePhone("B", model="Galaxy S23")],
                           tmp_path, label="main", repeat=1)
        bench_into(store, bundle, [FakePhone("A")], tmp_path, label="feature", repeat=1)
        assert len(store.runs()) == 3
        assert len(store.runs(bundle=bundle.sha256[:10])) == 3
        assert len(store.runs(bundle=bundle.name)) == 3
        assert store.runs(bundle="deadbeef") == []
        assert [r.serial for r in store.runs(device="galaxy s23")] == ["B"]
        assert len(store.runs(device="A")) == 2
        assert [r.label for r in store.runs(label="feature")] == ["feature"]
        assert store.labels() == ["feature", "main"]
        assert store.runs(since=parse_since("1h")) == store.runs()
        assert store.runs(since="2999-01-01") == []
        assert store.latest_session(bundle.sha256, "A") != first.session
        assert len(store.runs(limit=2, newest_first=True)) == 2
        (series,) = bundle_trend(store, bundle.name, {("Pixel 7", "cpu/t1")})
        assert [p.label for p in series.points] == ["main", "feature"]
        assert all(p.count == 20 for p in series.points)


def test_parse_since_and_the_default_path(monkeypatch, tmp_path):
    now = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
    assert parse_since("7d", now) == "2025-03-03T12:00:00.000+00:00"
    assert parse_since("90m", now) == "2025-03-10T10:30:00.000+00:00"
    assert parse_since("2025-03-01", now) == "2025-03-01T00:00:00.000+00:00"
    with pytest.raises(EdgepackError, match="--since 'yesterday'"):
        parse_since("yesterday", now)
    monkeypatch.setenv("EDGEPACK_DB", str(tmp_path / "x.db"))
    assert default_db_path() == tmp_path / "x.db"
    monkeypatch.delenv("EDGEPACK_DB")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_db_path() == tmp_path / "edgepack" / "history.db"
