"""Regressions: the statistics on synthetic samples, baselines, and `edgepack regress`."""

from __future__ import annotations

import numpy as np
import pytest

from edgepack.bench import BenchParams, run_bench
from edgepack.bundle import load_bundle
from edgepack.errors import EdgepackError
from edgepack.history import HistoryListener, HistoryStore
from edgepack.regress import compare_runs, latency_test, resolve_baseline
from tests.conftest import run_cli
from tests.lab.conftest import FakePhone, deploy_result, samples

# ---------------------------------------------------------------------------- the statistics


def test_a_ten_percent_slowdown_is_detected():
    detected = 0
    for seed in range(200):
        base = samples(seed, n=50)
        slow = [x * 1.10 for x in samples(10_000 + seed, n=50)]
        t = latency_test(base, slow)
        detected += t.regression
        assert t.change == pytest.approx(0.10, abs=0.04)
    assert detected == 200


def test_identical_distributions_raise_no_alarm():
    alarms = sum(latency_test(samples(seed, n=50), samples(50_000 + seed, n=50)).regression
                 for seed in range(1000))
    assert alarms == 0


def test_both_the_threshold_and_the_test_must_agree():
    # 3 % slower on 2000 samples: significant, but below the 5 % that matters.
    base, cand = samples(1, n=2000), [x * 1.03 for x in samples(2, n=2000)]
    t = latency_test(base, cand)
    assert t.p_value < 1e-6 and not t.regression
    assert latency_test(base, cand, threshold=0.02).regression
    # 30 % slower on 3 noisy samples each: above the threshold, not significant.
    rng = np.random.default_rng(0)
    few = latency_test([10.0, 14.0, 8.0], list(rng.normal(13.0, 3.0, 3)))
    assert few.change > 0.05 and few.p_value >= 0.01 and not few.regression


def test_improvements_are_told_apart():
    t = latency_test(samples(3), [x * 0.8 for x in samples(4)])
    assert t.improvement and not t.regression and t.change < -0.15
    flat = latency_test([5.0] * 10, [5.0] * 10)
    assert flat.p_value == 1.0 and not flat.regression and flat.change == 0.0
    with pytest.raises(ValueError):
        latency_test([], [1.0])


# ---------------------------------------------------------------------------- against history


@pytest.fixture(scope="module")
def bundle(lab_bundle):
    return load_bundle(lab_bundle)


def store_runs(store, bundle, tmp_path, phones, label=None):
    return run_bench([bundle], [p.target() for p in phones],
                     BenchParams(repeat=2, iterations=40, probe_state=False),
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
    missing = run_cli("regress", lab_bundle, "--baseline", "label:nope", "--from-history",
                      "--db", db)
    assert missing.code == 2 and "no session is labelled 'nope'" in missing.stderr


def test_regress_from_history_writes_the_reports_its_bench_wrote(lab_bundle, tmp_path):
    """A CI job that benches in one step and judges in another gets the same reports from the
    store as the bench wrote, plus the regression verdict."""
    import json
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
    base = run_cli("bench", lab_bundle, "--device", "host", "--engine", "python", "--repeat",
                   "1", "--iterations", "30", "--db", db, "--label", "base", "--json")
    assert base.code == 0, base.stderr
    # A generous threshold: this checks the plumbing, not this machine's timing noise.
    r = run_cli("regress", lab_bundle, "--baseline", "label:base", "--device", "host",
                "--engine", "python", "--repeat", "1", "--iterations", "30", "--threshold",
                "400", "--db", db, "--report-dir", tmp_path / "rep", "--json")
    assert r.code == 0, r.stderr
    doc = r.json()
    assert doc["regressions"] == 0 and doc["comparisons"][0]["baseline"]["label"] == "base"
    import json

    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["regression"]["compared"] == 1
    assert report["results"][0]["regression"]["regressed"] is False
    nothing = run_cli("regress", lab_bundle, "--baseline", "previous", "--device", "host",
                      "--engine", "python", "--repeat", "1", "--iterations", "5",
                      "--db", tmp_path / "empty.db")
    assert nothing.code == 2 and "has no runs for" in nothing.stderr
