"""Regressions: the statistics on synthetic samples, baselines, and `edgepack regress`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgepack.bench import run_bench
from edgepack.bundle import load_bundle
from edgepack.errors import EdgepackError
from edgepack.history import HistoryListener, HistoryStore
from edgepack.records import BenchParams
from edgepack.regress import compare_runs, latency_test, resolve_baseline
from tests.conftest import run_cli
from tests.lab.conftest import FakePhone, deploy_result, samples

# ---------------------------------------------------------------------------- the statistics


def runs(seed: int, n_runs: int, scale: float = 1.0, between: float = 0.015,
         n: int = 50) -> list[list[float]]:
    """Runs as a phone gives them: each run's own level (its frequency, its cache state) moves
    by `between` around the median, its iterations around that."""
    rng = np.random.default_rng(seed)
    return [samples(seed * 1000 + k, n=n, median=10.0 * scale * float(np.exp(
        rng.normal(0, between)))) for k in range(n_runs)]


def test_a_ten_percent_slowdown_is_detected():
    for seed in range(200):
        t = latency_test(runs(seed, 5), runs(10_000 + seed, 5, scale=1.10))
        assert t.regression and t.verdict == "regression", (seed, t)
        assert t.change == pytest.approx(0.10, abs=0.07)
        assert t.ci_low < t.change < t.ci_high


def test_identical_distributions_raise_almost_no_alarm():
    # 3 runs a side (bench's default --repeat), the 99 % interval (--alpha 0.01).
    alarms = sum(latency_test(runs(seed, 3), runs(50_000 + seed, 3)).regression
                 for seed in range(1000))
    assert alarms <= 10


def test_the_iterations_are_not_the_units():
    # Two runs a side, each of 5000 iterations; the runs' levels differ by 4 % within a side.
    # Pooled iterations made this overwhelmingly "significant"; over runs it is no finding.
    base = [samples(1, n=5000, median=10.0), samples(2, n=5000, median=10.4)]
    cand = [samples(3, n=5000, median=10.2), samples(4, n=5000, median=10.6)]
    t = latency_test(base, cand)
    assert t.judged and not t.slower and not t.regression
    assert t.ci_low < 0 < t.ci_high and t.verdict in ("inconclusive", "no change")


def test_the_threshold_is_a_margin_that_hides_nothing():
    # 3 % slower, runs tight: slower with confidence, the whole interval inside 5 %.
    base, cand = runs(1, 8, between=0.003), runs(2, 8, scale=1.03, between=0.003)
    t = latency_test(base, cand)
    assert t.slower and not t.regression and t.verdict == "slower, within the margin"
    assert 0 < t.ci_low and t.ci_high < 0.05
    assert latency_test(base, cand, threshold=0.02).regression
    # 30 % slower on 2 noisy runs a side: an interval too wide to call it.
    wide = latency_test(runs(3, 2, between=0.3), runs(4, 2, scale=1.3, between=0.3))
    assert not wide.regression and wide.verdict == "inconclusive"


def test_one_run_a_side_is_not_judged():
    t = latency_test([samples(1)], runs(2, 3, scale=1.5))
    assert not t.judged and not t.regression and t.verdict == "too few runs"
    # Names the side that is short and bench's --repeat that fixes it.
    assert "1 baseline and 3 candidate" in t.too_few()
    assert "bench the baseline again with --repeat 3" in t.too_few()
    assert "run the candidate" not in t.too_few()
    # alpha sets the level: 80 % is narrower than 99.9 %.
    base, cand = runs(5, 4), runs(6, 4, scale=1.02)
    loose, strict = latency_test(base, cand, alpha=0.2), latency_test(base, cand, alpha=0.001)
    assert strict.ci_low < loose.ci_low < loose.ci_high < strict.ci_high


def test_improvements_are_told_apart():
    t = latency_test(runs(3, 3), runs(4, 3, scale=0.8))
    assert t.improvement and not t.regression and t.change < -0.15
    flat = latency_test([[5.0] * 10] * 3, [[5.0] * 10] * 3)
    assert not flat.regression and flat.change == 0.0 and flat.verdict == "no change"
    with pytest.raises(ValueError):
        latency_test([], [[1.0]])


# ---------------------------------------------------------------------------- against history


@pytest.fixture(scope="module")
def bundle(lab_bundle):
    return load_bundle(lab_bundle)


def store_runs(store, bundle, tmp_path, phones, label=None, **params):
    params = {"repeat": 2, "iterations": 40, "probe_state": False, **params}
    return run_bench([bundle], [p.target() for p in phones], BenchParams(**params),
                     [HistoryListener(store)], work_dir=tmp_path, label=label)


def phone(serial, seed, scale=1.0, model="Pixel 7", passed=True):
    counter = iter(range(100))
    return FakePhone(serial, model=model, run=lambda config: deploy_result(
        serial, [x * scale for x in samples(seed * 100 + next(counter), config.iterations)],
        model=model, passed=passed, config=config))


def test_slower_and_wrong_candidates_regress_against_a_label(bundle, tmp_path):
    with HistoryStore.open(tmp_path / "h.db") as store:
        store_runs(store, bundle, tmp_path, [phone("A", 1), phone("G", 2, model="Galaxy")],
                   label="main")
        same = store_runs(store, bundle, tmp_path, [phone("A", 3)])
        slow = store_runs(store, bundle, tmp_path, [phone("A", 4, scale=1.12)])
        wrong = store_runs(store, bundle, tmp_path, [phone("A", 5, passed=False)])
        other = store_runs(store, bundle, tmp_path, [phone("Z", 6, model="Moto G")])
        main = resolve_baseline(store, "label:main")

        def compare(result):
            return compare_runs(store, store.runs(session=result.session), main)

        ok = compare(same)
        assert ok.regressions == [] and ok.compared == 1
        (c,) = ok.comparisons
        assert c.baseline is not None and c.baseline.label == "main"
        assert c.baseline.samples == 80  # both repeats pooled; the Galaxy's runs are not used

        (r,) = compare(slow).regressions
        assert r.latency is not None and r.latency.regression
        assert r.latency.change == pytest.approx(0.12, abs=0.03) and r.accuracy == []
        assert "REGRESSION" in r.summary()

        (w,) = compare(wrong).regressions
        assert [(a.set_index, a.output) for a in w.accuracy] == [(0, "output")]
        assert not w.latency.regression

        none = compare(other)
        assert none.compared == 0
        assert none.comparisons[0].note == "no baseline runs for Moto G cpu/t1"


def test_a_failure_that_was_there_before_is_not_a_regression(bundle, tmp_path):
    with HistoryStore.open(tmp_path / "h.db") as store:
        store_runs(store, bundle, tmp_path, [phone("A", 1, passed=False)], label="main")
        again = store_runs(store, bundle, tmp_path, [phone("A", 2, passed=False)])
        report = compare_runs(store, store.runs(session=again.session),
                              resolve_baseline(store, "main"))
        assert report.compared == 1 and report.regressions == []


def test_baselines_match_by_model_and_previous_excludes_the_candidate(bundle, tmp_path):
    with HistoryStore.open(tmp_path / "h.db") as store:
        older = store_runs(store, bundle, tmp_path, [phone("A-1", 1)])
        newer = store_runs(store, bundle, tmp_path, [phone("A-2", 2, scale=1.2)])
        report = compare_runs(store, store.runs(session=newer.session),
                              resolve_baseline(store, "previous"))
        (c,) = report.comparisons
        # Another phone of the same model is a fine baseline: the lab's phones come and go.
        assert c.baseline is not None and c.baseline.session == older.session
        assert c.regressed
        first = compare_runs(store, store.runs(session=older.session),
                             resolve_baseline(store, "previous"))
        assert first.compared == 0  # nothing ran before it; itself is never its baseline


def test_a_profiled_session_is_compared_only_with_profiled_runs(bundle, tmp_path):
    # Profiling slows every iteration (shufflenet +31 %): against plain runs it would read as
    # a regression.
    with HistoryStore.open(tmp_path / "h.db") as store:
        store_runs(store, bundle, tmp_path, [phone("A", 1)], label="main")
        profiled = store_runs(store, bundle, tmp_path, [phone("A", 2, scale=1.3)],
                              label="pr", profile=True)
        report = compare_runs(store, store.runs(session=profiled.session),
                              resolve_baseline(store, "previous"))
        (c,) = report.comparisons
        assert c.config_key == "cpu/t1/profile" and not c.regressed
        assert report.compared == 0 and "profiled runs are compared only with profiled" in c.note
        again = store_runs(store, bundle, tmp_path, [phone("A", 3, scale=1.3)], profile=True)
        report = compare_runs(store, store.runs(session=again.session),
                              resolve_baseline(store, "previous"))
        (c,) = report.comparisons
        assert c.baseline is not None and c.baseline.session == profiled.session
        assert not c.regressed


def test_baseline_references(bundle, lab_bundle, tmp_path):
    with HistoryStore.open(tmp_path / "h.db") as store:
        with pytest.raises(EdgepackError, match="no session is labelled 'main'"):
            resolve_baseline(store, "label:main")
        store_runs(store, bundle, tmp_path, [phone("A", 1)], label="main")
        assert resolve_baseline(store, "previous").kind == "previous"
        assert resolve_baseline(store, "main").value == "main"
        by_sha = resolve_baseline(store, bundle.sha256[:8])
        assert (by_sha.kind, by_sha.value) == ("bundle", bundle.sha256)
        assert resolve_baseline(store, f"sha256:{bundle.sha256[:12]}").value == bundle.sha256
        assert resolve_baseline(store, str(lab_bundle)).value == bundle.sha256
        with pytest.raises(EdgepackError, match="no stored bundle's sha256 starts with 0000"):
            resolve_baseline(store, "sha256:000000")
        with pytest.raises(EdgepackError, match="6 to 64 hex digits"):
            resolve_baseline(store, "sha256:xyz")
        with pytest.raises(EdgepackError) as err:
            resolve_baseline(store, "nightly")
        assert "labels in" in err.value.message and "main" in err.value.message


# ---------------------------------------------------------------------------- the command


def test_regress_from_history_exits_1_on_a_regression(bundle, lab_bundle, tmp_path):
    db = tmp_path / "h.db"
    with HistoryStore.open(db) as store:
        store_runs(store, bundle, tmp_path, [phone("A", 1)], label="main")
        store_runs(store, bundle, tmp_path, [phone("A", 2, scale=1.15)], label="pr-7")
    r = run_cli("regress", lab_bundle, "--baseline", "label:main", "--from-history",
                "--db", db, "--json")
    assert r.code == 1, r.stderr
    doc = r.json()
    assert doc["regressions"] == 1 and doc["baseline"]["kind"] == "label"
    (c,) = doc["comparisons"]
    assert c["regressed"] and c["latency"]["regression"] and c["serial"] == "A"
    human = run_cli("regress", lab_bundle, "--baseline", "label:main", "--from-history",
                    "--db", db, "--threshold", "20")
    assert human.code == 0, human.stderr
    assert "no regression in 1 comparison(s)" in human.stdout
    # The interval is printed, at the level --alpha sets.
    assert "99% interval" in human.stdout and "(99 %)" in human.stdout
    missing = run_cli("regress", lab_bundle, "--baseline", "label:nope", "--from-history",
                      "--db", db)
    assert missing.code == 2 and "no session is labelled 'nope'" in missing.stderr


def test_regress_refuses_to_judge_latency_on_too_few_runs(bundle, lab_bundle, tmp_path):
    import xml.etree.ElementTree as ET

    db = tmp_path / "h.db"
    with HistoryStore.open(db) as store:
        store_runs(store, bundle, tmp_path, [phone("A", 1)], label="main", repeat=1,
                   iterations=400)
        store_runs(store, bundle, tmp_path, [phone("A", 2, scale=1.5)], label="pr", repeat=1,
                   iterations=400)
    args = ["regress", lab_bundle, "--baseline", "label:main", "--from-history", "--db", db]
    r = run_cli(*args, "--json", "--report-dir", tmp_path / "rep")
    assert r.code == 2, r.stderr
    assert "latency not judged in 1 of 1 comparison(s): too few runs to judge" in r.stderr
    doc = r.json()
    assert doc["regressions"] == 0 and doc["unjudged"] == 1 and doc["compared"] == 1
    (c,) = doc["comparisons"]
    assert c["unjudged"] and not c["regressed"]
    assert c["latency"]["verdict"] == "too few runs" and c["latency"]["judged"] is False
    assert (c["latency"]["runs_baseline"], c["latency"]["runs_candidate"]) == (1, 1)
    # What to do, on each side that is short.
    assert ("bench the baseline again with --repeat 3 (the default) and run the candidate "
            "with --repeat 3" in c["latency"]["reason"]), c["latency"]["reason"]
    human = run_cli(*args)
    assert human.code == 2
    assert "NOT JUDGED" in human.stdout and "no regression in" not in human.stdout
    assert "latency was NOT JUDGED in 1 of them (too few runs)" in human.stdout
    # The reports say it too: junit skips the case instead of passing it.
    case = next(ET.parse(tmp_path / "rep" / "junit.xml").iter("testcase"))
    skipped = case.find("skipped")
    assert skipped is not None and "too few runs" in skipped.get("message")
    assert skipped.get("type") == "too-few-runs"
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "NOT JUDGED: too few runs" in md and "(too few runs)" in md
    assert "too few samples" not in md
    assert ET.parse(tmp_path / "rep" / "junit.xml").getroot().get("skipped") == "1"
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["summary"]["unjudged"] == 1 and report["summary"]["passed"] == 0
    assert report["results"][0]["outcome"] == "unjudged"
    assert "NOT JUDGED" in (tmp_path / "rep" / "report.md").read_text()
    assert "NOT JUDGED" in (tmp_path / "rep" / "report.html").read_text()
    # However many iterations a run has, and whatever --alpha: one run is one unit.
    assert run_cli(*args, "--alpha", "0.2").code == 2


def test_regress_from_history_writes_the_reports_its_bench_wrote(lab_bundle, tmp_path):
    """A CI job that benches in one step and judges in another gets the same reports from the
    store as the bench wrote, plus the regression verdict."""
    import sqlite3
    import xml.etree.ElementTree as ET

    db = tmp_path / "h.db"
    bench = ["bench", lab_bundle, "--device", "host", "--engine", "python", "--repeat", "2",
             "--iterations", "15", "--db", db]
    assert run_cli(*bench, "--label", "base").code == 0
    live = run_cli(*bench, "--threads", "1,2", "--label", "pr", "--report-dir",
                   tmp_path / "live")
    assert live.code == 0, live.stderr
    r = run_cli("regress", lab_bundle, "--baseline", "label:base", "--from-history",
                "--device", "host", "--threshold", "400", "--db", db,
                "--report-dir", tmp_path / "stored")
    assert r.code == 0, r.stderr
    assert "from history" in r.stderr

    def comparable(doc):
        # Times of the whole session (the bench's own clock against stored timestamps) and
        # the regression verdict, which only the regress report has, are expected to differ.
        doc = {k: v for k, v in doc.items()
               if k not in ("generated_at", "wall_s", "regression")}
        doc["results"] = [{k: v for k, v in g.items() if k != "regression"}
                          for g in doc["results"]]
        return doc

    stored = json.loads((tmp_path / "stored" / "report.json").read_text())
    written = json.loads((tmp_path / "live" / "report.json").read_text())
    assert comparable(stored) == comparable(written)
    assert stored["regression"]["compared"] == 1  # threads=2 has no baseline
    cases = [sorted(c.get("name") for c in ET.parse(tmp_path / d / "junit.xml").iter("testcase"))
             for d in ("live", "stored")]
    assert cases[0] == cases[1] and len(cases[0]) == 2
    assert (tmp_path / "stored" / "report.html").stat().st_size > 1000

    # Runs stored by an edgepack that kept no whole results still compare, but say why they
    # have no reports.
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE runs SET result_json = NULL")
    again = run_cli("regress", lab_bundle, "--baseline", "label:base", "--from-history",
                    "--device", "host", "--threshold", "400", "--db", db, "--report-dir",
                    tmp_path / "old")
    assert again.code == 2 and "history schema 1" in again.stderr
    assert run_cli("regress", lab_bundle, "--baseline", "label:base", "--from-history",
                   "--device", "host", "--threshold", "400", "--db", db).code == 0


def test_regress_runs_on_the_host_and_writes_reports(lab_bundle, tmp_path):
    db = tmp_path / "h.db"
    # Two runs a side: the fewest an interval over runs can be made from.
    base = run_cli("bench", lab_bundle, "--device", "host", "--engine", "python", "--repeat",
                   "2", "--iterations", "30", "--db", db, "--label", "base", "--json")
    assert base.code == 0, base.stderr
    # A generous threshold: this checks the plumbing, not this machine's timing noise.
    r = run_cli("regress", lab_bundle, "--baseline", "label:base", "--device", "host",
                "--engine", "python", "--repeat", "2", "--iterations", "30", "--threshold",
                "400", "--db", db, "--report-dir", tmp_path / "rep", "--json")
    assert r.code == 0, r.stderr
    doc = r.json()
    assert doc["regressions"] == 0 and doc["comparisons"][0]["baseline"]["label"] == "base"
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["regression"]["compared"] == 1
    assert report["results"][0]["regression"]["regressed"] is False
    nothing = run_cli("regress", lab_bundle, "--baseline", "previous", "--device", "host",
                      "--engine", "python", "--repeat", "1", "--iterations", "5",
                      "--db", tmp_path / "empty.db")
    assert nothing.code == 2 and "has no runs for" in nothing.stderr
