"""What `ab` keeps in the history beside its runs: the cooldown waited before each, and whether
`--cooldown auto` gave up (a stored run is judged as its session judged it); and the help that
says which --max-seconds caps what."""

from __future__ import annotations

from dataclasses import replace

from edgepack.history import HistoryListener, HistoryStore
from edgepack.validity import judge_stored
from tests.conftest import run_cli
from tests.lab.test_ab import pack_chain


def test_the_cooldown_wait_is_stored_and_shown(host_runner, tmp_path):
    bundle = pack_chain(tmp_path, "tiny", 2)
    db = tmp_path / "h.db"
    reports = tmp_path / "r"
    r = run_cli("ab", bundle, bundle, "--device", "host", "--iterations", "5", "--min-rounds",
                "2", "--max-rounds", "2", "--cooldown", "0.2", "--db", db,
                "--report-dir", reports)
    assert r.code == 0, r.stderr
    assert "cooldown 0.2 s: waited 0.6 s in all" in r.stdout, r.stdout
    assert "cooldown s" in (reports / "ab.html").read_text()
    runs = run_cli("history", "--db", db, "--json").json()["runs"]
    assert [x["cooldown_waited_s"] for x in runs] == [0.0, 0.2, 0.2, 0.2]
    assert not any(x["cooldown_cut"] for x in runs)


def test_a_stored_run_whose_cooldown_was_cut_short_stays_semivalid(host_runner, tmp_path):
    from edgepack.ab import AbParams, run_ab
    from edgepack.bench import host_target
    from edgepack.bundle import load_bundle
    from edgepack.records import BenchListener, BenchParams

    bundle = load_bundle(pack_chain(tmp_path, "tiny", 2))
    bench = BenchParams(repeat=1, iterations=5)
    kept: list = []

    class Keep(BenchListener):
        def on_run_end(self, run) -> None:  # noqa: ANN001
            kept.append(run)

    run_ab(bundle, bundle, host_target("native"), bench.configs(None)[0], bench,
           AbParams(min_rounds=2, max_rounds=2), work_dir=tmp_path / "w", listeners=[Keep()])
    with HistoryStore.open(tmp_path / "h.db") as store:
        listener = HistoryListener(store)
        from edgepack.records import BenchPlan

        listener.on_start(BenchPlan("s1", None, bench, [], ["host"], {"host": 1},
                                    kept[0].started_at))
        # As a run after `--cooldown auto` gave up on a hot phone (120 s) is recorded.
        listener.on_run_end(replace(kept[1], cooldown_waited_s=120.0, cooldown_cut=True))
        (stored,) = store.runs(session="s1")
    assert stored.cooldown_waited_s == 120.0 and stored.cooldown_cut
    verdict = judge_stored(stored)
    assert verdict.verdict.value == "semivalid", verdict
    assert any("cooldown cut short after 120 s" in x for x in verdict.reasons)


def test_each_max_seconds_says_what_it_caps():
    ab = run_cli("ab", "--help").stdout
    bench = run_cli("bench", "--help").stdout
    flat_ab, flat_bench = " ".join(ab.split()), " ".join(bench.split())
    assert "The whole session's limit" in flat_ab and "--max-session-seconds" in flat_ab
    assert "--max-run-seconds" in flat_ab and "MLPerf's max duration" in flat_ab
    assert "one runner invocation" in flat_bench and "not the session" in flat_bench
    assert "--max-run-seconds" in flat_bench


def test_auto_iterations_size_the_rounds_after_the_first(host_runner, tmp_path):
    bundle = pack_chain(tmp_path, "tiny", 2)
    db = tmp_path / "h.db"
    r = run_cli("ab", bundle, bundle, "--device", "host", "--min-rounds", "3", "--max-rounds",
                "3", "--db", db, "--json")
    assert r.code == 0, r.stderr
    doc = r.json()
    assert doc["iterations_auto"] is True and 10 <= doc["iterations_per_run"] <= 50
    runs = run_cli("history", "--db", db, "--json").json()["runs"]
    counts = [len(x["latencies_ms"]) for x in runs]
    assert counts[:2] == [30, 30] and set(counts[2:]) == {doc["iterations_per_run"]}, counts
