"""Is `ab`'s interval honest? Coverage of the bootstrap on simulated rounds with drift and
outliers (as a shared machine makes them), the round sizing of --iterations auto, and real
sessions: A/A on the host, and a known ratio on a virtual device whose clock knob slows every
B run by exactly 2 %.

The real-run checks here are short (a few sessions of a few rounds: CI runs them); the long
version, 20 sessions of the issue's 50-against-51-layer chains, is bench/ab_bench.py's
`known` and `ab` parts."""

from __future__ import annotations

import numpy as np
import pytest

from edgepack.ab import (
    AUTO_FIRST_ITERATIONS,
    AUTO_MAX_ITERATIONS,
    AUTO_MIN_ITERATIONS,
    AbParams,
    abba_schedule,
    bootstrap_ratio,
    run_ab,
    size_iterations,
)
from tests.lab.test_ab import pack_chain

# ---------------------------------------------------------------------------- simulated


def shared_machine_rounds(rng: np.random.Generator, rounds: int, true: float,
                          drift_per_run: float = 0.0) -> tuple[list[float], list[float]]:
    """Per-round medians of A and B as this project's CI machine gives them while shared
    (measured: docs/statistics.md): most runs within ~2 % of each other, one run in six
    landing in another process's burst (+5 to +40 %), and a linear drift of the machine over
    the session, in ABBA order."""
    figures: dict[tuple[int, str], float] = {}
    for slot, (k, side) in enumerate(abba_schedule(rounds)):
        base = 10.0 * (true if side == "B" else 1.0) * (1 + drift_per_run * slot)
        noise = rng.normal(0, 0.015)
        if rng.random() < 1 / 6:
            noise += rng.uniform(0.05, 0.4)
        figures[(k, side)] = base * float(np.exp(noise))
    return ([figures[(k, "A")] for k in range(rounds)],
            [figures[(k, "B")] for k in range(rounds)])


@pytest.mark.parametrize("rounds, drift", [(10, 0.0), (40, 0.0), (40, 0.002)])
def test_the_interval_covers_the_true_ratio_on_rounds_with_outliers_and_drift(rounds, drift):
    rng = np.random.default_rng(14)
    true, trials, covered = 1.02, 300, 0
    for seed in range(trials):
        a, b = shared_machine_rounds(rng, rounds, true, drift)
        e = bootstrap_ratio(a, b, seed=seed, resamples=1000)
        covered += e.low <= true <= e.high
    # 95 % nominal; 300 trials put 2 standard errors at +/- 2.5 %.
    assert 0.925 <= covered / trials <= 0.99, (rounds, drift, covered / trials)


def test_outlier_rounds_do_not_widen_the_interval_past_the_precision():
    # 100 rounds of the shared machine: the mean of the log ratios gives +/- 2.7 % here (the
    # one run in six in a burst dominates its spread); the trimmed mean +/- 0.77 %.
    rng = np.random.default_rng(7)
    widths = []
    for seed in range(20):
        a, b = shared_machine_rounds(rng, 100, 1.02)
        widths.append(bootstrap_ratio(a, b, seed=seed, resamples=1000).half_width)
    assert float(np.median(widths)) < 0.009, widths


def test_auto_iterations_time_a_third_of_the_start_up_within_bounds():
    # 0.3 s runs timing 50 x 2 ms: 0.2 s of start-up, so 0.067 s timed: 34 iterations.
    assert size_iterations([(0.3, [2.0] * 50), (0.3, [2.0] * 50)]) == 34
    # A start-up far below an iteration: the floor, so a run's own median means something.
    assert size_iterations([(0.02, [10.0] * 1)]) == AUTO_MIN_ITERATIONS
    # A start-up of seconds (a loaded machine) does not make runs long: the cap.
    assert size_iterations([(2.5, [1.0] * 30)]) == AUTO_MAX_ITERATIONS
    # A failed run (no latencies) is no measure of anything.
    assert size_iterations([(5.0, [])]) == AUTO_FIRST_ITERATIONS


# ---------------------------------------------------------------------------- real runs


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    """One model packed twice under two names: A/A whose sides the history tells apart."""
    out = tmp_path_factory.mktemp("twins")
    return pack_chain(out, "twin_a", 8), pack_chain(out, "twin_b", 8)


def test_host_a_a_intervals_cover_1(twins, host_runner, tmp_path):
    from edgepack.bench import host_target
    from edgepack.bundle import load_bundle
    from edgepack.records import BenchParams

    a, b = (load_bundle(p) for p in twins)
    bench = BenchParams(repeat=1, iterations=30)
    params = AbParams(min_rounds=8, max_rounds=8)
    target = host_target("native")
    verdicts, covered = [], 0
    for k in range(6):
        r = run_ab(a, b, target, bench.configs(None)[0], bench, params,
                   work_dir=tmp_path / f"s{k}")
        assert r.median is not None and r.stopped_by in ("rounds", "precision")
        covered += r.median.low <= 1.0 <= r.median.high
        verdicts.append(r.verdict)
    # Nominal 95 %: six of six four times in five; fewer than four only when the interval is
    # too narrow or off centre (well under 1 % of the time if it holds its level).
    assert covered >= 4, verdicts


def test_a_known_two_percent_slowdown_on_a_virtual_device_is_covered_and_found(
        twins, virtual_devices, host_runner, tmp_path):
    from edgepack.bench import device_target
    from edgepack.bundle import load_bundle
    from edgepack.devices.adb import AdbDevice
    from edgepack.records import BenchListener, BenchParams

    dev = virtual_devices.start()
    a, b = (load_bundle(p) for p in twins)

    class SlowB(BenchListener):
        """The device's clock knob: every inference of B's runs takes exactly 1.02 times as
        long; A's runs are left alone."""

        def on_run_start(self, serial, bundle, config, repeat) -> None:  # noqa: ANN001
            if bundle.name == b.name:
                dev.device.set_slowdown(0, 1.02)
            else:
                dev.device.set_slowdown(None)

    target = device_target(AdbDevice(dev.serial))
    bench = BenchParams(repeat=1, iterations=30)
    # Ten rounds: the trimmed mean then drops two a side, which a burst of the machine's other
    # work hitting one side's runs (seen once in six rounds, CI's whole suite running) needs.
    params = AbParams(min_rounds=10, max_rounds=10)
    covered, ratios = 0, []
    try:
        for k in range(5):
            r = run_ab(a, b, target, bench.configs(None)[0], bench, params,
                       work_dir=tmp_path / f"s{k}", listeners=[SlowB()])
            assert r.median is not None, r.notes
            covered += r.median.low <= 1.02 <= r.median.high
            ratios.append((r.median.low, r.median.ratio, r.median.high))
    finally:
        dev.device.set_slowdown(None)
    # 95 % nominal: fewer than three of five only when it does not hold its level.
    assert covered >= 3, ratios
    # Never the wrong way: a 2 % slowdown is never read as faster.
    assert all(high > 1.0 for _, _, high in ratios), ratios
