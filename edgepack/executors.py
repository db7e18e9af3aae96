"""One way to run a bundle, whatever runs it: the executor seam.

Shaped after onnx's backend API (`prepare(model)` -> a representation whose `run(inputs)` any
test drives), with two steps because a device's costs fall in two places:

- `Executor.prepare(bundle, config, listener)` is a context manager, entered once per bundle.
  Whatever is paid once goes here and is undone on exit: a device reads its facts, takes its
  lock, removes stale scratch and stages the runner and the bundle (and on exit removes the
  run's scratch and releases the lock, in one round trip); the host finds its built runner, or
  settles on onnxruntime's Python API; qemu finds the aarch64 runner and its fake cpuinfo.
- `Prepared.run_set(index, config, out_dir)` runs one input set and leaves its outputs (and
  its onnxruntime profile, when config.profile asks) in `out_dir` on this machine, pulled there
  if they were made elsewhere, so judging never knows where the model ran.

`run_bundle` is the one loop over a bundle's input sets that `edgepack run`, `edgepack deploy`
and the bench all go through: the first set timed with the full configuration, the others only
proving outputs, every set judged against the bundle's expected outputs, and one `DeployResult`
carrying what the preparation learnt (the device's facts, the transfer, notes).

The facts live on the Prepared rather than in what run_set returns, so run_set stays a
RunnerResult (what A/B and diagnosis code compare) and a device's one-off facts are read once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from edgepack.compare import OutputVerdict, compare_outputs, read_outputs
from edgepack.devices.base import DeviceInfo
from edgepack.errors import EdgepackError, ExitCode
from edgepack.records import DeployResult, SetResult, Transfer
from edgepack.runner.cache import RunnerBuild, find_runner
from edgepack.runner.result import RunConfig, RunnerResult, check_ep_place
from edgepack.stats import latency_stats

if TYPE_CHECKING:
    from edgepack.bundle import Bundle

ENGINES = ("auto", "native", "python")
QEMU_TARGET = "linux-aarch64"


class DeployListener:
    """Hears the stages of a run; the CLI draws progress bars, bench logs per device."""

    def stage(self, text: str) -> None:  # noqa: B027 - a no-op by default
        pass

    def transfer(self) -> object | None:
        """A staging.TransferProgress for pushes, or None."""
        return None


class Prepared(Protocol):
    """An executor made ready for one bundle (see the module's docstring).

    `transfer.pull_s` is the part of run_set's time spent bringing files back (a device's
    pulls); run_bundle counts the rest as run time."""

    @property
    def info(self) -> DeviceInfo: ...

    @property
    def engine(self) -> str: ...  # "native" or "python"

    @property
    def runner_target(self) -> str | None: ...

    @property
    def notes(self) -> list[str]: ...

    @property
    def transfer(self) -> Transfer | None: ...  # None where nothing moves

    def run_set(self, index: int, config: RunConfig, out_dir: Path) -> RunnerResult: ...


class Executor(Protocol):
    def prepare(self, bundle: Bundle, config: RunConfig,
                listener: DeployListener | None = None) -> AbstractContextManager[Prepared]: ...


def set_config(config: RunConfig, index: int) -> RunConfig:
    """The first test set is timed with the full configuration; the others only prove outputs."""
    if index == 0:
        return config
    return replace(config, warmup=0, iterations=1, min_seconds=None, profile=False)


def judge(bundle: Bundle, index: int, output_dir: Path) -> list[OutputVerdict]:
    """Compare what a runner wrote for test set `index` with the bundle's expected outputs."""
    expected = bundle.expected_outputs(index)
    actual = read_outputs(output_dir, list(expected))
    tolerances = {o.name: o.tolerance for o in bundle.manifest.outputs}
    return compare_outputs(expected, actual, tolerances)


def run_bundle(
    executor: Executor,
    bundle: Bundle,
    config: RunConfig,
    work_dir: Path | None = None,
    listener: DeployListener | None = None,
) -> DeployResult:
    """Run every test set of a bundle with `executor` and judge the outputs.

    With `work_dir` the outputs are kept there (test_data_set_<k>/output_<i>.pb, and each set's
    profile beside its outputs); otherwise both go with a temporary directory.
    """
    listener = listener or DeployListener()
    started = datetime.now(UTC).isoformat(timespec="seconds")
    t_start = time.perf_counter()
    sets: list[SetResult] = []
    run_s = 0.0
    with ExitStack() as stack:
        root = (Path(work_dir) if work_dir is not None else
                Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgepack-run-"))))
        with executor.prepare(bundle, config, listener) as prepared:
            for test_set in bundle.manifest.test_sets:
                cfg = set_config(config, test_set.index)
                out_dir = root / test_set.dir
                listener.stage(f"{prepared.info.serial}: running input set {test_set.index}")
                t0 = time.perf_counter()
                result = prepared.run_set(test_set.index, cfg, out_dir)
                run_s += time.perf_counter() - t0
                sets.append(SetResult(test_set.index, result,
                                      judge(bundle, test_set.index, out_dir)))
            info, engine, target = prepared.info, prepared.engine, prepared.runner_target
            notes, transfer = list(prepared.notes), prepared.transfer or Transfer()
    if bundle.manifest.quantization is not None:
        from edgepack.quantize import cost_note

        notes.append(cost_note(bundle.manifest.quantization))
    return DeployResult(
        bundle_name=bundle.name,
        bundle_sha256=bundle.sha256,
        device=info,
        config=config,
        engine=engine,
        runner_target=target,
        sets=sets,
        stats=latency_stats(sets[0].runner.latencies_ms),
        started_at=started,
        wall_s=time.perf_counter() - t_start,
        run_s=run_s - transfer.pull_s,
        transfer=transfer,
        notes=notes,
    )


# ---------------------------------------------------------------------------- this machine


# (model, inputs dir, output dir, config) -> the runner's report, outputs in the output dir.
EngineRun = Callable[[Path, Path, Path, RunConfig], RunnerResult]


@dataclass
class LocalPrepared:
    """A bundle run where it lies, on this machine: nothing to stage, nothing to pull."""

    bundle: Bundle
    info: DeviceInfo
    engine: str
    runner_target: str | None
    notes: list[str]
    run: EngineRun
    transfer: Transfer | None = None

    def run_set(self, index: int, config: RunConfig, out_dir: Path) -> RunnerResult:
        return self.run(self.bundle.predict_path, self.bundle.set_dir(index), out_dir, config)


def _native_run(runner: RunnerBuild, wrapper: Sequence[str] = ()) -> EngineRun:
    from edgepack.runner.local import run_local

    def run(model: Path, inputs: Path, out_dir: Path, config: RunConfig) -> RunnerResult:
        # run_local puts a profile beside the outputs when config.profile asks for one.
        return run_local(runner, model, inputs, out_dir, config, wrapper=wrapper)

    return run


def _python_run(model: Path, inputs: Path, out_dir: Path, config: RunConfig) -> RunnerResult:
    from edgepack.runner.python_engine import run_python

    return run_python(model, inputs, out_dir, config,
                      profile_prefix=str(out_dir / "profile") if config.profile else None)


def _native_note(runner: RunnerBuild) -> str:
    return f"engine: native runner {runner.id}"


@dataclass(frozen=True)
class NativeExecutor:
    """The native runner on this machine: `runner`, or the built host runner."""

    runner: RunnerBuild | None = None

    @contextmanager
    def prepare(self, bundle: Bundle, config: RunConfig,
                listener: DeployListener | None = None) -> Iterator[LocalPrepared]:
        check_ep_place(config.ep, browser=False)
        runner = self.runner or find_runner("host")
        if runner is None:
            raise EdgepackError(
                "the host runner is not built: run `edgepack runner build --target host`, "
                "or pass --engine python"
            )
        yield LocalPrepared(bundle, host_info(), "native", runner.target, [_native_note(runner)],
                            _native_run(runner))


@dataclass(frozen=True)
class PythonExecutor:
    """onnxruntime's Python API in this process, fulfilling the runner's contract."""

    @contextmanager
    def prepare(self, bundle: Bundle, config: RunConfig,
                listener: DeployListener | None = None) -> Iterator[LocalPrepared]:
        check_ep_place(config.ep, browser=False)
        yield LocalPrepared(bundle, host_info(), "python", None, [], _python_run)


@dataclass(frozen=True)
class HostExecutor:
    """`edgepack run --engine ENGINE`: native, python, or auto (the native runner when it is
    built, else the Python engine, saying so). Decided at each prepare, so a runner built
    while a bench goes on is used from its next run."""

    engine: str = "auto"

    @contextmanager
    def prepare(self, bundle: Bundle, config: RunConfig,
                listener: DeployListener | None = None) -> Iterator[Prepared]:
        if self.engine not in ENGINES:
            raise EdgepackError(
                f"--engine must be one of {', '.join(ENGINES)}, not {self.engine!r}")
        check_ep_place(config.ep, browser=False)
        runner = find_runner("host") if self.engine == "auto" else None
        if self.engine == "python" or (self.engine == "auto" and runner is None):
            with PythonExecutor().prepare(bundle, config, listener) as prepared:
                if self.engine == "auto":
                    prepared.notes.append("engine: onnxruntime Python (no host runner built; "
                                          "`edgepack runner build --target host` builds it)")
                yield prepared
            return
        with NativeExecutor(runner).prepare(bundle, config, listener) as prepared:
            yield prepared


@dataclass(frozen=True)
class QemuExecutor:
    """The linux-aarch64 runner on this x86_64 machine under qemu-user, with an ARM
    /proc/cpuinfo (edgepack.runner.qemu says why): an ARM build's outputs without a board."""

    runner: RunnerBuild | None = None

    @contextmanager
    def prepare(self, bundle: Bundle, config: RunConfig,
                listener: DeployListener | None = None) -> Iterator[LocalPrepared]:
        from edgepack.runner import qemu

        check_ep_place(config.ep, browser=False)
        runner = self.runner or find_runner(QEMU_TARGET)
        if runner is None:
            raise EdgepackError(
                f"the {QEMU_TARGET} runner is not built: run `edgepack runner build --target "
                f"{QEMU_TARGET}`", ExitCode.DEVICE)
        reason = qemu.unavailable_reason()
        if reason is not None:
            raise EdgepackError(f"cannot run the {QEMU_TARGET} runner under qemu: {reason}",
                                ExitCode.DEVICE)
        info = replace(host_info(), serial=qemu.QEMU, machine="aarch64", abis=["aarch64"],
                       soc="Arm Neoverse N1 (qemu-user)", runner_target=runner.target)
        yield LocalPrepared(bundle, info, "native", runner.target, [_native_note(runner)],
                            _native_run(runner, qemu.wrapper(qemu.cpuinfo_file())))


def host_info() -> DeviceInfo:
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
