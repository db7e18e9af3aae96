"""records.bench_order: the one order of a BenchResult, which run_bench and the store share."""

from __future__ import annotations

from dataclasses import replace

import pytest

from edgepack.bench import run_bench
from edgepack.bundle import load_bundle
from edgepack.history import HistoryListener, HistoryStore
from edgepack.records import BenchParams, BenchRun, RunStatus, bench_order, config_key
from edgepack.runner.result import RunConfig
from tests.lab.conftest import FakePhone, samples


def run(serial: str, sha: str, threads: int, repeat: int) -> BenchRun:
    config = RunConfig(threads=threads)
    return BenchRun(serial, f"b-{sha}", sha, config, config_key(config), repeat,
                    RunStatus.PASS, "2025-01-01T00:00:00.000+00:00",
                    "2025-01-01T00:00:00.000+00:00")


def test_devices_then_bundles_as_given_then_as_each_device_ran_them():
    # As runs end: the devices in parallel, B ahead; C was not given; D was given and never ran.
    ended = [run("B", "y", 1, 0), run("A", "x", 2, 0), run("B", "y", 1, 1), run("A", "x", 1, 0),
             run("C", "x", 1, 0), run("A", "y", 1, 0), run("B", "x", 4, 0)]
    order = bench_order(ended, ["A", "B", "D"], ["x", "y", "z"])
    assert order.serials == ["A", "B", "C"]
    assert order.bundles == ["x", "y"]
    # Within a device and bundle the order it ran them (A ran t2 before t1): never re-sorted.
    assert [(r.serial, r.bundle_sha256, r.config_key, r.repeat) for r in order.runs] == [
        ("A", "x", "cpu/t2", 0), ("A", "x", "cpu/t1", 0), ("A", "y", "cpu/t1", 0),
        ("B", "x", "cpu/t4", 0), ("B", "y", "cpu/t1", 0), ("B", "y", "cpu/t1", 1),
        ("C", "x", "cpu/t1", 0)]
    # Nothing given: devices and bundles in the order runs first name them.
    assert bench_order(ended).serials == ["B", "A", "C"]
    assert bench_order(ended).bundles == ["y", "x"]
    assert bench_order([]).runs == []


@pytest.fixture(scope="module")
def bundle(lab_bundle):
    return load_bundle(lab_bundle)


def test_the_store_reads_a_bench_back_in_its_order_when_a_sweep_repeats_a_configuration(
        bundle, tmp_path):
    """--threads 1,1 runs one configuration twice over: the store used to sort the runs by
    configuration key and repeat, so it interleaved the two (t1 r0, t1 r0, t1 r1, t1 r1) where
    the bench had listed them as they ran."""
    phones = [FakePhone("A"), FakePhone("B", model="Galaxy S23")]
    with HistoryStore.open(tmp_path / "h.db") as store:
        result = run_bench([bundle], [p.target() for p in phones],
                           BenchParams(repeat=2, iterations=20, threads=(1, 1)),
                           [HistoryListener(store)], work_dir=tmp_path)
        stored = store.runs(session=result.session)
        again = store.bench_result(stored)
        # Whatever order the runs are handed over in.
        reversed_again = store.bench_result(stored[::-1])
    # Each phone's runs as it ran them: FakePhone seeds its k-th run's samples with k.
    for serial in ("A", "B"):
        mine = [r for r in result.runs if r.serial == serial]
        assert [r.latencies_ms for r in mine] == [samples(k, 20) for k in (1, 2, 3, 4)]
        assert [r.repeat for r in mine] == [0, 1, 0, 1]
    assert [r.serial for r in result.runs] == ["A"] * 4 + ["B"] * 4
    expected = [replace(r, work_dir=None) for r in result.runs]
    assert [replace(r, work_dir=None) for r in again.runs] == expected
    assert [replace(r, work_dir=None) for r in reversed_again.runs] == expected
    assert again.serials == result.serials
