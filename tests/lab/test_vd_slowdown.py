"""The virtual device's drift knob, `--slowdown-after SECONDS:FACTOR`: a deploy's runner is
FACTOR times slower once SECONDS have passed, and untouched before."""

from __future__ import annotations

import statistics

import pytest

from edgepack.devices.virtual import Faults
from tests.conftest import run_cli
from tests.lab.test_ab import pack_chain


@pytest.fixture(scope="module")
def lab_bundle(tmp_path_factory):
    # About a millisecond an inference: long enough that a busy machine's scheduling noise is
    # small beside it, short enough for a quick test.
    return pack_chain(tmp_path_factory.mktemp("slow"), "chain", 100, size=256)


def _median(bundle, serial: str) -> float:
    r = run_cli("deploy", bundle, "--device", serial, "--iterations", "15", "--json")
    assert r.code == 0, r.stderr
    return statistics.median(r.json()["sets"][0]["runner"]["latencies_ms"])


def test_the_runner_slows_by_the_factor_after_the_delay_not_before(
        virtual_devices, host_runner, lab_bundle):
    # A delay no test reaches: the knob is set, and the runner is not slowed yet.
    dev = virtual_devices.start(faults=Faults(slowdown_after=3600, slowdown_factor=3))
    before = _median(lab_bundle, dev.serial)
    again = _median(lab_bundle, dev.serial)
    assert again < 1.5 * before, (before, again)
    dev.device.set_slowdown(0, 3)  # the moment has come
    after = _median(lab_bundle, dev.serial)
    # A loose bound on a factor of 3: the sleep is proportional, so scheduling noise on a
    # busy machine cannot bring it near 1.5.
    assert after > 1.5 * min(before, again), (before, again, after)
    dev.device.set_slowdown(None)
    assert _median(lab_bundle, dev.serial) < 1.5 * max(before, again)


def test_slowdown_from_the_command_line(virtual_devices, host_runner, lab_bundle):
    dev = virtual_devices.start(separate_process=True, args=["--slowdown-after", "0:3"])
    slowed = _median(lab_bundle, dev.serial)
    plain = virtual_devices.start()
    assert slowed > 1.5 * _median(lab_bundle, plain.serial)


def test_bad_slowdown_is_one_line_and_exit_2(tmp_path):
    for bad in ("3", "x:2", "5:0.5", "-1:2", "5:nan"):
        r = run_cli("virtual-device", "--root", tmp_path / "root", "--slowdown-after", bad)
        assert r.code == 2, (bad, r.stderr)
        assert "--slowdown-after" in r.stderr and "Traceback" not in r.stderr
