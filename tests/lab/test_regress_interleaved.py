"""`regress --run-baseline`: both sides run here, interleaved run by run, so a drift of the
machine cannot read as a change; and `regress --from-history` judging runs by the validity
rules stored with their sessions."""

from __future__ import annotations

import pytest

from edgepack.regress import latency_test, run_interleaved
from tests.conftest import run_cli
from tests.lab.test_ab import pack_chain


@pytest.fixture(scope="module")
def chains(tmp_path_factory):
    out = tmp_path_factory.mktemp("regress-chains")
    return {"short": pack_chain(out, "short", 4), "long": pack_chain(out, "long", 40),
            "twin": pack_chain(out, "twin", 4), "long_twin": pack_chain(out, "long_twin", 40)}


def test_run_baseline_interleaves_both_sides_in_one_session(chains, host_runner, tmp_path):
    db = tmp_path / "h.db"
    r = run_cli("regress", chains["long"], "--baseline", chains["short"], "--run-baseline",
                "--device", "host", "--repeat", "3", "--iterations", "10", "--db", db,
                "--json")
    assert r.code == 1, r.stderr  # 10x the layers: a regression by any margin
    doc = r.json()
    (c,) = doc["comparisons"]
    assert c["latency"]["regression"] and c["latency"]["runs_baseline"] == 3
    assert c["latency"]["runs_candidate"] == 3
    assert "run interleaved with the candidate" in doc["baseline"]["description"]
    h = run_cli("history", "--db", db, "--json", "--limit", "100").json()["runs"]
    assert len({x["session"] for x in h}) == 1
    # ABBA by run: baseline, candidate, candidate, baseline, baseline, candidate.
    assert [x["bundle_name"] for x in h] == ["short", "long", "long", "short", "short", "long"]


@pytest.mark.parametrize("args, words", [
    (["--baseline", "label:main"], "bundle directory"),
    (["--repeat", "1"], "--repeat 2"),
    (["--from-history"], "--from-history"),
])
def test_run_baseline_bad_input_is_one_line_and_exit_2(chains, tmp_path, args, words):
    given = ["--baseline", str(chains["short"])] if "--baseline" not in args else []
    r = run_cli("regress", chains["long"], "--run-baseline", "--device", "host",
                "--db", tmp_path / "h.db", *given, *args)
    assert r.code == 2, (r.stdout, r.stderr)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and words in lines[0], r.stderr


def test_run_baseline_refuses_the_candidate_as_its_own_baseline(chains, host_runner, tmp_path):
    r = run_cli("regress", chains["short"], "--baseline", chains["short"], "--run-baseline",
                "--device", "host", "--db", tmp_path / "h.db")
    assert r.code == 2 and "pack a copy under another name" in r.stderr, r.stderr


@pytest.mark.xfail(strict=False, reason="statistical premise: with 3 runs a side the sequential "
                   "benches' 99 % interval sometimes covers the drift (2 of 4 clean-clone CI "
                   "runs, 0 of 6 runs alone); kept running, not yet robust")
def test_a_drift_between_two_benches_reads_as_a_regression_but_not_interleaved(
        chains, virtual_devices, host_runner, tmp_path):
    """A/A (one model under two names) on a virtual device that slows by 30 % from the
    session's halfway run: benched one after the other (a stored baseline, then the
    candidate), the drift lands on the candidate alone; interleaved, on both."""
    from edgepack.bench import device_target, run_bench
    from edgepack.bundle import load_bundle
    from edgepack.devices.adb import AdbDevice
    from edgepack.records import BenchListener, BenchParams

    dev = virtual_devices.start()
    target = device_target(AdbDevice(dev.serial))
    # The 40-layer chain: on the 4-layer one an iteration takes ~9 us, where timer noise made
    # even a 30 % drift's interval over 3 runs a side too wide to call (seen once in CI).
    base, twin = load_bundle(chains["long"]), load_bundle(chains["long_twin"])
    params = BenchParams(repeat=3, iterations=20, probe_state=False)

    class DriftAt(BenchListener):
        def __init__(self, at: int) -> None:
            self.at, self.seen = at, 0

        def on_run_start(self, serial, bundle, config, repeat) -> None:  # noqa: ANN001
            if self.seen == self.at:
                dev.device.set_slowdown(0, 1.3)
            self.seen += 1

    try:
        drift = DriftAt(3)
        before = run_bench([base], [target], params, [drift], work_dir=tmp_path / "b1")
        after = run_bench([twin], [target], params, [drift], work_dir=tmp_path / "b2")
        dev.device.set_slowdown(None)
        one_after_the_other = latency_test([x.latencies_ms for x in before.runs],
                                           [x.latencies_ms for x in after.runs])
        r = run_interleaved(base, twin, target, params, work_dir=tmp_path / "i",
                            listeners=[DriftAt(3)])
    finally:
        dev.device.set_slowdown(None)
    interleaved = latency_test([x.a.latencies_ms for x in r.usable_rounds],
                               [x.b.latencies_ms for x in r.usable_rounds if x.b is not None])
    assert one_after_the_other.regression, one_after_the_other.interval_text()
    assert not interleaved.regression and not interleaved.improvement, (
        interleaved.interval_text())


def test_from_history_judges_by_the_rules_stored_with_the_session(chains, host_runner,
                                                                   tmp_path):
    db = tmp_path / "h.db"
    for label in ("base", "cand"):
        b = run_cli("bench", chains["short"], "--device", "host", "--repeat", "3",
                    "--iterations", "5", "--min-iterations", "5", "--label", label,
                    "--db", db)
        assert b.code == 0, b.stderr
    # Judged by this command line's --min-iterations 50, every stored run (5 iterations) would
    # be invalid and nothing judged (exit 2); the sessions' own rules (5) judge them.
    r = run_cli("regress", chains["short"], "--baseline", "label:base", "--from-history",
                "--min-iterations", "50", "--threshold", "50", "--db", db)
    assert r.code == 0, (r.stdout, r.stderr)
    assert "rules stored with their sessions" in r.stdout
    assert "--min-iterations 5," in r.stdout and "--min-iterations 50," in r.stdout
    same = run_cli("regress", chains["short"], "--baseline", "label:base", "--from-history",
                   "--min-iterations", "5", "--threshold", "50", "--db", db)
    assert same.code == 0 and "rules stored" not in same.stdout, same.stdout
