"""Options that several commands share, declared once so they read and behave the same.

Every numeric option carries its range here, checked while the command line is parsed, so a
typo fails at once with the option's name instead of minutes later on a device (or as a
MemoryError). Integers use typer's own min/max; floats use `number()`, because NaN compares
false with every bound and would slip through min/max.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from edgepack.limits import MAX_ITERATIONS, MAX_SECONDS, MAX_THREADS, number_text


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
    "--threads", min=0, max=MAX_THREADS, help="Intra-op threads (0: onnxruntime's default).")]
EpOpt = Annotated[str, typer.Option("--ep", help="cpu, xnnpack or nnapi.")]
OptimizationOpt = Annotated[str, typer.Option(
    "--optimization", help="disable, basic, extended or all.")]
ReportOpt = Annotated[Path | None, typer.Option(
    "--report", help="Also write the result as JSON to this file.")]
