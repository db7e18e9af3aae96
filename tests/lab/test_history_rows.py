"""The one mapping between a run and its rows: every field back as it went in, through a real
SQLite file; and a file written by the edgepack before the store was split still reads."""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import sqlite3
from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import Any

import pytest

from edgepack.compare import Metrics
from edgepack.devices.base import DeviceInfo
from edgepack.devices.state import CpuFreq, DeviceState
from edgepack.history import HistoryRun, HistoryStore, StoredVerdict
from edgepack.history.rows import run_from_row, run_row, verdict_rows
from edgepack.profile import OpTime
from edgepack.records import BenchParams, BenchPlan, BenchRun, BundleRef, RunStatus, config_key
from edgepack.runner.result import RunConfig
from edgepack.stats import latency_stats
from tests.lab.conftest import deploy_result

INF, NAN = math.inf, math.nan
SHA = "cd" * 32
SCHEMA_3 = Path(__file__).parent / "data" / "history_schema3.sql"
# An infinite latency makes numpy's std NaN, as it should: no warning needed.
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")


def canon(x: Any) -> Any:
    """A value with its types spelled out and NaN equal to NaN, which == on records cannot
    give: nan != nan, and RunStatus.PASS == "pass" while the float NaN and the string "nan"
    print alike."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return (type(x).__name__,
                tuple((f.name, canon(getattr(x, f.name))) for f in dataclasses.fields(x)))
    if isinstance(x, Enum):
        return (type(x).__name__, x.value)
    if isinstance(x, float):
        return ("float", "nan" if math.isnan(x) else x)
    if isinstance(x, dict):
        return ("dict", tuple(sorted((k, canon(v)) for k, v in x.items())))
    if isinstance(x, (list, tuple)):
        return (type(x).__name__, tuple(canon(v) for v in x))
    return (type(x).__name__, x)


def odd_run() -> BenchRun:
    """A run with None, NaN and infinities wherever a record allows them."""
    config = RunConfig(iterations=4, threads=2, ep="xnnpack", cpu_affinity="f0", profile=True)
    result = deploy_result("A", [1.5, INF, 2.0, 1.0], config=config, passed=False,
                           bundle=("odd", SHA))
    runner = replace(result.sets[0].runner, session_create_ms=NAN, first_inference_ms=INF,
                     peak_rss_kb_end=None, ep_used="cpu")
    verdict = result.sets[0].verdicts[0]
    metrics = Metrics(max_abs_error=NAN, max_rel_error=INF, mean_abs_error=None,
                      cosine_similarity=None, snr_db=-INF, mismatched=3, total=4,
                      top1_agreement=0.5, top5_agreement=None, compared=2)
    second = replace(verdict, name="logits", passed=True, reason="within tolerance",
                     metrics=None)
    result = replace(result, sets=[replace(result.sets[0], runner=runner,
                                           verdicts=[replace(verdict, metrics=metrics), second])],
                     stats=latency_stats(runner.latencies_ms), notes=["a note"])
    device = DeviceInfo("A", "android", "device", model="Pixel 7", abis=["arm64-v8a", "armeabi"],
                        sdk=None, release="14", free_bytes=2**40, virtual=True)
    state = DeviceState("2025-03-01T10:00:00.500+00:00", battery_level=None, battery_temp_c=NAN,
                        thermal_status=3, temps_c={"cpu0": INF, "gpu": 40.0},
                        cpus=[CpuFreq("cpu0", None, None, 2_400_000, None)])
    return BenchRun(
        serial="A", bundle_name="odd", bundle_sha256=SHA, config=config,
        config_key=config_key(config), repeat=1, status=RunStatus.FAIL,
        started_at="2025-03-01T10:00:01.000+00:00", finished_at="2025-03-01T10:00:02.000+00:00",
        device=replace(result.device, **dataclasses.asdict(device)), result=result, error=None,
        state_before=state, state_after=None,
        warnings=["heated 2.5 C", "it's \"quoted\"\nand two lines"],
        profile=[OpTime("Conv", "XnnpackExecutionProvider", 8, NAN, INF, 4)],
        work_dir="/tmp/not-stored",
    )


def error_run() -> BenchRun:
    """A run that never ran: no device, no result, nothing measured."""
    config = RunConfig()
    return BenchRun("gone", "odd", SHA, config, config_key(config), 0, RunStatus.ERROR,
                    "2025-03-01T10:00:03.000+00:00", "2025-03-01T10:00:03.000+00:00",
                    error="not run: it's gone")


def store_runs(path: Path | str, runs: list[BenchRun]) -> list[int]:
    with HistoryStore.open(path) as store:
        store.begin_session(BenchPlan("s1", "main", BenchParams(), [BundleRef("odd", SHA, "")],
                                      ["A", "gone"], {"A": 1, "gone": 1},
                                      "2025-03-01T10:00:00.000+00:00"))
        return [store.add_run("s1", run) for run in runs]


def test_every_field_of_a_run_comes_back_from_the_store(tmp_path):
    check_every_field(tmp_path / "h.db")


def check_every_field(where: Path | str) -> None:
    """Every field through the store at `where` (test_history_postgres: PostgreSQL's too)."""
    run = odd_run()
    (run_id,) = store_runs(where, [run])
    with HistoryStore.open(where) as store:
        (back,) = store.runs()
    result = run.result
    runner = result.sets[0].runner
    good, other = result.sets[0].verdicts
    expected = HistoryRun(
        id=run_id, session="s1", label="main", bundle_sha256=SHA, bundle_name="odd", serial="A",
        model="Pixel 7", abi="arm64-v8a", sdk=None, config_key="xnnpack/t2/cpu=f0/profile",
        config=run.config, repeat=1, status=RunStatus.FAIL, error=None, engine="native",
        runner_version="0.1.0", onnxruntime_version="1.32.0", ep_used="cpu",
        started_at=run.started_at, finished_at=run.finished_at,
        latencies_ms=[1.5, INF, 2.0, 1.0], stats=latency_stats([1.5, INF, 2.0, 1.0]),
        session_create_ms=NAN, first_inference_ms=INF, peak_rss_kb=None,
        state_before=run.state_before, state_after=None, warnings=run.warnings,
        profile=run.profile,
        verdicts=[
            # `compared` has no column: it reads back as not known.
            StoredVerdict(0, "output", False, good.reason, replace(good.metrics, compared=None)),
            StoredVerdict(0, "logits", True, "within tolerance", None),
        ],
        device=run.device,
        host=platform.node(),
    )
    assert canon(replace(back, result_json=None)) == canon(expected)
    assert back.status is RunStatus.FAIL
    assert math.isnan(runner.session_create_ms) and other.metrics is None
    # The whole record comes back too, as the bench made it, but for where its outputs were
    # kept.
    assert canon(back.deploy_result()) == canon(result)
    assert canon(back.bench_run()) == canon(replace(run, work_dir=None))


def test_a_run_that_never_ran_comes_back_with_its_nones(tmp_path):
    check_never_ran(tmp_path / "h.db")


def check_never_ran(where: Path | str) -> None:
    run = error_run()
    store_runs(where, [run])
    with HistoryStore.open(where) as store:
        (back,) = store.runs()
    assert back.status is RunStatus.ERROR and back.error == "not run: it's gone"
    assert (back.model, back.abi, back.sdk, back.device, back.device_model) == (
        None, None, None, None, "gone")
    assert (back.engine, back.runner_version, back.onnxruntime_version, back.ep_used) == (
        None, None, None, None)
    assert (back.latencies_ms, back.stats, back.verdicts, back.warnings, back.profile) == (
        [], None, [], [], [])
    assert (back.session_create_ms, back.first_inference_ms, back.peak_rss_kb) == (
        None, None, None)
    assert back.state_before is None and back.state_after is None
    assert back.result_json is None and back.deploy_result() is None
    assert canon(back.bench_run()) == canon(run)


def test_sql_readers_see_valid_json_and_every_value(tmp_path):
    """The columns are for SQL readers too: JSON they can query, NaN not turned into NULL."""
    store_runs(tmp_path / "h.db", [odd_run()])
    conn = sqlite3.connect(tmp_path / "h.db")
    json_columns = [c for (c,) in conn.execute("SELECT name FROM pragma_table_info('runs')")
                    if c.endswith("_json")]
    valid = {c: conn.execute(f"SELECT json_valid({c}) FROM runs WHERE {c} NOT NULL").fetchall()
             for c in json_columns}
    assert valid == {c: [] if c == "state_after_json" else [(1,)] for c in json_columns}
    assert conn.execute("SELECT json_extract(latencies_json, '$[1]'), session_create_ms, "
                        "first_inference_ms FROM runs").fetchone() == ("inf", "nan", "inf")
    assert conn.execute("SELECT max_abs_error, max_rel_error, snr_db FROM verdicts "
                        "WHERE output = 'output'").fetchone() == ("nan", "inf", "-inf")


def test_a_row_names_every_column_once(tmp_path):
    """The INSERT is built from the mapping's keys: they are the tables' columns, all of them."""
    with HistoryStore.open(tmp_path / "h.db") as store:
        def columns(table: str) -> set[str]:
            return {r[1] for r in store.conn.execute(f"PRAGMA table_info({table})")}

        # A run after a cooldown that gave up: the cooldown columns (schema 4) are written
        # only when there was a wait.
        run = replace(odd_run(), cooldown_waited_s=120.0, cooldown_cut=True)
        row = run_row("s1", run)
        assert set(row) == columns("runs") - {"id"}  # the database numbers runs
        (first, second) = verdict_rows(7, run)
        assert set(first) == set(second) == columns("verdicts")
        assert verdict_rows(7, error_run()) == []
    # The mapping alone, no database: a row read back is the run that made it.
    back = run_from_row({**row, "id": 7, "label": None})
    assert canon(back.bench_run()) == canon(replace(run, work_dir=None))
    assert json.loads(row["latencies_json"]) == [1.5, "inf", 2.0, 1.0]


def test_a_file_written_before_the_split_reads_and_keeps_its_schema(tmp_path):
    """tests/lab/data/history_schema3.sql is a file the edgepack of commit b428277 wrote."""
    old = tmp_path / "old.db"
    conn = sqlite3.connect(old)
    conn.executescript(SCHEMA_3.read_text())
    conn.close()
    with HistoryStore.open(old) as store:
        assert store.schema_version == 4  # schema 4 added two columns, NULL in old rows
        runs = store.runs(session="0123456789ab")
        assert all(r.cooldown_waited_s == 0.0 and not r.cooldown_cut for r in runs)
        assert [(r.serial, r.repeat, r.status) for r in runs] == [
            ("A", 0, RunStatus.PASS), ("B", 0, RunStatus.FAIL), ("A", 1, RunStatus.PASS),
            ("B", 1, RunStatus.ERROR)]
        a0, b0, a1, b1 = runs
        assert a0.latencies_ms == [10.0, 11.0, 10.5, 12.0, 10.25]
        assert a0.stats is not None and a0.stats.median_ms == 10.5
        assert a0.state_before is not None and a0.state_before.cpus[0].max_khz == 2_400_000
        assert a0.profile == [OpTime("Conv", "CPUExecutionProvider", 10, 4.5, 0.75, 5)]
        assert a0.verdicts[0].metrics is not None and a0.verdicts[0].metrics.snr_db == INF
        assert b0.verdicts[0].passed is False and b0.verdicts[0].metrics.snr_db == 3.0
        assert b1.error == "not run: device lost" and b1.model == "Galaxy S23"
        assert a0.deploy_result() is not None and a0.deploy_result().sets[0].passed
        again = store.bench_result(runs)
        assert again.serials == ["A", "B"] and [b.path for b in again.bundles] == ["/lab/picture"]
        assert [(r.serial, r.repeat) for r in again.runs] == [("A", 0), ("A", 1), ("B", 0),
                                                              ("B", 1)]
        assert again.params == BenchParams(repeat=2, iterations=5)
        assert (again.started_at, again.finished_at) == ("2025-03-01T10:00:00.000+00:00",
                                                         "2025-03-01T10:00:06.000+00:00")
        # A run added now sits beside them.
        store.add_run("0123456789ab", odd_run())
        assert len(store.runs()) == 5
    with HistoryStore.open(tmp_path / "new.db"):
        pass

    def schema(path: Path) -> list[tuple[str, ...]]:
        with sqlite3.connect(path) as c:
            return c.execute("SELECT type, name, tbl_name, sql FROM sqlite_master "
                             "ORDER BY type, name").fetchall()

    assert schema(tmp_path / "new.db") == schema(old)


@pytest.mark.parametrize("prefix", ["CDCD", "cdcd"])
def test_bundles_match_a_prefix_in_any_case(tmp_path, prefix):
    store_runs(tmp_path / "h.db", [error_run()])
    with HistoryStore.open(tmp_path / "h.db") as store:
        assert store.bundles_matching(prefix) == [(SHA, "odd")]
        assert store.bundles_matching("ab") == []
