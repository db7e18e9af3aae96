"""A bench stopped by a signal, as CI systems and `timeout` stop it (SIGTERM) and as a user does
(Ctrl-C, SIGINT): a real `edgepack bench` process on a virtual device whose runner hangs, so the
signal lands while a worker thread is inside its deploy, holding the device lock."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time

import pytest

DEVICE_ROOT = "data/local/tmp/edgepack"



@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)],
                         ids=["SIGTERM", "SIGINT"])
def test_a_bench_stopped_by_a_signal_cleans_up(sig, code, host_runner, virtual_devices,
                                                lab_bundle, tmp_path):
    device = virtual_devices.start()
    device.device.set_runner_fault("hang")
    db = tmp_path / "history.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgepack", "bench", str(lab_bundle), "--device", device.serial,
         "--repeat", "2", "--iterations", "3", "--timeout", "300", "--db", str(db)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not device.device.runner_fault_fired:  # the runner is running, and hangs
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the runner never started"
            time.sleep(0.05)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, stderr
    with sqlite3.connect(db) as conn:
        sessions = conn.execute("SELECT interrupted, finished_at FROM sessions").fetchall()
    assert len(sessions) == 1 and sessions[0][0] == 1 and sessions[0][1], sessions
    # The worker's lock and its run's scratch went, though the worker never left its deploy.
    base = device.root / DEVICE_ROOT
    assert not (base / ".lock").exists()
    assert not list((base / "runs").glob("*"))
    assert sorted(p.name for p in base.iterdir()) == ["bin", "bundles", "runs"]
    assert "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert last == ("edgepack: terminated" if sig == signal.SIGTERM else "edgepack: interrupted")


def test_a_deploy_stopped_by_sigterm_cleans_up(host_runner, virtual_devices, lab_bundle):
    device = virtual_devices.start()
    device.device.set_runner_fault("hang")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgepack", "deploy", str(lab_bundle), "--device", device.serial,
         "--timeout", "300"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not device.device.runner_fault_fired:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the runner never started"
            time.sleep(0.05)
        proc.terminate()
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, stderr
    assert stderr.strip().splitlines()[-1] == "edgepack: terminated", stderr
    base = device.root / DEVICE_ROOT
    assert not (base / ".lock").exists() and not list((base / "runs").glob("*"))
