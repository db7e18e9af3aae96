"""Validity: valid, semivalid or invalid with every reason, per run; and regress leaves invalid
runs out."""

from __future__ import annotations

from dataclasses import replace

import pytest

from edgepack.bench import run_bench
from edgepack.bundle import load_bundle
from edgepack.devices.state import parse_state
from edgepack.errors import EdgepackError
from edgepack.history import HistoryListener, HistoryStore
from edgepack.records import BenchParams
from edgepack.regress import compare_runs, resolve_baseline
from edgepack.runner.result import RunConfig
from edgepack.validity import ValidityRules, Verdict, judge, of_runs
from tests.lab.conftest import DUMPSYS, FakePhone, deploy_result, samples


def runner(latencies, ep="cpu", used=None):  # noqa: ANN001, ANN201
    r = deploy_result("A", latencies, config=RunConfig(ep=ep)).sets[0].runner
    return replace(r, ep_used=used or ep)


def state(status=0, level=80, max_khz=2400000):  # noqa: ANN001, ANN201
    return parse_state(DUMPSYS.format(level=level, battery=300, status=status, cpu=40.0,
                                      max_khz=max_khz))


def test_a_quiet_run_is_valid():
    v = judge(runner(samples(1)), ValidityRules(), state(), state())
    assert v.verdict is Verdict.VALID and v.reasons == []


def test_minimums_and_a_fallen_back_provider_make_a_run_invalid():
    rules = ValidityRules(min_iterations=100, min_seconds=2.0)
    v = judge(runner(samples(1, n=50), ep="xnnpack", used="cpu"), rules)
    assert v.verdict is Verdict.INVALID and not v.usable
    text = "; ".join(v.reasons)
    assert "50 iterations, fewer than the minimum 100" in text
    assert "less than the minimum 2 s" in text  # 50 x 10 ms = 0.5 s
    assert "fell back from xnnpack to cpu" in text


def test_conditions_that_moved_make_a_run_semivalid_with_every_reason():
    noisy = samples(2, cv=0.6)
    v = judge(runner(noisy), ValidityRules(max_seconds=1.0), state(status=0, level=10),
              state(status=2, level=10, max_khz=1200000), wall_s=3.0, cooldown_cut_s=120)
    assert v.verdict is Verdict.SEMIVALID and v.usable
    text = "; ".join(v.reasons)
    for words in ("thermal status changed 0 -> 2", "cpu0 max 2400->1200 MHz", "battery 10 %",
                  "CV ", "past the 1 s cap", "cooldown cut short after 120 s"):
        assert words in text, (words, text)


def test_bad_rules_are_refused():
    with pytest.raises(EdgepackError, match="--min-seconds"):
        ValidityRules(min_seconds=-1)
    with pytest.raises(EdgepackError, match="--max-seconds"):
        ValidityRules(max_seconds=0)


def test_a_bench_group_takes_its_worst_run(tmp_path, lab_bundle):
    phone = FakePhone("A", throttle_after=1)  # throttled from its first run's end on
    result = run_bench([load_bundle(lab_bundle)], [phone.target()],
                       BenchParams(repeat=2, iterations=10), work_dir=tmp_path)
    v = of_runs(result.runs)
    assert v.verdict is Verdict.SEMIVALID
    assert any("thermal status changed 0 -> 2 during the run (1 of 2 runs)" in r
               for r in v.reasons), v.reasons


def test_regress_leaves_invalid_candidate_runs_out(tmp_path, lab_bundle):
    bundle = load_bundle(lab_bundle)
    counter = iter(range(1000))

    def phone(scale: float, fell_back: bool) -> FakePhone:
        def run(config: RunConfig):  # noqa: ANN202
            result = deploy_result("A", [x * scale for x in samples(next(counter),
                                                                    config.iterations)],
                                   config=config)
            if not fell_back:
                return result
            # onnxruntime ran the CPU provider instead of xnnpack: another measurement.
            s = result.sets[0]
            return replace(result, sets=[replace(s, runner=replace(s.runner, ep_used="cpu"))])
        return FakePhone("A", run=run)

    params = {"repeat": 3, "iterations": 40, "probe_state": False, "eps": ("xnnpack",)}
    with HistoryStore.open(tmp_path / "h.db") as store:
        run_bench([bundle], [phone(1.0, False).target()], BenchParams(**params),
                  [HistoryListener(store)], work_dir=tmp_path, label="main")
        cand = run_bench([bundle], [phone(1.5, True).target()], BenchParams(**params),
                         [HistoryListener(store)], work_dir=tmp_path)
        report = compare_runs(store, store.runs(session=cand.session),
                              resolve_baseline(store, "label:main"))
    (c,) = report.comparisons
    # 50 % slower, but on another EP: no verdict rests on those runs.
    assert not c.regressed and c.latency is None
    assert "3 invalid candidate run(s) not used" in c.note and "fell back" in c.note
