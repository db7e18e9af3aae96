"""Plots as inline SVG text, made here so a report needs no plotting library and opens offline."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

import numpy as np

PALETTE = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#eeca3b",
           "#9d755d")
FONT = "font-family='system-ui,Segoe UI,Helvetica,Arial,sans-serif' font-size='12'"


@dataclass(frozen=True)
class Row:
    label: str
    samples: Sequence[float]
    note: str = ""  # right of the row: e.g. "median 1.23 ms"


@dataclass(frozen=True)
class Series:
    label: str
    points: Sequence[tuple[float, float, str]]  # (x, y, tooltip)


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Round tick values covering [lo, hi]: steps of 1, 2 or 5 times a power of ten."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    value = start
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < hi:
        ticks.append(round(value, 12))
    return ticks


def tick_text(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000 or abs(value) < 0.01:
        return f"{value:.3g}"
    return f"{value:.4g}"


def distribution_plot(rows: Sequence[Row], unit: str = "ms", title: str = "",
                      width: int = 760) -> str:
    """Horizontal box plots with every sample as a dot: one row per configuration.

    Box: 25th-75th percentile; line: the median; whiskers: 5th-95th percentile; dots: the
    samples (jittered vertically, thinned to 400 per row), so outliers and bimodal runs show.
    """
    rows = [r for r in rows if len(r.samples)]
    left, right, top, row_h, axis_h = 170, 150, 28 if title else 10, 46, 34
    height = top + row_h * max(len(rows), 1) + axis_h
    parts = [_open(width, height, title)]
    if title:
        parts.append(f"<text x='{left}' y='18' {FONT} font-weight='600'>{escape(title)}</text>")
    if not rows:
        parts.append(f"<text x='{left}' y='{top + 20}' {FONT}>no samples</text></svg>")
        return "".join(parts)
    values = np.concatenate([np.asarray(r.samples, dtype=np.float64) for r in rows])
    # The axis spans the bulk of the samples: one 50x outlier (a page fault, a GC) would squash
    # every box into a line. Samples past the axis are drawn as ticks on its edge.
    span_lo, span_hi = (float(v) for v in np.percentile(values, [0.0, 99.0]))
    ticks = nice_ticks(span_lo, span_hi)
    lo, hi = ticks[0], ticks[-1]
    plot_w = width - left - right

    def x(v: float) -> float:
        return left + (v - lo) / (hi - lo) * plot_w if hi > lo else left + plot_w / 2

    bottom = top + row_h * len(rows)
    for t in ticks:
        parts.append(f"<line x1='{x(t):.1f}' y1='{top}' x2='{x(t):.1f}' y2='{bottom}' "
                     "stroke='#e3e3e3'/>")
        parts.append(f"<text x='{x(t):.1f}' y='{bottom + 16}' text-anchor='middle' {FONT}>"
                     f"{tick_text(t)}</text>")
    parts.append(f"<text x='{left + plot_w / 2:.1f}' y='{bottom + 31}' text-anchor='middle' "
                 f"{FONT}>{escape(unit)}</text>")
    rng = np.random.default_rng(0)  # fixed jitter: the same data draws the same picture
    for i, row in enumerate(rows):
        color = PALETTE[i % len(PALETTE)]
        s = np.asarray(row.samples, dtype=np.float64)
        mid = top + row_h * i + row_h / 2
        p5, p25, p50, p75, p95 = np.percentile(s, [5, 25, 50, 75, 95])
        parts.append(f"<text x='{left - 8}' y='{mid + 4:.1f}' text-anchor='end' {FONT}>"
                     f"{escape(_clip(row.label, 26))}</text>")
        parts.append(f"<line x1='{x(p5):.1f}' y1='{mid:.1f}' x2='{x(min(p95, hi)):.1f}' "
                     f"y2='{mid:.1f}' "
                     f"stroke='{color}' stroke-width='1.5'/>")
        parts.append(f"<rect x='{x(p25):.1f}' y='{mid - 11:.1f}' "
                     f"width='{max(x(p75) - x(p25), 1.5):.1f}' height='22' fill='{color}' "
                     f"fill-opacity='0.35' stroke='{color}' stroke-width='1.5'>"
                     f"<title>{escape(row.label)}: p25 {p25:.4g}, median {p50:.4g}, "
                     f"p75 {p75:.4g} {escape(unit)}</title></rect>")
        parts.append(f"<line x1='{x(p50):.1f}' y1='{mid - 13:.1f}' x2='{x(p50):.1f}' "
                     f"y2='{mid + 13:.1f}' stroke='{color}' stroke-width='3'/>")
        inside = s[s <= hi]
        shown = inside if inside.size <= 400 else rng.choice(inside, 400, replace=False)
        jitter = rng.uniform(-8, 8, shown.size)
        dots = "".join(f"<circle cx='{x(v):.1f}' cy='{mid + j:.1f}' r='1.8'/>"
                       for v, j in zip(shown.tolist(), jitter.tolist(), strict=True))
        parts.append(f"<g fill='{color}' fill-opacity='0.55'>{dots}</g>")
        beyond = s[s > hi]
        if beyond.size:
            edge = left + plot_w
            parts.append(f"<path d='M{edge:.1f},{mid - 6:.1f} l7,6 l-7,6 z' fill='#cf222e'>"
                         f"<title>{beyond.size} sample(s) beyond the axis, up to "
                         f"{beyond.max():.4g} {escape(unit)}</title></path>")
        if row.note:
            parts.append(f"<text x='{left + plot_w + 12}' y='{mid + 4:.1f}' {FONT}>"
                         f"{escape(row.note)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def line_plot(series: Sequence[Series], y_unit: str = "ms", title: str = "",
              x_labels: Sequence[tuple[float, str]] = (), width: int = 760,
              height: int = 260) -> str:
    """Lines with a dot per point (each with a tooltip); x is numeric (e.g. a timestamp)."""
    series = [s for s in series if s.points]
    left, right, top, bottom_h = 64, 190, 28 if title else 10, 40
    parts = [_open(width, height, title)]
    if title:
        parts.append(f"<text x='{left}' y='18' {FONT} font-weight='600'>{escape(title)}</text>")
    if not series:
        parts.append(f"<text x='{left}' y='{top + 20}' {FONT}>no history</text></svg>")
        return "".join(parts)
    xs = [p[0] for s in series for p in s.points]
    ys = [p[1] for s in series for p in s.points]
    yt = nice_ticks(min(0.0, min(ys)) if min(ys) > 0 and min(ys) < 0.2 * max(ys) else min(ys),
                    max(ys))
    x_lo, x_hi = min(xs), max(xs)
    plot_w, plot_h = width - left - right, height - top - bottom_h

    def px(v: float) -> float:
        return left + (v - x_lo) / (x_hi - x_lo) * plot_w if x_hi > x_lo else left + plot_w / 2

    def py(v: float) -> float:
        return top + plot_h - (v - yt[0]) / (yt[-1] - yt[0]) * plot_h

    for t in yt:
        parts.append(f"<line x1='{left}' y1='{py(t):.1f}' x2='{left + plot_w}' y2='{py(t):.1f}' "
                     "stroke='#e3e3e3'/>")
        parts.append(f"<text x='{left - 6}' y='{py(t) + 4:.1f}' text-anchor='end' {FONT}>"
                     f"{tick_text(t)}</text>")
    parts.append(f"<text x='14' y='{top + plot_h / 2:.1f}' {FONT} transform='rotate(-90 14 "
                 f"{top + plot_h / 2:.1f})' text-anchor='middle'>{escape(y_unit)}</text>")
    for value, text in x_labels:
        parts.append(f"<text x='{px(value):.1f}' y='{top + plot_h + 16}' text-anchor='middle' "
                     f"{FONT}>{escape(text)}</text>")
    for i, s in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        pts = sorted(s.points, key=lambda p: p[0])
        path = " ".join(f"{'M' if j == 0 else 'L'}{px(p[0]):.1f},{py(p[1]):.1f}"
                        for j, p in enumerate(pts))
        parts.append(f"<path d='{path}' fill='none' stroke='{color}' stroke-width='2'/>")
        for p in pts:
            parts.append(f"<circle cx='{px(p[0]):.1f}' cy='{py(p[1]):.1f}' r='3.5' "
                         f"fill='{color}'><title>{escape(p[2])}</title></circle>")
        ly = top + 8 + 18 * i
        parts.append(f"<rect x='{left + plot_w + 14}' y='{ly - 8}' width='12' height='12' "
                     f"fill='{color}'/><text x='{left + plot_w + 31}' y='{ly + 2}' {FONT}>"
                     f"{escape(_clip(s.label, 26))}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _open(width: int, height: int, title: str) -> str:
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
            f"viewBox='0 0 {width} {height}' role='img' aria-label='{escape(title)}'>"
            f"<rect width='{width}' height='{height}' fill='white'/>")


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
