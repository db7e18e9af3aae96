"""What a run produced, as data: the records every stage after the run reads.

A deploy makes a `DeployResult` (one bundle on one device: a `SetResult` per input set, the
`Transfer`); a bench makes `BenchRun`s (one per device, bundle, configuration and repeat) and a
`BenchResult`, summed up per device, bundle and configuration as `GroupSummary`s. None of this
does I/O or knows how a run was made, so the history store, regression verdicts and reports
depend on this module and not on the threaded bench loop or the adb deploy that fill it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from edgepack.compare import OutputVerdict
from edgepack.devices.base import DeviceInfo
from edgepack.devices.state import DeviceState
from edgepack.errors import EdgepackError, ExitCode
from edgepack.images_out import SavedImage
from edgepack.labels import TopClasses
from edgepack.profile import EpPlacement, OpTime, merge_op_times
from edgepack.runner.result import RSS_PROCESS, RunConfig, RunnerResult, parse_cpu_mask
from edgepack.stats import LatencyStats, RepeatDrift, latency_stats, repeat_drift

if TYPE_CHECKING:
    from edgepack.validity import ValidityRules


class RunStatus(StrEnum):
    """How a run (or a group of runs) ended. A StrEnum: stored and printed as its value."""

    PASS = "pass"
    FAIL = "fail"  # outputs beyond tolerance
    ERROR = "error"  # the run did not finish


# ---------------------------------------------------------------------------- one deploy


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
    top_classes: list[TopClasses] = field(default_factory=list)  # --labels
    images: list[SavedImage] = field(default_factory=list)  # --save-images

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.sets)

    @property
    def verdicts(self) -> list[OutputVerdict]:
        return [v for s in self.sets for v in s.verdicts]

    @property
    def ep_requested(self) -> str:
        return self.config.ep

    @property
    def ep_used(self) -> str | None:
        """The provider the runner ran on: the first set's (they share one configuration)."""
        return self.sets[0].runner.ep_used if self.sets else None

    @property
    def ep_fallback(self) -> str | None:
        """A sentence when a set ran on another provider than the one asked for, else None."""
        return ep_fallback_text(self.config.ep, [s.runner for s in self.sets])


def ep_fallback_text(asked: str, runners: Sequence[RunnerResult]) -> str | None:
    """`ep fallback: asked for xnnpack, ran on cpu: <the runner's reason>`, or None when every
    runner ran on what was asked. A runner that said nothing about it is still judged by its
    ep_used: the label must never claim a provider that did not run."""
    for runner in runners:
        if runner.ep_used != asked:
            why = runner.ep_fallback_reason or "the runner gave no reason"
            return f"ep fallback: asked for {asked}, ran on {runner.ep_used}: {why}"
    return None


def ep_label(asked: str, used: str | None) -> str:
    """How reports name a run's provider: `xnnpack` when it ran, `xnnpack -> cpu (fallback)`
    when another ran, `xnnpack (not run)` when nothing ran."""
    if used is None:
        return f"{asked} (not run)"
    return asked if used == asked else f"{asked} -> {used} (fallback)"



# Time one run may take beyond the runner's own timeout (push, pull, state probes) before the
# bench gives the device up as hung.
RUN_GRACE_S = 300.0




# ---------------------------------------------------------------------------- parameters


def config_key(config: RunConfig) -> str:
    """What makes two runs comparable, as a short readable key: `cpu/t4`, `xnnpack/t1/cpu=f0`,
    `cpu/t1/profile`.

    Iterations and warmup are left out on purpose: they change how many samples there are, not
    what one sample measures. Profiling is in: it slows every iteration (shufflenet +31 %), so a
    profiled run compared with a plain one would read as a regression. It comes last, which the
    history's migration to schema 3 relies on when it adds it to stored keys.
    """
    key = f"{config.ep}/t{config.threads}"
    if config.optimization != "all":
        key += f"/opt={config.optimization}"
    if config.cpu_affinity:
        key += f"/cpu={config.cpu_affinity.lower().removeprefix('0x')}"
    if config.nnapi_fp16:
        key += "/fp16"
    if config.nnapi_cpu_disabled:
        key += "/no-cpu"
    if config.profile:
        key += "/profile"
    return key


@dataclass(frozen=True)
class BenchParams:
    repeat: int = 3
    iterations: int = 50
    warmup: int = 1
    cooldown_s: float = 0.0
    threads: tuple[int, ...] = (1,)
    eps: tuple[str, ...] = ("cpu",)
    cpu_affinity: str | None = None
    optimization: str = "all"
    profile: bool = False
    top_ops: int = 10
    timeout_s: float = 600.0  # one runner invocation
    run_deadline_s: float | None = None  # one whole run; None: see deadline_s
    probe_state: bool = True
    strict_ep: bool = False  # a provider fallback is a device failure (exit 3), not a warning
    # Per-bundle providers over `eps`: (bundle name or path as given, its providers), so a
    # detector on NNAPI and a parser on CPU run in one bench.
    bundle_eps: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # The bundles `--ep BUNDLE=EP` named: each must be one of the bench's (lab.toml may name
    # bundles a bench does not run).
    eps_named: tuple[str, ...] = ()
    # "ab": an `edgepack ab` session, whose runs alternate between two bundles in ABBA rounds
    # (a run's `repeat` is its place in the session, so round k is runs 2k and 2k + 1).
    kind: str = "bench"
    # Validity (edgepack.validity), MLPerf's min query count / min duration / max duration: a
    # run timing fewer iterations or seconds (the sum of its iterations) is invalid, one past
    # the cap (wall time) semivalid. They judge, as `ab`'s do; --iterations decides how long a
    # run is (the runner's own --min-seconds counts loop time, overhead included, so a run it
    # stopped could still time less than the minimum).
    min_iterations: int = 1
    min_seconds: float = 0.0
    max_seconds: float | None = None
    # --cooldown auto: before each run, wait (bounded) until the device's thermal status and
    # battery temperature are back to where its first run started (bench.cool_down).
    cooldown_auto: bool = False

    def __post_init__(self) -> None:
        if self.repeat < 1 or self.iterations < 1 or self.warmup < 0:
            raise EdgepackError("--repeat and --iterations must be >= 1, --warmup >= 0")
        if self.cooldown_s < 0:
            raise EdgepackError("--cooldown must be >= 0 seconds")
        self.rules()  # the minimums and the cap: fail before any device runs
        if self.iterations < self.min_iterations:
            raise EdgepackError(f"--iterations {self.iterations} is below --min-iterations "
                                f"{self.min_iterations}: every run would be invalid")
        if not self.threads or not self.eps:
            raise EdgepackError("--threads and --ep need at least one value each")
        if self.cpu_affinity is not None:
            parse_cpu_mask(self.cpu_affinity)
        self.configs(None)  # RunConfig checks the EPs and levels: fail before any device runs
        for _, eps in self.bundle_eps:
            self.configs(None, eps)

    def rules(self) -> ValidityRules:
        """What every run of this bench is judged against."""
        from edgepack.validity import ValidityRules

        return ValidityRules(min_iterations=self.min_iterations, min_seconds=self.min_seconds,
                             max_seconds=self.max_seconds)

    def configs(self, affinity: str | None, eps: Sequence[str] | None = None
                ) -> list[RunConfig]:
        """The sweep, EP-major; `affinity` is a device's own mask (lab.toml) over the default,
        `eps` a bundle's own providers (eps_for) over the sweep's."""
        return [
            RunConfig(
                warmup=self.warmup, iterations=self.iterations, threads=threads, ep=ep,
                optimization=self.optimization, profile=self.profile, timeout_s=self.timeout_s,
                cpu_affinity=affinity or self.cpu_affinity,
            )
            for ep in (eps or self.eps)
            for threads in self.threads
        ]

    def eps_for(self, name: str, path: str) -> tuple[str, ...]:
        """A bundle's providers: its own (named by manifest name or by path) or the sweep's."""
        from pathlib import Path

        for key, eps in self.bundle_eps:
            if key == name or (Path(key).resolve() == Path(path).resolve()):
                return eps
        return self.eps

    def deadline_s(self, test_sets: int) -> float:
        """How long one run may go unanswered before its device is given up as hung: the
        runner's timeout for each test set (deploy runs them one by one) plus push and pull."""
        if self.run_deadline_s is not None:
            return self.run_deadline_s
        return self.timeout_s * max(test_sets, 1) + RUN_GRACE_S


# ---------------------------------------------------------------------------- records


@dataclass(frozen=True)
class BundleRef:
    name: str
    sha256: str
    path: str


@dataclass(frozen=True)
class BenchRun:
    """One run: one bundle, one configuration, one repeat, on one device."""

    serial: str
    bundle_name: str
    bundle_sha256: str
    config: RunConfig
    config_key: str
    repeat: int
    status: RunStatus
    started_at: str
    finished_at: str
    device: DeviceInfo | None = None
    result: DeployResult | None = None
    error: str | None = None
    state_before: DeviceState | None = None
    state_after: DeviceState | None = None
    warnings: list[str] = field(default_factory=list)
    profile: list[OpTime] = field(default_factory=list)
    work_dir: str | None = None  # where the run's outputs were kept (test_data_set_<k>/)
    # With --profile: where the nodes ran (not stored in the history, which keeps `profile`).
    placement: EpPlacement | None = None
    # --cooldown auto: seconds waited before the run, and whether the wait gave up (the device
    # had not come back to its starting state: the run is semivalid).
    cooldown_waited_s: float = 0.0
    cooldown_cut: bool = False

    @property
    def latencies_ms(self) -> list[float]:
        return list(self.result.sets[0].runner.latencies_ms) if self.result else []


@dataclass(frozen=True)
class OutputCheck:
    set_index: int
    verdict: OutputVerdict


@dataclass(frozen=True)
class GroupSummary:
    """Every repeat of one bundle and configuration on one device, summed up."""

    serial: str
    device: DeviceInfo | None
    bundle_name: str
    bundle_sha256: str
    config: RunConfig
    config_key: str
    status: RunStatus  # FAIL if a run's outputs differ, else ERROR if a run failed, else PASS
    runs: int
    completed: int
    stats: LatencyStats | None  # over every iteration of every completed repeat
    repeat_medians_ms: list[float]
    session_create_ms: float | None  # median over repeats
    first_inference_ms: float | None
    peak_rss_mb: float | None  # the largest over repeats
    ep_used: str | None
    engine: str | None
    checks: list[OutputCheck]  # a failing run's, when one failed
    errors: list[str]
    warnings: list[str]
    profile: list[OpTime]  # every completed repeat's, merged
    repeat_stats: list[LatencyStats] = field(default_factory=list)  # each completed repeat's
    threads_used: int | None = None  # what onnxruntime ran, measured by the runner
    # What peak_rss_mb covers: the runner's whole process, or (Python engine) what the session
    # added to a process that also holds the interpreter; the two are not comparable.
    peak_rss_scope: str | None = None
    placement: EpPlacement | None = None  # the last profiled repeat's, with --profile

    @property
    def peak_rss_text(self) -> str:
        if self.peak_rss_mb is None:
            return "-"
        scope = "" if self.peak_rss_scope in (None, RSS_PROCESS) else f" ({self.peak_rss_scope})"
        return f"{self.peak_rss_mb:.1f}{scope}"

    # Stability is judged within each repeat: pooled, repeats that drifted apart would make a
    # group of quiet runs look unstable, and the two have different causes.
    @property
    def unstable(self) -> bool:
        return any(s.unstable for s in self.repeat_stats)

    @property
    def spread(self) -> float | None:
        """The widest repeat's IQR / median, what `unstable` is judged on."""
        return max((s.spread for s in self.repeat_stats if s.count), default=None)

    @property
    def outliers(self) -> int:
        """Iterations beyond their own repeat's outlier fence (stats.OUTLIER_RULE)."""
        return sum(s.outliers for s in self.repeat_stats)

    @property
    def drift(self) -> RepeatDrift | None:
        """How far the repeats' medians are apart; None below two repeats."""
        return repeat_drift(self.repeat_stats)

    @property
    def drifting(self) -> bool:
        return self.drift is not None and self.drift.drifting

    @property
    def model(self) -> str:
        return (self.device.model if self.device and self.device.model else self.serial)

    @property
    def ep_requested(self) -> str:
        return self.config.ep

    @property
    def ep_text(self) -> str:
        """The provider asked for and the one that ran, as every report labels a row."""
        return ep_label(self.config.ep, self.ep_used)


@dataclass(frozen=True)
class BenchResult:
    session: str
    label: str | None
    params: BenchParams
    bundles: list[BundleRef]
    serials: list[str]
    runs: list[BenchRun]
    started_at: str
    finished_at: str
    wall_s: float
    interrupted: bool = False

    def groups(self) -> list[GroupSummary]:
        return summarize(self.runs)

    @property
    def failed_devices(self) -> dict[str, str]:
        """Devices with an error, and the first error each had."""
        failed: dict[str, str] = {}
        for run in self.runs:
            if run.status is RunStatus.ERROR and run.serial not in failed:
                failed[run.serial] = run.error or "error"
        return failed

    @property
    def exit_code(self) -> ExitCode:
        """1 when outputs differ anywhere; else 3 when a device failed; else 0."""
        if any(r.status is RunStatus.FAIL for r in self.runs):
            return ExitCode.MISMATCH
        if any(r.status is RunStatus.ERROR for r in self.runs):
            return ExitCode.DEVICE
        return ExitCode.OK


@dataclass(frozen=True)
class BenchOrder:
    """What a BenchResult lists, in the order it lists it (see bench_order)."""

    serials: list[str]
    bundles: list[str]  # sha256s
    runs: list[BenchRun]


def bench_order(
    runs: Iterable[BenchRun], serials: Sequence[str] = (), bundles: Sequence[str] = ()
) -> BenchOrder:
    """The one order of a BenchResult, for whoever builds one: run_bench as its runs end, the
    history store as it reads a session back.

    Devices and bundles (sha256s) keep the order the bench was given them (`serials`,
    `bundles`); one the runs name that was not given follows, in the order the runs first name
    it, and one no run names is left out. Runs go by device, then bundle, then in the order that
    device ran them: `runs` must come in the order they ran (as they ended, or as they were
    stored). A device runs its plan one run at a time, configurations then repeats, so that is
    its sweep's order, even for a sweep that lists one configuration twice. Never the order in
    which runs of different devices ended: devices run in parallel, so that changes from one
    bench to the next, and a report read back from the store would list its runs differently
    from the one the bench wrote.
    """
    runs = list(runs)
    named_serials = dict.fromkeys(r.serial for r in runs)
    named_bundles = dict.fromkeys(r.bundle_sha256 for r in runs)
    devices = [s for s in dict.fromkeys([*serials, *named_serials]) if s in named_serials]
    shas = [b for b in dict.fromkeys([*bundles, *named_bundles]) if b in named_bundles]
    device_at = {s: i for i, s in enumerate(devices)}
    bundle_at = {b: i for i, b in enumerate(shas)}
    # sorted() is stable: within one device and bundle the runs keep the order they ran in.
    ordered = sorted(runs, key=lambda r: (device_at[r.serial], bundle_at[r.bundle_sha256]))
    return BenchOrder(devices, shas, ordered)


def summarize(runs: Sequence[BenchRun]) -> list[GroupSummary]:
    import statistics

    groups: dict[tuple[str, str, str], list[BenchRun]] = {}
    for run in runs:
        groups.setdefault((run.serial, run.bundle_sha256, run.config_key), []).append(run)
    summaries = []
    for members in groups.values():
        first = members[0]
        done = [r for r in members if r.result is not None]
        samples = [x for r in done for x in r.latencies_ms]
        runners = [r.result.sets[0].runner for r in done if r.result]
        failing = next((r for r in done if r.status is RunStatus.FAIL), None)
        shown = failing or (done[0] if done else None)
        # A wrong output outranks a device error: it is the finding a lab exists to make.
        status = (RunStatus.FAIL if failing
                  else RunStatus.ERROR if any(r.status is RunStatus.ERROR for r in members)
                  else RunStatus.PASS)
        rss = [x.peak_rss_kb_end for x in runners if x.peak_rss_kb_end]
        device = next((r.device for r in members if r.device is not None), None)
        warnings = list(dict.fromkeys(w for r in members for w in r.warnings))
        # From the samples, not the stored stats: results stored by an older edgepack lack the
        # spread that stability and drift are judged on.
        repeats = [latency_stats(r.latencies_ms) for r in done if r.latencies_ms]
        summaries.append(GroupSummary(
            serial=first.serial,
            device=device,
            bundle_name=first.bundle_name,
            bundle_sha256=first.bundle_sha256,
            config=first.config,
            config_key=first.config_key,
            status=status,
            runs=len(members),
            completed=len(done),
            stats=latency_stats(samples) if samples else None,
            repeat_medians_ms=[s.median_ms for s in repeats],
            session_create_ms=(statistics.median(x.session_create_ms for x in runners)
                               if runners else None),
            first_inference_ms=(statistics.median(x.first_inference_ms for x in runners)
                                if runners else None),
            peak_rss_mb=max(rss) / 1024 if rss else None,
            threads_used=runners[0].threads_used if runners else None,
            peak_rss_scope=runners[0].peak_rss_scope if runners else None,
            ep_used=runners[0].ep_used if runners else None,
            engine=shown.result.engine if shown and shown.result else None,
            checks=[OutputCheck(s.index, v) for s in shown.result.sets for v in s.verdicts]
            if shown and shown.result else [],
            errors=list(dict.fromkeys(r.error for r in members if r.error)),
            warnings=warnings,
            profile=merge_op_times([r.profile for r in done if r.profile]),
            repeat_stats=repeats,
            placement=next((r.placement for r in reversed(done) if r.placement), None),
        ))
    return summaries


# ---------------------------------------------------------------------------- listeners


@dataclass(frozen=True)
class BenchPlan:
    session: str
    label: str | None
    params: BenchParams
    bundles: list[BundleRef]
    serials: list[str]
    runs_per_device: dict[str, int]
    started_at: str


class BenchListener:
    """Hears the bench as it goes; every method is called on run_bench's caller's thread."""

    def on_start(self, plan: BenchPlan) -> None:
        pass

    def on_run_start(self, serial: str, bundle: BundleRef, config: RunConfig, repeat: int) -> None:
        pass

    def on_run_end(self, run: BenchRun) -> None:
        pass

    def on_device_end(self, serial: str, error: str | None) -> None:
        pass

    def on_end(self, result: BenchResult) -> None:
        pass


