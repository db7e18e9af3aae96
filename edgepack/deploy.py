"""One bundle on one device: stage it, run it, collect the outputs, compare them.

A host run takes the same steps as a device run; on the host "staging" is using the bundle where it
lies, and the engine may be the native runner or onnxruntime's Python API.
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from edgepack.bundle import MANIFEST, Bundle
from edgepack.compare import OutputVerdict, compare_outputs, read_outputs

# The device path's own modules (none of them imports adbutils): loaded with this module rather
# than inside deploy(), whose wall time is the device's work.
from edgepack.devices.adb import DEVICE_ROOT
from edgepack.devices.base import DeviceInfo
from edgepack.devices.lock import HeldLock, device_lock
from edgepack.devices.staging import DirSync, LocalFile, survey_command, sync_dirs
from edgepack.errors import EdgepackError, ExitCode
from edgepack.records import DeployResult, SetResult, Transfer
from edgepack.runner.cache import RunnerBuild, find_runner, version_key
from edgepack.runner.local import device_command, run_local
from edgepack.runner.result import RunConfig, RunnerResult, parse_runner_output
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
from edgepack.stats import latency_stats

if TYPE_CHECKING:
    from edgepack.devices.adb import AdbDevice
    from edgepack.devices.base import ShellResult

ENGINES = ("auto", "native", "python")


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


def run_on_host(
    bundle: Bundle, config: RunConfig, engine: str = "auto", work_dir: Path | None = None
) -> DeployResult:
    """Run every test set of a bundle on this machine and judge the outputs.

    With `work_dir` the outputs are kept there (test_data_set_<k>/output_<i>.pb), and so is
    onnxruntime's profile when config.profile asks for one; otherwise both go with a temporary
    directory.
    """
    if engine not in ENGINES:
        raise EdgepackError(f"--engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    started = datetime.now(UTC).isoformat(timespec="seconds")
    t_start = time.perf_counter()
    notes: list[str] = []
    runner = None
    if engine in ("auto", "native"):

        runner = find_runner("host")
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
        root = Path(work_dir) if work_dir is not None else Path(tmp)
        for test_set in bundle.manifest.test_sets:
            out_dir = root / test_set.dir
            cfg = set_config(config, test_set.index)
            t0 = time.perf_counter()
            if runner is not None:

                result = run_local(
                    runner, bundle.predict_path, bundle.set_dir(test_set.index), out_dir, cfg
                )
            else:
                from edgepack.runner.python_engine import run_python

                result = run_python(
                    bundle.predict_path, bundle.set_dir(test_set.index), out_dir, cfg,
                    profile_prefix=str(root / "profile") if cfg.profile else None,
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


# ---------------------------------------------------------------------------- devices over adb


@dataclass(frozen=True)
class DeployOptions:
    runner_target: str | None = None  # overrides what the device's ABI / uname -m selects
    keep: bool = False  # keep the run's directory (outputs, profile) on the device
    break_lock: bool = False
    work_dir: Path | None = None  # where pulled outputs and profiles stay; temporary otherwise


class DeployListener:
    """Hears the stages of a deploy; the CLI draws progress bars, bench logs per device."""

    def stage(self, text: str) -> None:  # noqa: B027 - a no-op by default
        pass

    def transfer(self) -> object | None:
        """A staging.TransferProgress for pushes, or None."""
        return None


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
    device: AdbDevice,
    config: RunConfig,
    options: DeployOptions | None = None,
    listener: DeployListener | None = None,
) -> DeployResult:
    """Push the runner and the bundle (incrementally), run every test set, pull, compare.
    The run's scratch directory on the device goes with the lock, unless options.keep."""
    options = options or DeployOptions()
    listener = listener or DeployListener()
    started = datetime.now(UTC).isoformat(timespec="seconds")
    t_start = time.perf_counter()

    listener.stage(f"{device.serial}: reading device properties")
    info = device.info()
    runner = _runner_for(device.serial, info, options.runner_target)
    run_id = f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    paths = remote_paths(bundle.name, runner.id, run_id)
    lease = config.timeout_s * len(bundle.manifest.test_sets) + 600
    notes: list[str] = []
    dirs = _staged_dirs(bundle, runner, paths)
    # The lock is taken in the same round trip as the survey of what the device holds, and as
    # the removal of scratch that deploys cut off (a device that vanished, a process killed)
    # left behind.
    then = stale_runs_command(f"{DEVICE_ROOT}/runs") + "; " + survey_command(dirs)
    with device_lock(device, DEVICE_ROOT, lease, options.break_lock, then=then) as lock:
        notes += [f"removed the scratch of an unfinished run from the device: runs/{name}"
                  for name in _stale_removed(lock.then_output)]
        if options.keep:
            notes.append(f"kept the run's files on the device in {paths[2]}")
        else:
            lock.on_release(f"rm -rf {shlex.quote(paths[2])}")
        listener.stage(f"{device.serial}: pushing the {runner.target} runner and {bundle.name}")
        transfer = _stage(device, dirs, lock.then_output, listener)
        sets, run_s, pull_s = _run_sets(device, bundle, config, paths, options, listener, lock)
    return DeployResult(
        bundle_name=bundle.name,
        bundle_sha256=bundle.sha256,
        device=info,
        config=config,
        engine="native",
        runner_target=runner.target,
        sets=sets,
        stats=latency_stats(sets[0].runner.latencies_ms),
        started_at=started,
        wall_s=time.perf_counter() - t_start,
        run_s=run_s,
        transfer=replace(transfer, pull_s=pull_s),
        notes=notes,
    )


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


def _stage(device: AdbDevice, dirs: list[DirSync], surveyed: str | None,
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


def _run_sets(
    device: AdbDevice,
    bundle: Bundle,
    config: RunConfig,
    paths: tuple[str, str, str],
    options: DeployOptions,
    listener: DeployListener,
    lock: HeldLock,
) -> tuple[list[SetResult], float, float]:
    """Run the runner once per test set, pull its outputs and judge them; (sets, run seconds,
    pull seconds). Each run starts only while the device lock is still this deploy's."""
    bin_dir, bundle_dir, run_dir = paths
    sets: list[SetResult] = []
    run_s = pull_s = 0.0
    local_root = Path(options.work_dir or tempfile.mkdtemp(prefix="edgepack-deploy-"))
    try:
        for test_set in bundle.manifest.test_sets:
            cfg = set_config(config, test_set.index)
            listener.stage(f"{device.serial}: running input set {test_set.index}")
            remote_out = f"{run_dir}/{test_set.dir}"
            profile = f"{run_dir}/profile_{test_set.index}" if cfg.profile else None
            # Marked before the runner writes anything, so a run cut off is known as scratch.
            mark = "" if options.keep else (
                f" && echo {shlex.quote(lock.token)} > "
                f"{shlex.quote(f'{run_dir}/{SCRATCH_MARK}')}")
            command = lock.guard(
                f"mkdir -p {shlex.quote(remote_out)}{mark} && cd {shlex.quote(run_dir)} && "
                + device_command(bin_dir, f"{bundle_dir}/{bundle.manifest.model.file}",
                                 f"{bundle_dir}/{test_set.dir}", remote_out, cfg, profile)
            )
            t0 = time.perf_counter()
            shell = device.shell(command, timeout=cfg.timeout_s + 60)
            elapsed = time.perf_counter() - t0
            run_s += elapsed
            lock.check_guard(device.serial, shell, f"input set {test_set.index}")
            result = _runner_result(device.serial, shell, elapsed, cfg.timeout_s)

            t0 = time.perf_counter()
            local_out = local_root / test_set.dir
            local_out.mkdir(parents=True, exist_ok=True)
            for i in range(len(result.outputs)):
                device.pull(f"{remote_out}/output_{i}.pb", local_out / f"output_{i}.pb")
            if result.profile_file:
                local_profile = local_root / f"profile_{test_set.index}.json"
                device.pull(result.profile_file, local_profile)
                result = replace(result, profile_file=str(local_profile))
            pull_s += time.perf_counter() - t0
            sets.append(SetResult(test_set.index, result,
                                  judge(bundle, test_set.index, local_out)))
    finally:
        if options.work_dir is None:
            shutil.rmtree(local_root, ignore_errors=True)
    return sets, run_s, pull_s


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
        raise EdgepackError(f"{serial}: {exc.message}", ExitCode.DEVICE) from None
