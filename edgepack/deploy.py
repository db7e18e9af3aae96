"""One bundle on one device over adb: the device's executor, and the `deploy` and `run_on_host`
entry points.

`DeviceExecutor` is the executor (edgepack.executors) of a device reached through the `Device`
protocol: preparing reads the device's facts, takes its lock in the same round trip as the survey
of what it holds and the removal of stale scratch, and pushes what changed; each input set is
one shell command and its pulls; the exit removes the run's scratch and releases the lock in one
round trip. `deploy` and `run_on_host` are `run_bundle` with the device's or the host's
executor, kept with the signatures the CLI and the tests call.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from edgepack.bundle import MANIFEST, Bundle

# The device path's own modules (none of them imports adbutils): loaded with this module rather
# than inside deploy(), whose wall time is the device's work.
from edgepack.devices.adb import DEVICE_ROOT
from edgepack.devices.base import Device, DeviceInfo
from edgepack.devices.lock import HeldLock, device_lock
from edgepack.devices.staging import DirSync, LocalFile, survey_command, sync_dirs
from edgepack.errors import EdgepackError, ExitCode
from edgepack.executors import DeployListener, HostExecutor, run_bundle
from edgepack.records import DeployResult, Transfer
from edgepack.runner.cache import RunnerBuild, find_runner, version_key
from edgepack.runner.local import device_command
from edgepack.runner.result import RunConfig, RunnerResult, check_ep_place, parse_runner_output
from edgepack.runner.targets import (
    TARGETS,
    ZIG_GLIBC,
    Arch,
    device_archs,
    get_target,
    target_arch,
    target_for_android_abi,
    target_for_linux_machine,
)

if TYPE_CHECKING:
    from edgepack.devices.base import ShellResult


def run_on_host(
    bundle: Bundle, config: RunConfig, engine: str = "auto", work_dir: Path | None = None
) -> DeployResult:
    """Run every test set of a bundle on this machine and judge the outputs.

    With `work_dir` the outputs are kept there (test_data_set_<k>/output_<i>.pb), and so is
    onnxruntime's profile when config.profile asks for one; otherwise both go with a temporary
    directory.
    """
    return run_bundle(HostExecutor(engine), bundle, config, work_dir)


# ---------------------------------------------------------------------------- devices over adb


@dataclass(frozen=True)
class DeployOptions:
    runner_target: str | None = None  # overrides what the device's ABI / uname -m selects
    keep: bool = False  # keep the run's directory (outputs, profile) on the device
    break_lock: bool = False
    work_dir: Path | None = None  # where pulled outputs and profiles stay; temporary otherwise


# In a run's directory on the device while it is scratch (not kept with --keep): what the next
# deploy, once it holds the lock, removes when the run's own deploy did not (cut off, killed).
SCRATCH_MARK = ".edgepack-scratch"
_STALE_MARK = "::edgepack-stale::"


def stale_runs_command(runs_dir: str) -> str:
    """Removes every run directory marked as scratch, printing each one's name. Run by a deploy
    that holds the lock, so none of them is a running deploy's: while the lock is held no other
    deploy runs on the device."""
    return (f"for ep_m in {shlex.quote(runs_dir)}/*/{SCRATCH_MARK}; do "
            "[ -f \"$ep_m\" ] || continue; ep_x=${ep_m%/*}; "
            f"rm -rf \"$ep_x\" && echo {_STALE_MARK} \"${{ep_x##*/}}\"; done")


def _stale_removed(then_output: str | None) -> list[str]:
    return [line.split(" ", 1)[1] for line in (then_output or "").splitlines()
            if line.startswith(_STALE_MARK + " ")]


def remote_paths(bundle_name: str, runner_id: str, run_id: str) -> tuple[str, str, str]:
    """(runner dir, bundle dir, run dir) on the device.

    Bundles are kept by name, so a redeploy of a changed bundle finds the previous files and
    pushes only what changed; names are used as they are (quoted), apart from '/'.
    """

    safe = bundle_name.replace("/", "_")
    if safe in ("", ".", ".."):
        safe = f"_{safe}_"
    return (f"{DEVICE_ROOT}/bin/{runner_id}", f"{DEVICE_ROOT}/bundles/{safe}",
            f"{DEVICE_ROOT}/runs/{run_id}")


def deploy(
    bundle: Bundle,
    device: Device,
    config: RunConfig,
    options: DeployOptions | None = None,
    listener: DeployListener | None = None,
) -> DeployResult:
    """Push the runner and the bundle (incrementally), run every test set, pull, compare.
    The run's scratch directory on the device goes with the lock, unless options.keep."""
    options = options or DeployOptions()
    executor = DeviceExecutor(device, options.runner_target, options.keep, options.break_lock)
    return run_bundle(executor, bundle, config, options.work_dir, listener)


@dataclass(frozen=True)
class DeviceExecutor:
    """A device as an executor: the runner its ABI (or `runner_target`) selects, run there."""

    device: Device
    runner_target: str | None = None  # overrides what the device's ABI / uname -m selects
    keep: bool = False  # keep the run's directory (outputs, profile) on the device
    break_lock: bool = False

    @contextmanager
    def prepare(self, bundle: Bundle, config: RunConfig,
                listener: DeployListener | None = None) -> Iterator[DevicePrepared]:
        check_ep_place(config.ep, browser=False)
        listener = listener or DeployListener()
        device = self.device
        listener.stage(f"{device.serial}: reading device properties")
        info = device.info()
        runner = _runner_for(device.serial, info, self.runner_target)
        run_id = f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        paths = remote_paths(bundle.name, runner.id, run_id)
        lease = config.timeout_s * len(bundle.manifest.test_sets) + 600
        dirs = _staged_dirs(bundle, runner, paths)
        # The lock is taken in the same round trip as the survey of what the device holds, and
        # as the removal of scratch that deploys cut off (a device that vanished, a process
        # killed) left behind.
        then = stale_runs_command(f"{DEVICE_ROOT}/runs") + "; " + survey_command(dirs)
        with device_lock(device, DEVICE_ROOT, lease, self.break_lock, then=then) as lock:
            notes = [f"removed the scratch of an unfinished run from the device: runs/{name}"
                     for name in _stale_removed(lock.then_output)]
            if info.emulated:
                notes.append(f"the device is emulated ({info.emulated}): its outputs are the "
                             "ARM kernels', its timings the emulator's, not a phone's")
            if self.keep:
                notes.append(f"kept the run's files on the device in {paths[2]}")
            else:
                lock.on_release(f"rm -rf {shlex.quote(paths[2])}")
            listener.stage(f"{device.serial}: pushing the {runner.target} runner and "
                           f"{bundle.name}")
            pushed = _stage(device, dirs, lock.then_output, listener)
            yield DevicePrepared(device, bundle, info, runner, paths, lock, self.keep, notes,
                                 pushed)


@dataclass
class DevicePrepared:
    """A device holding this deploy's lock, the runner and the bundle."""

    device: Device
    bundle: Bundle
    info: DeviceInfo
    runner: RunnerBuild
    paths: tuple[str, str, str]  # runner dir, bundle dir, run dir
    lock: HeldLock
    keep: bool
    notes: list[str]
    pushed: Transfer
    pull_s: float = 0.0
    engine: str = field(default="native", init=False)

    @property
    def runner_target(self) -> str:
        return self.runner.target

    @property
    def transfer(self) -> Transfer:
        return replace(self.pushed, pull_s=self.pull_s)

    def run_set(self, index: int, config: RunConfig, out_dir: Path) -> RunnerResult:
        """One runner invocation, started only while the device lock is still this deploy's,
        then its outputs (and profile) pulled into out_dir."""
        device, lock = self.device, self.lock
        bin_dir, bundle_dir, run_dir = self.paths
        test_set = self.bundle.manifest.test_sets[index]
        remote_out = f"{run_dir}/{test_set.dir}"
        profile = f"{run_dir}/profile_{index}" if config.profile else None
        # Marked before the runner writes anything, so a run cut off is known as scratch.
        mark = "" if self.keep else (
            f" && echo {shlex.quote(lock.token)} > "
            f"{shlex.quote(f'{run_dir}/{SCRATCH_MARK}')}")
        command = lock.guard(
            f"mkdir -p {shlex.quote(remote_out)}{mark} && cd {shlex.quote(run_dir)} && "
            + device_command(bin_dir, f"{bundle_dir}/{self.bundle.manifest.model.file}",
                             f"{bundle_dir}/{test_set.dir}", remote_out, config, profile)
        )
        t0 = time.perf_counter()
        shell = device.shell(command, timeout=config.timeout_s + 60)
        elapsed = time.perf_counter() - t0
        lock.check_guard(device.serial, shell, f"input set {index}")
        result = _runner_result(device.serial, shell, elapsed, config.timeout_s)

        t0 = time.perf_counter()
        out_dir.mkdir(parents=True, exist_ok=True)
        for i in range(len(result.outputs)):
            device.pull(f"{remote_out}/output_{i}.pb", out_dir / f"output_{i}.pb")
        if result.profile_file:
            local_profile = out_dir / f"profile_{index}.json"
            device.pull(result.profile_file, local_profile)
            result = replace(result, profile_file=str(local_profile))
        self.pull_s += time.perf_counter() - t0
        return result


def _runner_for(serial: str, info: DeviceInfo, override: str | None) -> RunnerBuild:
    """The built runner this device runs, or a sentence saying how to get it."""

    name = override or info.runner_target
    if name is None:
        raise EdgepackError(
            f"{serial}: no runner target for ABI {', '.join(info.abis) or '?'} "
            f"(uname -m {info.machine or '?'}); pass --runner-target with one of the targets "
            "`edgepack runner list` knows",
            ExitCode.DEVICE,
        )
    target = get_target(name)
    runner = find_runner(target.name)
    if runner is None:
        raise EdgepackError(
            f"{serial} needs the {target.name} runner, which is not built: run "
            f"`edgepack runner build --target {target.name}`",
            ExitCode.DEVICE,
        )
    check_arch(serial, info, runner)
    check_glibc(serial, info, runner)
    return runner


def check_arch(serial: str, info: DeviceInfo, runner: RunnerBuild) -> None:
    """A runner for another architecture fails on the device only after it was pushed, with the
    shell's "not found" or "Syntax error"; say so before pushing anything, with the target that
    fits. Judged by the runner's ELF header against every ABI the device lists and its
    `uname -m`; a device that reports nothing edgepack knows is not judged."""
    arch = runner.arch
    runs = device_archs(info.abis, info.machine)
    if arch is None or not runs or arch in runs:
        return
    facts = [f"ABIs {', '.join(info.abis)}"] if info.kind == "android" and info.abis else []
    facts += [f"uname -m {info.machine}"] if info.machine else []
    reported = "; ".join(facts) or ", ".join(info.abis)
    fits = _fitting_target(info, runs)
    fix = (f"use --runner-target {fits}" if fits
           else "no runner target edgepack builds fits it")
    raise EdgepackError(
        f"{serial} runs {_describe_archs(runs)} programs ({reported}), but the {runner.target} "
        f"runner is built for {arch.describe()} and would not start there; {fix}",
        ExitCode.DEVICE,
    )


def _describe_archs(archs: set[Arch]) -> str:
    return " and ".join(sorted(a.describe() for a in archs))


def _fitting_target(info: DeviceInfo, runs: set[Arch]) -> str | None:
    candidates = [info.runner_target]
    candidates += [t.name for t in map(target_for_android_abi, info.abis) if t is not None]
    if info.kind != "android":
        linux = target_for_linux_machine(info.machine or "")
        candidates.append(linux.name if linux else None)
    for name in candidates:
        target = TARGETS.get(name or "")
        if target is not None and target_arch(target) in runs:
            return target.name
    return None


def check_glibc(serial: str, info: DeviceInfo, runner: RunnerBuild) -> None:
    """A runner linked against a newer glibc than the board's fails to start with a loader
    message; say so before pushing anything, with the build that fits."""
    if not (info.glibc and runner.requires_glibc):
        return
    glibc = version_key(info.glibc)
    if glibc < version_key(runner.requires_glibc):
        fix = (f"rebuild it for glibc {ZIG_GLIBC}: `edgepack runner build --target "
               f"{runner.target} --compiler zig`" if glibc >= version_key(ZIG_GLIBC)
               else f"onnxruntime's own Linux library needs glibc {ZIG_GLIBC}")
        raise EdgepackError(
            f"{serial} has glibc {info.glibc}, but the {runner.target} runner needs "
            f"{runner.requires_glibc} or newer (built with {runner.compiler or 'gcc'}); {fix}",
            ExitCode.DEVICE,
        )


def _staged_dirs(bundle: Bundle, runner: RunnerBuild, paths: tuple[str, str, str]
                 ) -> list[DirSync]:
    """What the device must hold: the runner's directory and the bundle's."""

    bin_dir, bundle_dir, _ = paths
    runner_files = [
        LocalFile(f.name, runner.directory / f.name, f.sha256, f.size, f.executable)
        for f in runner.files
    ]
    # The manifest travels too: with it, the bundle on the device can be checked on its own.
    manifest_path = bundle.path / MANIFEST
    bundle_files = [
        LocalFile(f.path, bundle.path / f.path, f.sha256, f.size) for f in bundle.manifest.files
    ] + [LocalFile(MANIFEST, manifest_path, bundle.sha256, manifest_path.stat().st_size)]
    return [DirSync(runner_files, bin_dir, f"runner {runner.target}"),
            DirSync(bundle_files, bundle_dir, f"bundle {bundle.name}")]


def _stage(device: Device, dirs: list[DirSync], surveyed: str | None,
           listener: DeployListener) -> Transfer:

    def free() -> int | None:
        return device.free_bytes(DEVICE_ROOT)

    stats = sync_dirs(device, dirs, listener.transfer(), free, surveyed)
    return Transfer(
        files_pushed=sum(s.files_pushed for s in stats),
        bytes_pushed=sum(s.bytes_pushed for s in stats),
        files_skipped=sum(s.files_skipped for s in stats),
        bytes_skipped=sum(s.bytes_skipped for s in stats),
        push_s=sum(s.seconds for s in stats),
    )


def _runner_result(
    serial: str, shell: ShellResult, elapsed: float, timeout_s: float
) -> RunnerResult:

    code, stdout, stderr = shell.exit_code, shell.stdout, shell.stderr
    if code in (124, 137) and elapsed >= timeout_s - 1:
        raise EdgepackError(
            f"{serial}: the runner hung past the timeout of {timeout_s:g} s and was killed on the "
            "device; raise --timeout if the model is this slow",
            ExitCode.DEVICE,
        )
    try:
        return parse_runner_output(stdout, code, stderr)
    except EdgepackError as exc:
        # Keeps a bad-input verdict (an injected fault that does not fit the model).
        raise EdgepackError(f"{serial}: {exc.message}", exc.exit_code) from None
