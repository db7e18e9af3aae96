"""Options that several commands share, declared once so they read and behave the same."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]

# How one bundle runs: `run` on the host and `deploy` on a device take the same RunConfig.
WarmupOpt = Annotated[int, typer.Option("--warmup", help="Untimed runs first.")]
IterationsOpt = Annotated[int, typer.Option("--iterations", help="Timed runs.")]
MinSecondsOpt = Annotated[float | None, typer.Option(
    "--min-seconds", help="Time runs for at least this long instead.")]
ThreadsOpt = Annotated[int, typer.Option(
    "--threads", help="Intra-op threads (0: onnxruntime's default).")]
EpOpt = Annotated[str, typer.Option("--ep", help="cpu, xnnpack or nnapi.")]
OptimizationOpt = Annotated[str, typer.Option(
    "--optimization", help="disable, basic, extended or all.")]
ReportOpt = Annotated[Path | None, typer.Option(
    "--report", help="Also write the result as JSON to this file.")]
