"""Options that several commands share, declared once so they read and behave the same.

Every numeric option carries its range here, checked while the command line is parsed, so a
typo fails at once with the option's name instead of minutes later on a device (or as a
MemoryError). Integers use typer's own min/max; floats use `number()`, because NaN compares
false with every bound and would slip through min/max.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from edgepack.limits import MAX_ITERATIONS, MAX_SECONDS, MAX_THREADS, MIN_TIMEOUT, number_text


def number(
    low: float | None = None,
    high: float | None = None,
    *,
    above: bool = False,
    below: bool = False,
    nonzero: bool = False,
) -> Callable[[float | None], float | None]:
    """A typer callback: the option must be a finite number from `low` to `high`, bounds
    excluded with `above` and `below`, and not 0 with `nonzero`. None (not given) passes."""
    words = []
    if low is not None:
        words.append(f"{'>' if above else '>='} {number_text(low)}")
    if high is not None:
        words.append(f"{'<' if below else '<='} {number_text(high)}")
    if nonzero:
        words.append("other than 0")
    wanted = "a finite number" + (" " + " and ".join(words) if words else "")

    def check(value: float | None) -> float | None:
        if value is None:
            return None
        if (
            not math.isfinite(value)
            or (low is not None and (value <= low if above else value < low))
            or (high is not None and (value >= high if below else value > high))
            or (nonzero and value == 0)
        ):
            raise typer.BadParameter(f"expected {wanted}, not {value:g}")
        return value

    return check


JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]

# How one bundle runs: `run` on the host and `deploy` on a device take the same RunConfig.
WarmupOpt = Annotated[int, typer.Option(
    "--warmup", min=0, max=MAX_ITERATIONS, help="Untimed runs first.")]
IterationsOpt = Annotated[int, typer.Option(
    "--iterations", min=1, max=MAX_ITERATIONS, help="Timed runs.")]
MinSecondsOpt = Annotated[float | None, typer.Option(
    "--min-seconds", callback=number(0, MAX_SECONDS, above=True),
    help="Time runs for at least this long instead.")]
ThreadsOpt = Annotated[int, typer.Option(
    "--threads", min=0, max=MAX_THREADS,
    help="Intra-op threads (0: onnxruntime's default); in the browser, WASM threads.")]
EpOpt = Annotated[str, typer.Option(
    "--ep", help="cpu, xnnpack or nnapi; with --device browser: wasm (= cpu), webgl, webgpu "
    "(onnxruntime-web) or onnxjs (ONNX.js).")]
OptimizationOpt = Annotated[str, typer.Option(
    "--optimization", help="disable, basic, extended or all.")]
ReportOpt = Annotated[Path | None, typer.Option(
    "--report", help="Also write the result as JSON to this file.")]

# ---------------------------------------------------------------------------- bench and regress
# Declared once: `lab_options` gives both commands these, as one edgepack.lab.GivenOptions.

DeviceOpt = Annotated[str | None, typer.Option(
    "--device", help="host, browser (headless Chromium), all (every attached device), or "
    "SERIAL,SERIAL (host and browser may be among them).")]
LabOpt = Annotated[Path | None, typer.Option(
    "--lab", help="A lab.toml: devices, adb servers and defaults.")]
RepeatOpt = Annotated[int | None, typer.Option(
    "--repeat", min=1, help="Runs per device and configuration (default 3).")]
SweepIterationsOpt = Annotated[int | None, typer.Option(
    "--iterations", min=1, max=MAX_ITERATIONS, help="Timed iterations per run (default 50).")]
SweepWarmupOpt = Annotated[int | None, typer.Option(
    "--warmup", min=0, max=MAX_ITERATIONS, help="Untimed runs first (default 1).")]
CooldownOpt = Annotated[str | None, typer.Option(
    "--cooldown", help="Seconds between runs on one device (default 0), or auto: until its "
    "thermal status and battery temperature are back to where its first run started (at most "
    "120 s; the wait is recorded, a wait that gave up makes the run semivalid).")]
# Validity (edgepack.validity), as MLPerf's min query count / min duration / max duration.
MinIterationsOpt = Annotated[int | None, typer.Option(
    "--min-iterations", min=0, max=MAX_ITERATIONS,
    help="A run timing fewer iterations is invalid (default 1).")]
ValidMinSecondsOpt = Annotated[float | None, typer.Option(
    "--min-seconds", callback=number(0, MAX_SECONDS),
    help="A run whose iterations time less than this in all is invalid (default 0).")]
MaxSecondsOpt = Annotated[float | None, typer.Option(
    "--max-seconds", "--max-run-seconds", callback=number(0, MAX_SECONDS, above=True),
    help="A run (one runner invocation, wall time) taking longer than this is semivalid: a "
    "per-run cap, MLPerf's max duration, not the session's limit that ab's --max-seconds is "
    "(default: no cap).")]
SweepThreadsOpt = Annotated[str | None, typer.Option(
    "--threads", help="Intra-op threads; a comma list sweeps, e.g. 1,2,4 (default 1).")]
SweepEpOpt = Annotated[str | None, typer.Option(
    "--ep", help="Execution providers; a comma list sweeps, e.g. cpu,xnnpack (default cpu); "
                 "BUNDLE=EP gives one bundle (manifest name or path) its own. The browser "
                 "takes cpu (its wasm), wasm, webgl, webgpu and onnxjs.")]
PlacementOpt = Annotated[bool, typer.Option(
    "--profile", help="Profile with onnxruntime and say where the nodes ran: how many on the "
                      "provider asked for, in how many partitions, which fell back to the CPU.")]
StrictEpOpt = Annotated[bool, typer.Option(
    "--strict-ep", help="A provider that falls back to another is a device failure (exit 3), "
                        "not a warning.")]
AffinityOpt = Annotated[str | None, typer.Option(
    "--cpu-affinity", help="Pin the runner to CPUs: taskset's hex mask, e.g. f0 (big cores); "
    "over lab.toml's per-device masks.")]
TimeoutOpt = Annotated[float | None, typer.Option(
    "--timeout", callback=number(MIN_TIMEOUT, MAX_SECONDS),
    help="Seconds one runner invocation may take (default 600).")]
EngineOpt = Annotated[str, typer.Option(
    "--engine", help="On the host: auto, native or python.")]
DbOpt = Annotated[Path | None, typer.Option(
    "--db", help="History database (default $EDGEPACK_DB or ~/.local/share/edgepack/history.db).")]
LabelOpt = Annotated[str | None, typer.Option(
    "--label", help="Store the runs under this label (a branch, a commit) for --baseline.")]
ReportDirOpt = Annotated[Path | None, typer.Option(
    "--report-dir", help="Write report.json, junit.xml, report.md and report.html here.")]

# (parameter = GivenOptions field, declaration, default), in the order --help lists them.
LAB_OPTIONS: tuple[tuple[str, Any, Any], ...] = (
    ("device", DeviceOpt, None),
    ("lab", LabOpt, None),
    ("repeat", RepeatOpt, None),
    ("iterations", SweepIterationsOpt, None),
    ("warmup", SweepWarmupOpt, None),
    ("cooldown", CooldownOpt, None),
    ("min_iterations", MinIterationsOpt, None),
    ("min_seconds", ValidMinSecondsOpt, None),
    ("max_seconds", MaxSecondsOpt, None),
    ("threads", SweepThreadsOpt, None),
    ("ep", SweepEpOpt, None),
    ("cpu_affinity", AffinityOpt, None),
    ("timeout", TimeoutOpt, None),
    ("engine", EngineOpt, "auto"),
    ("db", DbOpt, None),
    ("label", LabelOpt, None),
    ("report_dir", ReportDirOpt, None),
    ("strict_ep", StrictEpOpt, False),
)


def lab_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give `command` the options bench and regress share, declared once in LAB_OPTIONS.

    The command takes them as one parameter, `given` (an edgepack.lab.GivenOptions: None where
    an option was not given); typer sees them as the command's own options, in its place.
    """
    names = [name for name, _, _ in LAB_OPTIONS]
    parameters = []
    for p in inspect.signature(command).parameters.values():
        if p.name == "given":
            parameters += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                                             annotation=declared, default=default)
                           for name, declared, default in LAB_OPTIONS]
        else:
            # typer reads Annotated[...] objects; the cli modules' annotations are strings
            # (PEP 563), and `given`'s type is imported only when the command runs, so each is
            # evaluated alone here.
            annotation = (eval(p.annotation, command.__globals__)
                          if isinstance(p.annotation, str) else p.annotation)
            parameters.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY,
                                        annotation=annotation))

    @functools.wraps(command)
    def with_lab_options(**options: Any) -> None:
        from edgepack.lab import GivenOptions

        given = GivenOptions(**{name: options.pop(name) for name in names})
        command(given=given, **options)

    with_lab_options.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    with_lab_options.__annotations__ = {p.name: p.annotation for p in parameters}
    return with_lab_options
