"""diagnose.html: the error along the graph as an inline SVG plot (no JavaScript, opens offline),
the first divergent node marked, and the table behind it.

The plot's y is each node's max abs error divided by its tensor's max |reference|, on a log
scale: the scale diagnose's tolerance is scaled to (edgepack.diagnose.tensor_tolerance), so one
dashed line per node shows where divergence starts, and the jump at the faulty node and how the
error grows after it read at a glance. An exact tensor (error 0) is drawn on the axis floor,
two decades under the smallest error or tolerance, labelled "exact".
"""

from __future__ import annotations

import math
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from edgepack.report.svg import FONT, PALETTE

if TYPE_CHECKING:
    from edgepack.diagnose import Diagnosis, NodeRow

WITHIN, DIVERGES = "#1a7f37", "#cf222e"


def write_diagnose_report(result: Diagnosis, path: Path) -> Path:
    from edgepack.fileio import atomic_write_text

    atomic_write_text(path, render_diagnose_html(result))
    return path


def error_plot(rows: list[NodeRow], first: str | None, width: int = 900,
               height: int = 320) -> str:
    """Per node in topological order, its scaled error (log y); `first` marked."""
    points = [r for r in rows if r.scaled_error is not None]
    left, right, top, bottom_h = 64, 20, 44, 58
    plot_w, plot_h = width - left - right, height - top - bottom_h
    title = "error along the graph: max abs error / max |reference| per node (log scale)"
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
             f"viewBox='0 0 {width} {height}' role='img' aria-label='{escape(title)}'>"
             f"<rect width='{width}' height='{height}' fill='white'/>"
             f"<text x='{left}' y='18' {FONT} font-weight='600'>{escape(title)}</text>"
             f"<text x='{width - right}' y='18' text-anchor='end' {FONT} fill='#555'>dashed: "
             "each tensor's tolerance; red: diverges</text>"]
    if not points:
        parts.append(f"<text x='{left}' y='{top + 20}' {FONT}>no float tensors compared</text>"
                     "</svg>")
        return "".join(parts)
    bounds = [v for v in [r.scaled_error for r in points]
              + [r.scaled_tolerance for r in points] if v]
    exact = any(not r.scaled_error for r in points)
    lo = math.floor(math.log10(min(bounds))) - (2 if exact else 0) if bounds else -12
    hi = max(math.ceil(math.log10(max(bounds))) if bounds else 0, lo + 1)
    floor = 10.0 ** lo  # where an exact tensor is drawn
    values = [max(r.scaled_error or 0.0, floor) for r in points]
    positions = {r.index: i for i, r in enumerate(points)}  # evenly spaced, in graph order

    def px(i: int) -> float:
        return left + (i + 0.5) / len(points) * plot_w

    def py(v: float) -> float:
        return top + plot_h - (math.log10(max(v, floor)) - lo) / (hi - lo) * plot_h

    step = max(1, math.ceil((hi - lo) / 8))
    for e in range(hi, lo - 1, -step):
        text = "exact" if exact and e == lo else f"1e{e}"
        parts.append(f"<line x1='{left}' y1='{py(10.0 ** e):.1f}' x2='{left + plot_w}' "
                     f"y2='{py(10.0 ** e):.1f}' stroke='#e3e3e3'/>"
                     f"<text x='{left - 6}' y='{py(10.0 ** e) + 4:.1f}' text-anchor='end' "
                     f"{FONT}>{text}</text>")
    # The tolerance per node: a step line, as each tensor has its own.
    tol = [(positions[r.index], r.scaled_tolerance) for r in points if r.scaled_tolerance]
    if tol:
        path = " ".join(f"{'M' if k == 0 else 'L'}{px(i) - 0.5 * plot_w / len(points):.1f},"
                        f"{py(t):.1f} h{plot_w / len(points):.1f}"
                        for k, (i, t) in enumerate(tol))
        parts.append(f"<path d='{path}' fill='none' stroke='#888' stroke-dasharray='4 3'>"
                     "<title>tolerance: above it an element diverges</title></path>")
    line = " ".join(f"{'M' if k == 0 else 'L'}{px(k):.1f},{py(v):.1f}"
                    for k, v in enumerate(values))
    parts.append(f"<path d='{line}' fill='none' stroke='{PALETTE[0]}' stroke-width='1.2'/>")
    radius = 3.0 if len(points) <= 120 else 2.0
    for k, r in enumerate(points):
        provider = f", {r.provider}" if r.provider else ""
        tip = (f"#{r.index} {r.node} ({r.op_type}{provider}): {r.scaled_error:.3g} of max "
               f"|reference|, {'within' if r.within else 'DIVERGES'}")
        parts.append(f"<circle cx='{px(k):.1f}' cy='{py(values[k]):.1f}' r='{radius}' "
                     f"fill='{WITHIN if r.within else DIVERGES}'><title>{escape(tip)}</title>"
                     "</circle>")
    bottom = top + plot_h
    parts.append(f"<line x1='{left}' y1='{bottom}' x2='{left + plot_w}' y2='{bottom}' "
                 "stroke='#555'/>")
    # x: the node's position in the topological order, a few of them labelled.
    every = max(1, len(points) // 10)
    for k in range(0, len(points), every):
        parts.append(f"<text x='{px(k):.1f}' y='{bottom + 14}' text-anchor='middle' {FONT}>"
                     f"{points[k].index}</text>")
    parts.append(f"<text x='{left + plot_w / 2:.1f}' y='{bottom + 28}' text-anchor='middle' "
                 f"{FONT}>node (position in topological order)</text>")
    providers = sorted({r.provider for r in points if r.provider})
    if providers:
        colors = {p: PALETTE[(i + 1) % len(PALETTE)] for i, p in enumerate(providers)}
        for k, r in enumerate(points):
            if r.provider:
                parts.append(f"<rect x='{px(k) - 0.5 * plot_w / len(points):.1f}' "
                             f"y='{bottom + 34}' width='{plot_w / len(points):.2f}' height='6' "
                             f"fill='{colors[r.provider]}'/>")
        x = left
        for p in providers:
            parts.append(f"<rect x='{x}' y='{bottom + 44}' width='10' height='10' "
                         f"fill='{colors[p]}'/><text x='{x + 14}' y='{bottom + 53}' {FONT}>"
                         f"{escape(p)}</text>")
            x += 24 + 7 * len(p)
    marked = next((k for k, r in enumerate(points) if r.node == first), None)
    if marked is not None:
        x = px(marked)
        anchor = "end" if x > left + plot_w * 0.6 else "start"
        dx = -6 if anchor == "end" else 6
        parts.append(f"<line x1='{x:.1f}' y1='{top - 18}' x2='{x:.1f}' y2='{bottom}' "
                     f"stroke='{DIVERGES}' stroke-width='1.5' stroke-dasharray='2 2'/>"
                     f"<text x='{x + dx:.1f}' y='{top - 8}' text-anchor='{anchor}' {FONT} "
                     f"fill='{DIVERGES}' font-weight='600'>first divergent: "
                     f"{escape(points[marked].node)} ({escape(points[marked].op_type)})</text>")
    parts.append("</svg>")
    return "".join(parts)


def render_diagnose_html(r: Diagnosis) -> str:
    d = r.first_divergent
    title = f"edgepack diagnose: {r.bundle} on {r.device}"
    if d is None:
        verdict = "<p class='pass'>nothing diverges: every tensor compared is within its " \
                  "tolerance</p>"
    else:
        m = d.metrics
        metrics = (f"max abs {_g(m.max_abs_error)}, max rel {_g(m.max_rel_error)}, cosine "
                   f"{_g(m.cosine_similarity)}, SNR {_g(m.snr_db)} dB, {m.mismatched}/{m.total} "
                   "beyond tolerance") if m else escape(d.reason)
        inputs = "".join(
            f"<li><code>{escape(c.tensor)}</code>: "
            + (escape(c.reason) if c.metrics is None else
               f"{'within' if c.within else '<b class=fail>DIVERGES</b>'} (max abs "
               f"{_g(c.metrics.max_abs_error)})") + "</li>"
            for c in d.inputs)
        verdict = (f"<p class='fail'>first divergent node: <code>{escape(d.node)}</code> "
                   f"({escape(d.op_type)}, #{d.index}), output <code>{escape(d.output)}</code>"
                   "</p><ul>"
                   f"<li>module: {escape(d.module or 'unknown (no node map in the bundle)')}</li>"
                   f"<li>provider: {escape(d.provider or 'unknown (a profile tells, with --ep)')}"
                   f"</li><li>output: {metrics}</li>{inputs}</ul>")
    notes = "".join(f"<p class='muted'>note: {escape(n)}</p>" for n in r.notes)
    held = "".join(f"<li><code>{escape(u.node)}</code> ({escape(u.op_type)}): "
                   f"{escape(', '.join(u.inner_nodes))}</li>" for u in r.not_searched)
    if held:
        held = f"<h2>not searched (inside subgraphs)</h2><ul>{held}</ul>"
    rows = "".join(
        f"<tr class='{'' if row.within else 'bad'}'><td class='n'>{row.index}</td>"
        f"<td><code>{escape(row.node)}</code></td><td>{escape(row.op_type)}</td>"
        f"<td>{escape(row.provider or '')}</td><td class='n'>{_g(row.max_abs_error)}</td>"
        f"<td class='n'>{_g(row.scaled_error)}</td><td class='n'>{_g(row.scaled_tolerance)}</td>"
        f"<td>{'ok' if row.within else 'DIVERGES'}</td></tr>" for row in r.table)
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{escape(title)}</title><style>body{{font:14px/1.45 system-ui,sans-serif;"
            "margin:24px;color:#222}} td,th{padding:2px 8px;border-bottom:1px solid #eee} "
            "th{text-align:left;background:#f6f6f6} td.n{text-align:right;"
            "font-variant-numeric:tabular-nums} .pass{color:#1a7f37;font-weight:600} "
            ".fail{color:#cf222e;font-weight:700} .muted{color:#777} tr.bad td{color:#cf222e}"
            "</style></head><body>"
            f"<h1>{escape(title)}</h1>"
            f"<p class='muted'>strategy {escape(r.strategy)}, {r.device_runs} device run(s), "
            f"{r.nodes} node(s), {r.exposed_bytes / 1e6:.1f} MB of intermediate tensors (budget "
            f"{r.budget_bytes / 1e6:g} MB), {r.wall_s:.1f} s</p>"
            f"{verdict}{notes}{error_plot(r.table, d.node if d else None)}{held}"
            "<h2>error along the graph</h2><table><tr><th>#</th><th>node</th><th>op</th>"
            "<th>provider</th><th>max abs</th><th>/ max |ref|</th><th>tolerance</th>"
            f"<th>state</th></tr>{rows}</table></body></html>\n")


def _g(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"
