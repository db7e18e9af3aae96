"""Many devices, repeats and sweeps: the bench loop, and who listens to it.

Shaped after TF Lite's benchmark tool, three pieces are kept apart:

- `BenchParams`: what to run (repeats, iterations, cooldown, the threads x EP sweep, affinity);
- `run_bench`: the loop, one worker thread per device, all in parallel. A device that fails,
  hangs or vanishes turns into error records for that device only; the others go on;
- listeners (`BenchListener`): who hears about each run as it ends: the console, the history
  store, the reports. They are called on the calling thread only, so none of them needs a lock.

A device is a `Target`: a serial, a callable that runs one bundle with one configuration and
returns a `DeployResult` (`deploy(...)` for an adb device, `run_on_host` for this machine), and an
optional shell used to read the device's state (battery, thermal status, CPU frequencies) before
and after every run.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
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
from edgepack.profile import OpTime, parse_profile
from edgepack.records import (
    BenchListener,
    BenchParams,
    BenchPlan,
    BenchResult,
    BenchRun,
    BundleRef,
    DeployResult,
    RunStatus,
    config_key,
)
from edgepack.runner.result import RunConfig, parse_cpu_mask

if TYPE_CHECKING:
    from edgepack.bundle import Bundle
    from edgepack.deploy import DeployOptions
    from edgepack.devices.base import Device

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


def host_target(engine: str = "auto") -> Target:
    """This machine as a bench target, through the same run_on_host that `edgepack run` uses."""
    from edgepack.deploy import host_info

    def run(bundle: Bundle, config: RunConfig, work_dir: Path) -> DeployResult:
        from edgepack.deploy import run_on_host

        with _host_affinity(config.cpu_affinity):
            return run_on_host(bundle, config, engine, work_dir=work_dir)

    return Target("host", run, describe=host_info, shell=local_shell)


@contextmanager
def _host_affinity(mask: str | None) -> Iterator[None]:
    # On Linux sched_setaffinity(0) pins the calling thread only, and the threads onnxruntime
    # creates in the session inherit it: the host's equivalent of `taskset MASK runner`.
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


def device_target(device: Device, options: DeployOptions | None = None,
                  cpu_affinity: str | None = None) -> Target:
    """An adb device (or any Device-protocol one), run through `edgepack.deploy.deploy`."""

    def run(bundle: Bundle, config: RunConfig, work_dir: Path) -> DeployResult:
        from edgepack.deploy import DeployOptions, deploy

        # The run's directory keeps the pulled outputs and profile for the reports.
        opts = dataclasses.replace(options or DeployOptions(), work_dir=work_dir)
        return deploy(bundle, device, config, opts)  # type: ignore[arg-type]

    return Target(device.serial, run, describe=device.info, shell=device.shell,
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
    configs = {t.serial: params.configs(t.cpu_affinity) for t in targets}
    plans = {t.serial: [_Item(b, c, r) for b in range(len(bundles))
                        for c in range(len(configs[t.serial])) for r in range(params.repeat)]
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
            args=(target, bundles, refs, configs[target.serial], plans[target.serial], params,
                  Path(work_dir), events.put, stops[target.serial]),
        )
        worker.start()
        workers.append(worker)

    pending = {s: list(p) for s, p in plans.items()}
    in_flight: dict[str, tuple[_Item, float]] = {}  # serial -> (item, monotonic deadline)
    deadlines = [params.deadline_s(len(b.manifest.test_sets)) for b in bundles]
    devices: dict[str, DeviceInfo] = {}
    done: list[tuple[tuple[int, int, int, int], BenchRun]] = []  # in plan order, for reports
    order = {s: i for i, s in enumerate(serials)}
    active = set(serials)

    def record(item: _Item, run: BenchRun) -> None:
        done.append(((order[run.serial], item.bundle, item.config, item.repeat), run))
        for listener in listeners:
            listener.on_run_end(run)

    def give_up(serial: str, reason: str) -> None:
        stops[serial].set()
        active.discard(serial)
        in_flight.pop(serial, None)
        for item in pending.pop(serial, []):
            record(item, _error_run(serial, refs[item.bundle], configs[serial][item.config],
                                    item.repeat, reason, devices.get(serial)))
        for listener in listeners:
            listener.on_device_end(serial, reason)

    def finish(interrupted: bool) -> BenchResult:
        result = BenchResult(plan.session, label, params, refs, serials,
                             [run for _, run in sorted(done, key=lambda x: x[0])],
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
                                              configs[ev.serial][ev.item.config], ev.item.repeat)
                elif ev.kind == "run" and ev.item is not None and ev.run is not None:
                    in_flight.pop(ev.serial, None)
                    pending[ev.serial].remove(ev.item)
                    if ev.run.device is not None:
                        devices[ev.serial] = ev.run.device
                    record(ev.item, ev.run)
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
    configs: list[RunConfig],
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
    configs: list[RunConfig],
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
    for n, item in enumerate(items):
        if n and params.cooldown_s:
            # Lets a phone shed the heat of the last run, so runs start from the same state.
            stop.wait(params.cooldown_s)
        if stop.is_set():
            return
        emit(_Event("start", serial, item))
        config = configs[item.config]
        run_dir = (work_dir / _safe(serial) / f"{item.bundle}-{_safe(refs[item.bundle].name)}"
                   / _safe(config_key(config)) / f"r{item.repeat}")
        run = _one_run(target, bundles[item.bundle], refs[item.bundle], config, item.repeat,
                       run_dir, info, params)
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
    profile: list[OpTime] = []
    if result is not None and config.profile:
        path = _profile_path(result, run_dir)
        if path is None:
            warnings.append("profile: the runner wrote no onnxruntime profile")
        else:
            try:
                # The last N model_runs are the timed ones: N latencies were reported.
                profile = parse_profile(path, len(result.sets[0].runner.latencies_ms))
            except EdgepackError as exc:
                warnings.append(f"profile: {exc.message}")
    status = (RunStatus.ERROR if result is None
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
    )


def _profile_path(result: DeployResult, run_dir: Path) -> Path | None:
    # A host run's profile path is local; a device run's names the device's file, which deploy
    # pulls into the run's directory under the same name.
    named = result.sets[0].runner.profile_file
    candidates = [Path(named), run_dir / Path(named).name] if named else []
    candidates += sorted(run_dir.glob("*.json"))
    return next((p for p in candidates if p.is_file()), None)


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
