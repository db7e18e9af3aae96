"""One bundle on one device: stage it, run it, collect the outputs, compare them.

A host run takes the same steps as a device run; on the host "staging" is using the bundle where it
lies, and the engine may be the native runner or onnxruntime's Python API.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from edgepack.bundle import Bundle
from edgepack.compare import OutputVerdict, compare_outputs, read_outputs
from edgepack.devices.base import DeviceInfo
from edgepack.errors import EdgepackError
from edgepack.runner.result import RunConfig, RunnerResult
from edgepack.stats import LatencyStats, latency_stats

ENGINES = ("auto", "native", "python")


@dataclass(frozen=True)
class SetResult:
    """One test set: the runner's report and a verdict per output."""

    index: int
    runner: RunnerResult
    verdicts: list[OutputVerdict]

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.verdicts)


@dataclass(frozen=True)
class Transfer:
    files_pushed: int = 0
    bytes_pushed: int = 0
    files_skipped: int = 0
    bytes_skipped: int = 0
    push_s: float = 0.0
    pull_s: float = 0.0


@dataclass(frozen=True)
class DeployResult:
    bundle_name: str
    bundle_sha256: str
    device: DeviceInfo
    config: RunConfig
    engine: str
    runner_target: str | None
    sets: list[SetResult]
    stats: LatencyStats  # of the first set, the one timed with the full configuration
    started_at: str
    wall_s: float
    run_s: float
    transfer: Transfer = field(default_factory=Transfer)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.sets)

    @property
    def verdicts(self) -> list[OutputVerdict]:
        return [v for s in self.sets for v in s.verdicts]


def set_config(config: RunConfig, index: int) -> RunConfig:
    """The first test set is timed with the full configuration; the others only prove outputs."""
    if index == 0:
        return config
    from dataclasses import replace

    return replace(config, warmup=0, iterations=1, min_seconds=None, profile=False)


def judge(bundle: Bundle, index: int, output_dir: Path) -> list[OutputVerdict]:
    """Compare what a runner wrote for test set `index` with the bundle's expected outputs."""
    expected = bundle.expected_outputs(index)
    actual = read_outputs(output_dir, list(expected))
    tolerances = {o.name: o.tolerance for o in bundle.manifest.outputs}
    return compare_outputs(expected, actual, tolerances)


def host_info() -> DeviceInfo:
    import os
    import platform

    usage = shutil.disk_usage(tempfile.gettempdir())
    return DeviceInfo(
        serial="host",
        kind="host",
        state="device",
        model=platform.node() or "host",
        abis=[platform.machine()],
        machine=platform.machine(),
        release=f"{platform.system()} {platform.release()}",
        soc=_cpu_model(),
        free_bytes=usage.free,
        runner_target="host" if platform.machine() == "x86_64" else None,
        manufacturer=os.uname().sysname,
    )


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _find_host_runner():  # type: ignore[no-untyped-def]
    try:
        from edgepack.runner.cache import find_runner
    except ImportError:  # INTEGRATION: the runner cache lands with the native runner
        return None
    return find_runner("host")


def run_on_host(bundle: Bundle, config: RunConfig, engine: str = "auto") -> DeployResult:
    """Run every test set of a bundle on this machine and judge the outputs."""
    if engine not in ENGINES:
        raise EdgepackError(f"--engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    started = datetime.now(UTC).isoformat(timespec="seconds")
    t_start = time.perf_counter()
    notes: list[str] = []
    runner = None
    if engine in ("auto", "native"):
        runner = _find_host_runner()
        if runner is None and engine == "native":
            raise EdgepackError(
                "the host runner is not built: run `edgepack runner build --target host`, "
                "or pass --engine python"
            )
        if runner is None:
            notes.append(
                "engine: onnxruntime Python (no host runner built; "
                "`edgepack runner build --target host` builds it)"
            )
    used_engine = "native" if runner is not None else "python"
    if runner is not None:
        notes.append(f"engine: native runner {runner.id}")

    sets: list[SetResult] = []
    run_s = 0.0
    with tempfile.TemporaryDirectory(prefix="edgepack-run-") as tmp:
        for test_set in bundle.manifest.test_sets:
            out_dir = Path(tmp) / test_set.dir
            cfg = set_config(config, test_set.index)
            t0 = time.perf_counter()
            if runner is not None:
                from edgepack.runner.local import run_local

                result = run_local(
                    runner, bundle.predict_path, bundle.set_dir(test_set.index), out_dir, cfg
                )
            else:
                from edgepack.runner.python_engine import run_python

                result = run_python(
                    bundle.predict_path, bundle.set_dir(test_set.index), out_dir, cfg
                )
            run_s += time.perf_counter() - t0
            sets.append(SetResult(test_set.index, result, judge(bundle, test_set.index, out_dir)))
    return DeployResult(
        bundle_name=bundle.name,
        bundle_sha256=bundle.sha256,
        device=host_info(),
        config=config,
        engine=used_engine,
        runner_target="host" if runner is not None else None,
        sets=sets,
        stats=latency_stats(sets[0].runner.latencies_ms),
        started_at=started,
        wall_s=time.perf_counter() - t_start,
        run_s=run_s,
        notes=notes,
    )
