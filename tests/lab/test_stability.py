"""Unstable, outliers and drift: robust flags that single outliers cannot trip, shown in every
report."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from edgepack.bench import run_bench
from edgepack.bundle import load_bundle
from edgepack.records import BenchParams
from edgepack.report import build_report, write_reports
from edgepack.stats import latency_stats, repeat_drift
from tests.conftest import run_cli
from tests.lab.conftest import FakePhone, deploy_result


@pytest.fixture(scope="module")
def bundle(lab_bundle):
    return load_bundle(lab_bundle)


def quiet_with_spikes(seed: int, n: int = 200, median: float = 5.0) -> list[float]:
    """A quiet run as phones give them: 1 % noise, and a few iterations an interrupt or a page
    fault made 2-3x slower. Its CV is high; its bulk does not move."""
    rng = np.random.default_rng(seed)
    x = median * np.exp(rng.normal(0.0, 0.01, n))
    x[rng.choice(n, n // 25, replace=False)] *= rng.uniform(2.0, 3.0, n // 25)
    return x.tolist()


def test_a_single_outlier_is_an_outlier_not_instability():
    s = latency_stats([1.0] * 199 + [10.0])
    assert s.cv == pytest.approx(0.61, abs=0.01)  # still reported: the figure people know
    assert s.spread == 0.0 and not s.unstable
    assert s.outliers == 1


def test_a_bimodal_split_is_unstable():
    s = latency_stats([1.0] * 100 + [1.25] * 100)
    assert s.cv == pytest.approx(0.111, abs=0.001)
    assert s.spread == pytest.approx(0.25 / 1.125) and s.unstable
    assert s.outliers == 0  # each mode is a half, not a few iterations


def test_quiet_runs_with_spikes_are_not_unstable():
    for seed in range(6):
        x = quiet_with_spikes(seed)
        s = latency_stats(x)
        assert 0.10 < s.cv < 0.40, s.cv  # every one of them was "unstable" by its CV
        assert s.spread < 0.03 and not s.unstable
        assert s.outliers == 8  # the spikes, every one, and nothing else


def test_a_coarse_timer_is_not_full_of_outliers():
    # Three quarters of the iterations read 1.000 ms, the rest one tick more: the IQR is ~0.
    s = latency_stats([1.0] * 150 + [1.001] * 50)
    assert s.outliers == 0 and not s.unstable


def phone_with_repeats(serial: str, medians: list[float], cv: float) -> FakePhone:
    calls = iter(range(100))

    def run(config):
        k = next(calls)
        rng = np.random.default_rng(k)
        x = medians[k % len(medians)] * np.exp(rng.normal(0.0, cv, config.iterations))
        return deploy_result(serial, x.tolist(), config=config)

    return FakePhone(serial, run=run)


def test_drift_between_repeats_is_flagged_apart(bundle, tmp_path):
    phones = [
        phone_with_repeats("drift", [10.0, 10.6, 11.4], cv=0.01),  # heating up over the bench
        phone_with_repeats("steady", [10.0, 10.0, 10.0], cv=0.04),
        # 8 % apart, but each repeat's own IQR is ~20 % of its median: noise explains it.
        phone_with_repeats("noisy", [10.0, 10.8, 10.4], cv=0.15),
    ]
    result = run_bench([bundle], [p.target() for p in phones],
                       BenchParams(repeat=3, iterations=50, probe_state=False),
                       work_dir=tmp_path / "w")
    groups = {g.serial: g for g in result.groups()}
    drift = groups["drift"].drift
    assert drift is not None and drift.repeats == 3 and drift.drifting
    assert drift.change == pytest.approx(0.14, abs=0.01) and drift.within_spread < 0.02
    assert not groups["drift"].unstable  # each repeat is quiet: the runs moved, not the samples
    assert groups["steady"].drift.change < 0.05 and not groups["steady"].drifting
    noisy = groups["noisy"].drift
    assert noisy.change > 0.05 and noisy.within_spread > noisy.change and not noisy.drifting
    assert repeat_drift([latency_stats([1.0, 1.1])]) is None  # one repeat: nothing to compare

    # Every report shows the three flags.
    data = build_report(result)
    assert data.counts["drifting"] == 1
    paths = dict(zip(("json", "junit", "md", "html"), write_reports(data, tmp_path / "r"),
                     strict=True))
    doc = json.loads(paths["json"].read_text())
    results = {r["serial"]: r for r in doc["results"]}
    assert results["drift"]["drifting"] is True and results["noisy"]["drifting"] is False
    assert results["drift"]["drift"]["change"] == pytest.approx(drift.change)
    assert set(results["drift"]["latency_ms"]) >= {"cv", "q1_ms", "q3_ms", "spread", "outliers"}
    assert doc["summary"]["drifting"] == 1
    cases = {c.get("classname"): c for c in ET.parse(paths["junit"]).iter("testcase")}
    out = cases["picture.drift"].find("system-out").text
    assert "(drifting)" in out and "IQR/median" in out and "outlier(s) above Q3 + 3 x IQR" in out
    assert "(drifting)" not in cases["picture.noisy"].find("system-out").text
    md = paths["md"].read_text()
    assert "1 drifting between repeats" in md and "| drift |" in md and "⚠️ drifting" in md
    html = paths["html"].read_text()
    assert "<span class='warn'>drifting</span>" in html and "IQR / median" in html


def test_unstable_and_outliers_show_in_the_reports(bundle, tmp_path):
    bimodal = [1.0, 1.25] * 25
    phones = [
        FakePhone("spiky", run=lambda c: deploy_result("spiky", quiet_with_spikes(1, n=50),
                                                       config=c)),
        FakePhone("bimodal", run=lambda c: deploy_result("bimodal", bimodal, config=c)),
    ]
    result = run_bench([bundle], [p.target() for p in phones],
                       BenchParams(repeat=1, iterations=50, probe_state=False),
                       work_dir=tmp_path / "w")
    data = build_report(result)
    groups = {g.serial: g for g in data.groups}
    assert groups["spiky"].stats.cv > 0.10 and not groups["spiky"].unstable
    assert groups["spiky"].stats.outliers == 2 and groups["bimodal"].unstable
    assert data.counts["unstable"] == 1
    paths = write_reports(data, tmp_path / "r")
    doc = json.loads(paths[0].read_text())
    results = {r["serial"]: r for r in doc["results"]}
    assert results["spiky"]["unstable"] is False and results["bimodal"]["unstable"] is True
    assert results["spiky"]["latency_ms"]["outliers"] == 2
    md = paths[2].read_text()
    assert "1 unstable (IQR / median > 10 %)" in md
    assert "| 22.2 % ⚠️ unstable |" in md
    cases = {c.get("classname"): c for c in ET.parse(paths[1]).iter("testcase")}
    assert "IQR/median 22.2% (unstable)" in cases["picture.bimodal"].find("system-out").text
    assert "2 outlier(s)" in cases["picture.spiky"].find("system-out").text


def test_the_bench_table_shows_the_robust_spread(lab_bundle, tmp_path):
    r = run_cli("bench", lab_bundle, "--device", "host", "--engine", "python", "--repeat", "1",
                "--iterations", "10", "--db", tmp_path / "h.db")
    assert r.code == 0, r.stderr
    assert "IQR/med" in r.stdout and "outliers" in r.stdout
