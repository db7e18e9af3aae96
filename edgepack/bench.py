"""Many devices, repeats and sweeps: the bench loop, and who listens to it.

Shaped after TF Lite's benchmark tool, three pieces are kept apart:

- `BenchParams`: what to run (repeats, iterations, cooldown, the threads x EP sweep, affinity);
- `run_bench`: the loop, one worker thread per device, all in parallel. A device that fails,
  hangs or vanishes turns into error records for that device only; the others go on;
- listeners (`BenchListener`): who hears about each run as it ends: the console, the history
  store, the reports. They are called on the calling thread only, so none of them needs a lock.

A device is a `Target`: a serial, a callable that runs one bundle with one configuration and
returns a `DeployResult`, and an optional shell used to read the device's state (battery, thermal
status, CPU frequencies) before and after every run. Real targets are executors
(edgepack.executors) run through `run_bundle`, as `edgepack run` and `edgepack deploy` run them:
`executor_target` makes one; the callable stays so that a test can script a device.
"""

from __future__ import annotations

import queue
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepack.devices.base import DeviceInfo
from edgepack.devices.lock import release_held_locks
from edgepack.devices.state import (
    PROBE_TIMEOUT_S,
    ShellFn,
    local_shell,
    now_iso,
    probe_state,
    state_warnings,
)
from edgepack.errors import EdgepackError, ExitCode, short
from edgepack.profile import EpPlacement, OpTime, parse_placement, parse_profile
from edgepack.records import (
    BenchListener,
    BenchParams,
    BenchPlan,
    BenchResult,
    BenchRun,
    BundleRef,
    DeployResult,
    RunStatus,
    bench_order,
    config_key,
)
from edgepack.runner.result import RunConfig

if TYPE_CHECKING:
    from edgepack.bundle import Bundle
    from edgepack.deploy import DeployOptions
    from edgepack.devices.base import Device
    from edgepack.devices.state import DeviceState
    from edgepack.executors import Executor

RunFn = Callable[["Bundle", RunConfig, Path], "DeployResult"]

# ---------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """One device the bench runs on."""

    serial: str
    run: RunFn  # (bundle, config, work_dir) -> DeployResult; outputs kept under work_dir
    describe: Callable[[], DeviceInfo] | None = None
    shell: ShellFn | None = None  # for state probes; None: state is not read
    cpu_affinity: str | None = None  # this device's own mask, over BenchParams.cpu_affinity


def executor_target(serial: str, executor: Executor,
                    describe: Callable[[], DeviceInfo] | None = None,
                    shell: ShellFn | None = None, cpu_affinity: str | None = None) -> Target:
    """A target whose every run is `run_bundle(executor, ...)`, outputs kept in the run's
    directory for the reports."""

    def run(bundle: Bundle, config: RunConfig, work_dir: Path) -> DeployResult:
        from edgepack.executors import run_bundle

        return run_bundle(executor, bundle, config, work_dir)

    return Target(serial, run, describe=describe, shell=shell, cpu_affinity=cpu_affinity)


def host_target(engine: str = "auto") -> Target:
    """This machine as a bench target, with the executor `edgepack run --engine` uses."""
    from edgepack.executors import HostExecutor, host_info

    return executor_target("host", HostExecutor(engine), describe=host_info, shell=local_shell)


def device_target(device: Device, options: DeployOptions | None = None,
                  cpu_affinity: str | None = None) -> Target:
    """A device (adb's, or any that speaks the Device protocol), with the executor `edgepack
    deploy` uses."""
    from edgepack.deploy import DeployOptions, DeviceExecutor

    opts = options or DeployOptions()
    executor = DeviceExecutor(device, opts.runner_target, opts.keep, opts.break_lock)
    return executor_target(device.serial, executor, describe=device.info, shell=device.shell,
                           cpu_affinity=cpu_affinity)


def missing_target(name: str, reason: str) -> Target:
    """A device that was asked for and is not there: every run of it is an error naming why."""

    def unavailable(*_: object) -> Any:
        raise EdgepackError(reason, ExitCode.DEVICE)

    return Target(name, unavailable, describe=unavailable)


# ---------------------------------------------------------------------------- the loop


@dataclass(frozen=True)
class _Item:
    bundle: int
    config: int
    repeat: int


@dataclass(frozen=True)
class _Event:
    kind: str  # "start", "run" or "end"
    serial: str
    item: _Item | None = None
    run: BenchRun | None = None
    error: str | None = None


def run_bench(
    bundles: Sequence[Bundle],
    targets: Sequence[Target],
    params: BenchParams,
    listeners: Sequence[BenchListener] = (),
    *,
    work_dir: Path,
    label: str | None = None,
    session: str | None = None,
) -> BenchResult:
    """Run every bundle x configuration x repeat on every target, the targets in parallel."""
    serials = [t.serial for t in targets]
    if len(set(serials)) != len(serials):
        raise EdgepackError(f"a device is listed twice: {', '.join(serials)}")
    if not targets:
        raise EdgepackError("no devices to run on")
    refs = [BundleRef(b.name, b.sha256, str(b.path)) for b in bundles]
    for key in params.eps_named:
        if not any(_names(key, b) for b in bundles):
            raise EdgepackError(f"--ep {key}=...: no bundle of this bench is named {key!r} "
                                f"(bundles: {', '.join(b.name for b in bundles)})")
    # Configurations per device and bundle: a device's affinity, a bundle's own providers.
    bundle_eps = [params.eps_for(b.name, str(b.path)) for b in bundles]
    configs = {(t.serial, b): params.configs(t.cpu_affinity, bundle_eps[b])
               for t in targets for b in range(len(bundles))}
    plans = {t.serial: [_Item(b, c, r) for b in range(len(bundles))
                        for c in range(len(configs[t.serial, b])) for r in range(params.repeat)]
             for t in targets}
    plan = BenchPlan(session or uuid.uuid4().hex[:12], label, params, refs, serials,
                     {s: len(p) for s, p in plans.items()}, now_iso())
    t0 = time.perf_counter()
    for listener in listeners:
        listener.on_start(plan)

    events: queue.Queue[_Event] = queue.Queue()
    stops = {t.serial: threading.Event() for t in targets}
    workers: list[threading.Thread] = []
    for target in targets:
        # Daemon threads: a device hung inside adb must not keep the process alive at exit.
        worker = threading.Thread(
            target=_worker, name=f"bench-{target.serial}", daemon=True,
            args=(target, bundles, refs,
                  [configs[target.serial, b] for b in range(len(bundles))],
                  plans[target.serial], params,
                  Path(work_dir), events.put, stops[target.serial]),
        )
        worker.start()
        workers.append(worker)

    pending = {s: list(p) for s, p in plans.items()}
    in_flight: dict[str, tuple[_Item, float]] = {}  # serial -> (item, monotonic deadline)
    deadlines = [params.deadline_s(len(b.manifest.test_sets)) for b in bundles]
    devices: dict[str, DeviceInfo] = {}
    done: list[BenchRun] = []  # as runs end; records.bench_order puts them in plan order
    active = set(serials)

    def record(run: BenchRun) -> None:
        done.append(run)
        for listener in listeners:
            listener.on_run_end(run)

    def give_up(serial: str, reason: str) -> None:
        stops[serial].set()
        active.discard(serial)
        in_flight.pop(serial, None)
        for item in pending.pop(serial, []):
            record(_error_run(serial, refs[item.bundle], configs[serial, item.bundle][item.config],
                              item.repeat, reason, devices.get(serial)))
        for listener in listeners:
            listener.on_device_end(serial, reason)

    def finish(interrupted: bool) -> BenchResult:
        result = BenchResult(plan.session, label, params, refs, serials,
                             bench_order(done, serials,
                                         [r.sha256 for r in refs]).runs,
                             plan.started_at, now_iso(), time.perf_counter() - t0, interrupted)
        for listener in listeners:
            listener.on_end(result)
        return result

    try:
        while active:
            wait = 0.5
            if in_flight:
                soonest = min(t for _, t in in_flight.values())
                wait = max(0.01, min(wait, soonest - time.monotonic()))
            try:
                ev: _Event | None = events.get(timeout=wait)
            except queue.Empty:
                ev = None
            if ev is not None and ev.serial in active:
                if ev.kind == "start" and ev.item is not None:
                    in_flight[ev.serial] = (ev.item,
                                            time.monotonic() + deadlines[ev.item.bundle])
                    for listener in listeners:
                        listener.on_run_start(ev.serial, refs[ev.item.bundle],
                                              configs[ev.serial, ev.item.bundle][ev.item.config],
                                              ev.item.repeat)
                elif ev.kind == "run" and ev.item is not None and ev.run is not None:
                    in_flight.pop(ev.serial, None)
                    pending[ev.serial].remove(ev.item)
                    if ev.run.device is not None:
                        devices[ev.serial] = ev.run.device
                    record(ev.run)
                elif ev.kind == "end":
                    if pending.get(ev.serial):
                        give_up(ev.serial, ev.error or "the device stopped")
                    else:
                        active.discard(ev.serial)
                        for listener in listeners:
                            listener.on_device_end(ev.serial, ev.error)
            now = time.monotonic()
            for serial, (item, deadline) in list(in_flight.items()):
                if now > deadline:
                    give_up(serial, f"no answer within {deadlines[item.bundle]:g} s: the device "
                                    "hung or is too slow for --timeout; its other runs were "
                                    "skipped")
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (cli.app.Terminated)
        for stop in stops.values():
            stop.set()
        try:
            # What finished is kept (history has it already); the listeners close what they
            # opened.
            finish(interrupted=True)
        finally:
            # The workers are still inside their deploys, which the interrupt never reaches:
            # their device locks and run scratch are released from here.
            release_held_locks(workers)
        raise
    return finish(interrupted=False)


def _worker(
    target: Target,
    bundles: Sequence[Bundle],
    refs: list[BundleRef],
    configs: list[list[RunConfig]],  # per bundle
    items: list[_Item],
    params: BenchParams,
    work_dir: Path,
    emit: Callable[[_Event], None],
    stop: threading.Event,
) -> None:
    try:
        _work(target, bundles, refs, configs, items, params, work_dir, emit, stop)
    except BaseException as exc:  # the loop waits for every worker's "end": always send one
        emit(_Event("end", target.serial, error=f"bench worker stopped: {_reason(exc)}"))


def _work(
    target: Target,
    bundles: Sequence[Bundle],
    refs: list[BundleRef],
    configs: list[list[RunConfig]],  # per bundle
    items: list[_Item],
    params: BenchParams,
    work_dir: Path,
    emit: Callable[[_Event], None],
    stop: threading.Event,
) -> None:
    serial = target.serial
    try:
        info = target.describe() if target.describe else None
    except Exception as exc:
        emit(_Event("end", serial, error=f"unavailable: {_reason(exc)}"))
        return
    # --cooldown auto waits for the device to come back to where its first run started.
    start = (probe_state(target.shell) if params.cooldown_auto and target.shell is not None
             else None)
    for n, item in enumerate(items):
        waited, cut = 0.0, False
        if n and params.cooldown_auto:
            waited, gave_up = cool_down(target.shell, start, stop=stop)
            cut = gave_up is not None
        elif n and params.cooldown_s:
            # Lets a phone shed the heat of the last run, so runs start from the same state.
            stop.wait(params.cooldown_s)
            waited = params.cooldown_s
        if stop.is_set():
            return
        emit(_Event("start", serial, item))
        config = configs[item.bundle][item.config]
        run_dir = (work_dir / _safe(serial) / f"{item.bundle}-{_safe(refs[item.bundle].name)}"
                   / _safe(config_key(config)) / f"r{item.repeat}")
        run = _one_run(target, bundles[item.bundle], refs[item.bundle], config, item.repeat,
                       run_dir, info, params)
        if waited or cut:
            # The history keeps warnings, not these fields: a cut wait is said there too.
            said = ([f"--cooldown auto gave up after {waited:.0f} s: the device had not come "
                     "back to its first run's thermal status and battery temperature"]
                    if cut else [])
            run = replace(run, cooldown_waited_s=waited, cooldown_cut=cut,
                          warnings=[*run.warnings, *said])
        if stop.is_set():
            return
        emit(_Event("run", serial, item, run))
        if run.status is RunStatus.ERROR and not _alive(target):
            emit(_Event("end", serial, error=f"device lost after: {run.error}"))
            return
    emit(_Event("end", serial))


def _one_run(
    target: Target,
    bundle: Bundle,
    ref: BundleRef,
    config: RunConfig,
    repeat: int,
    run_dir: Path,
    info: DeviceInfo | None,
    params: BenchParams,
) -> BenchRun:
    run_dir.mkdir(parents=True, exist_ok=True)
    probe = params.probe_state and target.shell is not None
    before = probe_state(target.shell) if probe and target.shell else None
    started = now_iso()
    result = error = None
    try:
        result = target.run(bundle, config, run_dir)
    except Exception as exc:  # one run's failure is a record, never the bench's end
        error = _reason(exc)
    after = probe_state(target.shell) if probe and target.shell else None
    warnings = state_warnings(before, after)
    fallback = result.ep_fallback if result is not None else None
    if fallback is not None:
        # The row keeps the provider asked for as its key; the warning (and ep_used) say what
        # ran, so no report can show a fallback as the provider.
        warnings.append(fallback)
        if params.strict_ep:
            error = f"--strict-ep: {fallback}"
    profile: list[OpTime] = []
    placement: EpPlacement | None = None
    if result is not None and config.profile:
        path = _profile_path(result, run_dir)
        if path is None:
            warnings.append("profile: the runner wrote no onnxruntime profile")
        else:
            try:
                # The last N model_runs are the timed ones: N latencies were reported.
                profile = parse_profile(path, len(result.sets[0].runner.latencies_ms))
                placement = parse_placement(path, config.ep)
            except EdgepackError as exc:
                warnings.append(f"profile: {exc.message}")
    status = (RunStatus.ERROR if result is None or error is not None
              else RunStatus.PASS if result.passed else RunStatus.FAIL)
    return BenchRun(
        serial=target.serial,
        bundle_name=ref.name,
        bundle_sha256=ref.sha256,
        config=config,
        config_key=config_key(config),
        repeat=repeat,
        status=status,
        started_at=started,
        finished_at=now_iso(),
        device=result.device if result is not None else info,
        result=result,
        error=error,
        state_before=before,
        state_after=after,
        warnings=warnings,
        profile=profile,
        work_dir=str(run_dir),
        placement=placement,
    )


# `--cooldown auto` gives up after this long and says so in the run's validity.
AUTO_COOLDOWN_MAX_S = 120.0
AUTO_COOLDOWN_POLL_S = 2.0
# The battery may be this much warmer than at the session's start and count as cooled down:
# dumpsys reports tenths of a degree, and a phone on a desk wanders by a few.
AUTO_COOLDOWN_SLACK_C = 0.5


def cool_down(shell: ShellFn | None, start: DeviceState | None,
              clock: Callable[[], float] = time.monotonic,
              stop: threading.Event | None = None) -> tuple[float, float | None]:
    """`--cooldown auto` (bench's and ab's): wait until the thermal status and the battery's
    temperature are back to `start` (the session's first probe), at most AUTO_COOLDOWN_MAX_S.
    Returns the seconds waited and, when it gave up, after how long. Nothing to wait for on a
    device that reports neither (the host)."""
    if shell is None or start is None or (start.thermal_status is None
                                          and start.battery_temp_c is None):
        return 0.0, None
    t0 = clock()
    while True:
        now = probe_state(shell)
        if now is not None and cooled(start, now):
            return clock() - t0, None
        waited = clock() - t0
        if waited >= AUTO_COOLDOWN_MAX_S or (stop is not None and stop.is_set()):
            return waited, waited
        if stop is not None:
            stop.wait(AUTO_COOLDOWN_POLL_S)
        else:
            time.sleep(AUTO_COOLDOWN_POLL_S)


def cooled(start: DeviceState, now: DeviceState) -> bool:
    if (start.thermal_status is not None and now.thermal_status is not None
            and now.thermal_status > start.thermal_status):
        return False
    return not (start.battery_temp_c is not None and now.battery_temp_c is not None
                and now.battery_temp_c > start.battery_temp_c + AUTO_COOLDOWN_SLACK_C)


def _profile_path(result: DeployResult, run_dir: Path) -> Path | None:
    # A host run's profile path is local; a device run's names the device's file, which deploy
    # pulls into the run's directory under the same name.
    named = result.sets[0].runner.profile_file
    candidates = [Path(named), run_dir / Path(named).name] if named else []
    candidates += sorted(run_dir.glob("*.json"))
    return next((p for p in candidates if p.is_file()), None)


def _names(key: str, bundle: Bundle) -> bool:
    return key == bundle.name or Path(key).resolve() == Path(bundle.path).resolve()


def _alive(target: Target) -> bool:
    if target.shell is None:
        return True
    try:
        return target.shell("echo ok", PROBE_TIMEOUT_S).stdout.strip() == "ok"
    except Exception:
        return False


def _error_run(serial: str, ref: BundleRef, config: RunConfig, repeat: int, reason: str,
               device: DeviceInfo | None) -> BenchRun:
    stamp = now_iso()
    return BenchRun(serial, ref.name, ref.sha256, config, config_key(config), repeat,
                    RunStatus.ERROR,
                    stamp, stamp, device, error=f"not run: {reason}")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, EdgepackError):
        return exc.message
    return f"{type(exc).__name__}: {short(exc)}"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text)[:80] or "_"
