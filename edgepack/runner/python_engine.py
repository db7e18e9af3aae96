"""The runner's contract, fulfilled by onnxruntime's Python API on this machine.

It reads the same files and writes the same files and report as edgepack-runner, so a host run
goes through the steps a device run takes, and the two engines can be measured side by side.

Two figures are measured differently from the runner's, because this process is not only the
session: the threads are those the session's creation started (found by the name they inherit
from the creating thread, so threads other code starts meanwhile do not count), and the peak
RSS is the session's growth over the process's RSS just before it was created (labelled
RSS_SESSION_GROWTH), not the whole interpreter's.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from edgepack import __version__, dtypes
from edgepack.errors import EdgepackError, ExitCode, short
from edgepack.runner.result import (
    RSS_SESSION_GROWTH,
    RunConfig,
    RunnerResult,
    TensorInfo,
    parse_cpu_mask,
)

_PROVIDERS = {"cpu": "CPUExecutionProvider", "xnnpack": "XnnpackExecutionProvider",
              "nnapi": "NnapiExecutionProvider"}
_OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
               "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def run_python(
    model: Path, inputs_dir: Path, output_dir: Path, config: RunConfig,
    profile_prefix: str | None = None,
) -> RunnerResult:
    with pinned(config.cpu_affinity):
        return _run_python(model, inputs_dir, output_dir, config, profile_prefix)


@contextmanager
def pinned(mask: str | None) -> Iterator[None]:
    """config.cpu_affinity for this engine, as taskset is for the runner. On Linux
    sched_setaffinity(0) pins the calling thread only, and the threads onnxruntime creates in
    the session inherit it; the thread's own mask comes back afterwards."""
    if not mask or not hasattr(os, "sched_setaffinity"):
        yield
        return
    wanted = parse_cpu_mask(mask) & os.sched_getaffinity(0)
    if not wanted:
        raise EdgepackError(f"cpu affinity {mask} selects none of this machine's CPUs "
                            f"({sorted(os.sched_getaffinity(0))})")
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, wanted)
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


def _run_python(
    model: Path, inputs_dir: Path, output_dir: Path, config: RunConfig,
    profile_prefix: str | None,
) -> RunnerResult:
    import onnxruntime as ort

    from edgepack.ort_session import prepare, run_session
    from edgepack.tensors import STRING, array_dtype, read_tensor, write_tensor

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = config.threads
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                            _OPT_LEVELS[config.optimization])
    opts.log_severity_level = 3
    if profile_prefix:
        # onnxruntime opens the profile when the session is made and, when its directory is
        # not there yet, writes nothing yet still names the file in end_profiling().
        Path(profile_prefix).parent.mkdir(parents=True, exist_ok=True)
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    provider = _PROVIDERS[config.ep]
    fallback = None
    if provider not in ort.get_available_providers():
        fallback = (f"{provider} is not in this onnxruntime build "
                    f"(available: {', '.join(ort.get_available_providers())})")
        provider = "CPUExecutionProvider"

    # Inputs are read before the session exists, as the runner reads them, so that the session's
    # memory growth is the session's alone.
    files = sorted(Path(inputs_dir).glob("input_*.pb"), key=_index)
    arrays = [read_tensor(path) for path in files]
    for path, (_, array) in zip(files, arrays, strict=True):
        if array_dtype(array) == STRING:
            _check_utf8(path, array)

    memory = _SessionMemory()
    t0 = time.perf_counter()
    try:
        with _SessionThreads() as pool:
            session = ort.InferenceSession(str(model), opts, providers=[provider])
    except Exception as exc:
        raise EdgepackError(f"onnxruntime cannot load {model}: {short(exc)}",
                            ExitCode.DEVICE) from None
    session_ms = (time.perf_counter() - t0) * 1e3
    rss_after_load = memory.growth_kb()
    threads_used = pool.used()

    model_inputs = session.get_inputs()
    feeds: dict[str, np.ndarray] = {}
    for position, (name, array) in enumerate(arrays):
        if not name and position < len(model_inputs):
            name = model_inputs[position].name
        feeds[name] = array
    missing = [i.name for i in model_inputs if i.name not in feeds]
    if missing:
        raise EdgepackError(f"{inputs_dir}: no value for input(s) {', '.join(missing)}",
                            ExitCode.DEVICE)

    try:
        prepared = prepare(session, feeds)
    except Exception as exc:
        raise EdgepackError(f"{inputs_dir}: onnxruntime cannot take these inputs: {short(exc)}",
                            ExitCode.DEVICE) from None

    def run() -> list[np.ndarray]:
        return run_session(session, prepared)

    try:
        t0 = time.perf_counter()
        results = run()
        first_ms = (time.perf_counter() - t0) * 1e3
        for _ in range(config.warmup):
            run()
        latencies: list[float] = []
        deadline = None if config.min_seconds is None else time.perf_counter() + config.min_seconds
        while True:
            t0 = time.perf_counter()
            results = run()
            latencies.append((time.perf_counter() - t0) * 1e3)
            if deadline is None:
                if len(latencies) >= config.iterations:
                    break
            elif time.perf_counter() >= deadline:
                break
    except Exception as exc:
        raise EdgepackError(f"onnxruntime failed to run {model}: {short(exc)}",
                            ExitCode.DEVICE) from None
    # Before the outputs are written: writing imports onnx, which grows this process, not the
    # session.
    rss_end = memory.growth_kb()

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    outputs = []
    for i, (meta, array) in enumerate(zip(session.get_outputs(), results, strict=True)):
        array = np.asarray(array)
        write_tensor(output_dir / f"output_{i}.pb", meta.name, array)
        outputs.append(TensorInfo(meta.name, array_dtype(array), list(array.shape)))
    profile_file = session.end_profiling() if profile_prefix else None

    return RunnerResult(
        runner_version=__version__,
        onnxruntime_version=ort.__version__,
        engine="python",
        ep_requested=config.ep,
        ep_used=config.ep if fallback is None else "cpu",
        threads=config.threads,
        optimization=config.optimization,
        session_create_ms=session_ms,
        first_inference_ms=first_ms,
        latencies_ms=latencies,
        peak_rss_kb_after_load=rss_after_load,
        peak_rss_kb_end=rss_end,
        inputs=[TensorInfo(m.name, _ort_type(m.type), list(m.shape)) for m in model_inputs],
        outputs=outputs,
        ep_fallback_reason=fallback,
        profile_file=profile_file,
        threads_used=threads_used,
        peak_rss_scope=RSS_SESSION_GROWTH,
    )


def _ort_type(text: str) -> str:
    # onnxruntime spells element types as "tensor(float)"; others keep ONNX's spelling.
    row = dtypes.of_ort_type(text)
    if row is not None:
        return row.name
    m = re.fullmatch(r"tensor\((\w+)\)", text)
    return m.group(1) if m else text


def _index(path: Path) -> int:
    m = re.search(r"(\d+)$", path.stem)
    return int(m.group(1)) if m else 0


def _check_utf8(path: Path, array: np.ndarray) -> None:
    # onnxruntime's Python API encodes every str as UTF-8 (and turns bytes into their repr), so a
    # string that is not UTF-8 cannot reach the session from here; the native runner takes any.
    for index, value in enumerate(array.ravel().tolist()):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise EdgepackError(
                f"{path}: string {index} is not UTF-8, which onnxruntime's Python API cannot "
                "pass to a session; run it with --engine native", ExitCode.DEVICE) from None


def _status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


class _SessionMemory:
    """What the process's resident memory grew by since it was created: the peak (VmHWM) over
    the RSS of that moment. Writing 5 to clear_refs resets VmHWM to the current RSS (Linux 4.0+),
    so an earlier peak of this process (a pack, numpy work, another session) is not counted;
    where that is refused, the current RSS stands in for the peak, which it can only be below."""

    def __init__(self) -> None:
        self.base = _status_kb("VmRSS:")
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.peak_key = "VmHWM:"
        except OSError:
            self.peak_key = "VmRSS:"

    def growth_kb(self) -> int | None:
        peak = _status_kb(self.peak_key)
        if peak is None or self.base is None:
            return None
        return max(0, peak - self.base)


class _SessionThreads:
    """Counts the threads the calling thread starts inside the block. The calling thread takes
    a unique name for the block, and Linux copies a thread's name into the threads it creates,
    so the session's pool threads carry it; threads other code starts meanwhile (a bench's
    device workers) carry their own creators' names, and threads that were there before the
    block are left out whatever their name."""

    def __init__(self) -> None:
        self.me = threading.get_native_id()
        self.marker = f"ep-{self.me}"[:15]
        self.before: set[int] = set()
        self.old: str | None = None

    def __enter__(self) -> _SessionThreads:
        comm = Path(f"/proc/self/task/{self.me}/comm")
        try:
            self.before = _tasks()
            self.old = comm.read_text().rstrip("\n")
            comm.write_text(self.marker)
        except OSError:
            self.old = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.old is not None:
            try:
                Path(f"/proc/self/task/{self.me}/comm").write_text(self.old)
            except OSError:
                pass

    def used(self) -> int | None:
        """The threads started in the block that are still alive, plus the calling thread,
        which takes part in every run; None where /proc does not tell."""
        if self.old is None:
            return None
        count = 0
        try:
            new = _tasks() - self.before - {self.me}
        except OSError:
            return None
        for tid in new:
            try:
                if Path(f"/proc/self/task/{tid}/comm").read_text().rstrip("\n") == self.marker:
                    count += 1
            except OSError:
                continue  # a thread that ended while we looked
        return count + 1


def _tasks() -> set[int]:
    return {int(t.name) for t in Path("/proc/self/task").iterdir()}
