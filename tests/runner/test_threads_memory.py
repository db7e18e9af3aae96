"""What the reports say about threads and memory is measured, and says what it covers: the
threads onnxruntime runs the model on (not the 0 that --threads 0 asks with), and a peak RSS
labelled as the runner's whole process or as the Python engine's session growth."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from edgepack.runner.local import run_local
from edgepack.runner.python_engine import run_python
from edgepack.runner.result import (
    RSS_PROCESS,
    RSS_SESSION_GROWTH,
    RunConfig,
    RunnerResult,
    parse_runner_output,
)
from tests.runner.conftest import mlp_model, save_model, write_set


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    d = tmp_path_factory.mktemp("mlp")
    model = save_model(mlp_model(inp=128, hidden=512), d / "m")
    inputs = write_set(d / "set", [("x", np.ones((16, 128), np.float32))])
    return model, inputs


def _default_threads(model) -> int:
    """The intra-op threads onnxruntime picks by itself here: its pool's threads, counted as
    the process's threads before and after a session, plus the calling thread."""
    import onnxruntime as ort

    def count() -> int:
        return len(list(Path("/proc/self/task").iterdir()))

    before = count()
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    used = count() - before + 1
    del session
    return used


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_native_runner_reports_the_threads_it_ran(host_runner, mlp, tmp_path, threads):
    model, inputs = mlp
    result = run_local(host_runner, model, inputs, None, RunConfig(iterations=1, threads=threads))
    # More threads than this machine's 2 cores are still made when asked for.
    assert (result.threads, result.threads_used) == (threads, threads)


def test_threads_0_reports_what_onnxruntime_chose(host_runner, mlp, tmp_path):
    model, inputs = mlp
    default = _default_threads(model)
    native = run_local(host_runner, model, inputs, None, RunConfig(iterations=1, threads=0))
    python = run_python(model, inputs, tmp_path / "py", RunConfig(iterations=1, threads=0))
    for result in (native, python):
        assert result.threads == 0 and result.threads_used == default, result.engine
    assert native.threads_text() == f"{default} (asked onnxruntime's default)"


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_python_engine_counts_only_its_session_threads(mlp, tmp_path, threads):
    """Threads started by other code meanwhile (a bench's device workers) are not the
    session's: the Python engine tells its pool's threads by the name they inherit."""
    model, inputs = mlp
    stop = threading.Event()
    others: list[threading.Thread] = []

    def churn() -> None:
        while not stop.is_set() and len(others) < 400:
            t = threading.Thread(target=stop.wait)
            t.start()
            others.append(t)

    spawner = threading.Thread(target=churn)
    spawner.start()
    while len(others) < 5:  # churning before the session is made, and on through it
        threading.Event().wait(0.001)
    try:
        result = run_python(model, inputs, tmp_path / "out",
                            RunConfig(iterations=2, threads=threads))
    finally:
        stop.set()
        spawner.join()
        for t in others:
            t.join()
    assert (result.threads, result.threads_used) == (threads, threads)


def test_threads_are_told_by_the_thread_that_made_them():
    """The mechanism behind the above, deterministically: while the calling thread is marked, a
    thread it starts counts; a thread another thread starts does not, nor one it started
    before."""
    from edgepack.runner.python_engine import _SessionThreads

    release, go, done = threading.Event(), threading.Event(), threading.Event()
    started = []

    def start_one() -> None:
        t = threading.Thread(target=release.wait)
        t.start()
        started.append(t)

    def other_code() -> None:  # made before the mark: a bench worker, say
        go.wait()
        start_one()
        done.set()

    other = threading.Thread(target=other_code)
    other.start()
    try:
        with _SessionThreads() as pool:
            start_one()  # this thread's: carries the mark
            go.set()  # the other thread's, started meanwhile: does not
            assert done.wait(10)
        assert len(started) == 2
        assert pool.used() == 1 + 1  # the one it made, and itself
        with _SessionThreads() as again:  # same mark; the first block's thread is older
            pass
        assert again.used() == 1
    finally:
        release.set()
        other.join()
        for t in started:
            t.join()


def test_python_engine_peak_rss_is_the_session_growth(mlp, tmp_path):
    """An earlier peak of this process (here 256 MiB of numpy, freed) is not the session's."""
    model, inputs = mlp
    big = np.ones(32 * 1024 * 1024)
    big[::512] = 2.0  # touched: resident
    del big
    result = run_python(model, inputs, tmp_path / "out", RunConfig(iterations=2))
    assert result.peak_rss_scope == RSS_SESSION_GROWTH
    assert result.peak_rss_kb_after_load is not None and result.peak_rss_kb_end is not None
    assert 0 < result.peak_rss_kb_after_load <= result.peak_rss_kb_end < 128 * 1024


def test_native_runner_peak_rss_is_the_process(host_runner, mlp):
    model, inputs = mlp
    result = run_local(host_runner, model, inputs, None, RunConfig(iterations=1))
    assert result.peak_rss_scope == RSS_PROCESS
    assert 0 < result.peak_rss_kb_after_load <= result.peak_rss_kb_end


def test_reports_of_older_runners_read_as_asked_and_process():
    doc = {"schema": "edgepack-runner/1", "status": "ok", "runner_version": "0.1.0",
           "onnxruntime_version": "1.32.0", "ep_requested": "cpu", "ep_used": "cpu",
           "threads": 0, "optimization": "all", "session_create_ms": 1.0,
           "first_inference_ms": 1.0, "latencies_ms": [1.0], "peak_rss_kb_after_load": 10,
           "peak_rss_kb_end": 11, "inputs": [], "outputs": []}
    old = parse_runner_output(json.dumps(doc), 0)
    assert old.threads_used is None and old.peak_rss_scope == RSS_PROCESS
    assert old.threads_text() == "onnxruntime's default"
    new = parse_runner_output(json.dumps({**doc, "threads_used": 2}), 0)
    assert new.threads_text() == "2 (asked onnxruntime's default)"
    assert "threads_used" not in new.extra and "peak_rss_scope" not in new.extra
    same = RunnerResult(**{**new.__dict__, "threads": 2})
    assert same.threads_text() == "2"
