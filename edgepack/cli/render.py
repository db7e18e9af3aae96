"""Human rendering of stage results (rich tables) and the --json path, shared by all commands."""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from edgepack.compare import Metrics, OutputVerdict
    from edgepack.stats import LatencyStats


def console(stderr: bool = False) -> Console:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Piped output (CI logs, files) gets room for the bench table (18 columns) instead of
    # rich's 80.
    width = None if stream.isatty() else 200
    return Console(stderr=stderr, highlight=False, soft_wrap=False, width=width)


def emit_json(value: Any) -> None:
    from edgepack.serialize import dumps

    sys.stdout.write(dumps(value) + "\n")


def note(text: str) -> None:
    """A progress or context line: stderr, so stdout stays the result."""
    console(stderr=True).print(text, markup=False)


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if value == 0:
        return "0"
    if abs(value) >= 1e4 or abs(value) < 1e-3:
        return f"{value:.{digits}e}"
    return f"{value:.{digits}g}" if abs(value) < 1 else f"{value:.{digits}f}"


def size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def verdict_table(verdicts: list[OutputVerdict], title: str | None = None) -> Any:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("output", "shape", "verdict", "max abs", "max rel", "mean abs", "cosine",
                "SNR dB", "top-1", "top-5", "rtol / atol"):
        table.add_column(col, justify="left" if col in ("output", "shape", "verdict")
                         else "right")
    for v in verdicts:
        m = v.metrics
        table.add_row(
            v.name,
            "x".join(map(str, v.expected_shape)) or "scalar",
            ("[green]pass[/green]" if v.passed else f"[red]FAIL[/red] {escape(v.reason)}")
            + _nonfinite_note(m),
            fmt(m.max_abs_error if m else None),
            fmt(m.max_rel_error if m else None),
            fmt(m.mean_abs_error if m else None),
            fmt(m.cosine_similarity if m else None, 6),
            fmt(m.snr_db if m else None, 1),
            fmt(m.top1_agreement if m else None),
            fmt(m.top5_agreement if m else None),
            f"{v.tolerance.rtol:g} / {v.tolerance.atol:g}",
        )
    return table


def _nonfinite_note(m: Metrics | None) -> str:
    """Matched NaN and inf are left out of the error metrics: say so beside them."""
    if m is None or m.nonfinite is None or m.nonfinite.mismatched:
        return ""  # none, or a failure whose reason already tells
    n = m.nonfinite
    return (f" ({n.expected_nan} NaN, {n.expected_inf} inf matched exactly; metrics over "
            f"{m.compared} of {m.total})")


def latency_table(rows: list[tuple[str, LatencyStats, dict[str, str]]]) -> Any:
    """One row per run; `extra` adds columns, or replaces a standard one of the same name (a
    bench group judges IQR/med and outliers per repeat, not on its pooled samples)."""
    from rich.table import Table

    standard = ["n", "median", "mean", "std", "min", "p90", "p99", "max", "CV", "IQR/med",
                "outliers"]
    extra_cols: list[str] = []
    for _, _, extra in rows:
        extra_cols += [k for k in extra if k not in extra_cols and k not in standard]
    table = Table(title="latency (ms)", title_justify="left")
    for col in ["run", *standard, *extra_cols]:
        table.add_column(col, justify="left" if col == "run" else "right")
    for label, s, extra in rows:
        values = {
            "n": str(s.count), "median": fmt(s.median_ms), "mean": fmt(s.mean_ms),
            "std": fmt(s.std_ms), "min": fmt(s.min_ms), "p90": fmt(s.p90_ms),
            "p99": fmt(s.p99_ms), "max": fmt(s.max_ms),
            # Unstable is judged on IQR / median; the CV is shown as the figure people know.
            "CV": f"{s.cv * 100:.1f}%", "IQR/med": fmt_spread(s.spread, s.unstable),
            "outliers": str(s.outliers), **extra,
        }
        table.add_row(label, *(values.get(c, "-") for c in [*standard, *extra_cols]))
    return table


def fmt_spread(spread: float | None, unstable: bool) -> str:
    if spread is None or math.isnan(spread):
        return "-"
    return f"{spread * 100:.1f}%" + (" [yellow]unstable[/yellow]" if unstable else "")
