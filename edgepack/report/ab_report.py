"""An A/B session's reports: ab.json (what `ab --json` prints) and ab.html, whose plot shows
every round's ratio B/A with the session's estimate and interval, so a drift or an odd round is
seen, not only averaged away."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from edgepack.report.svg import Series, line_plot

if TYPE_CHECKING:
    from edgepack.ab import AbResult


def write_ab_reports(result: AbResult, directory: Path) -> list[Path]:
    from edgepack.ab import ab_document
    from edgepack.fileio import atomic_write_text
    from edgepack.serialize import dumps

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("ab.json", dumps(ab_document(result)) + "\n"),
                       ("ab.html", render_ab_html(result))):
        path = directory / name
        atomic_write_text(path, text)
        written.append(path)
    return written


def render_ab_html(result: AbResult) -> str:
    # The plot shows the rounds' ratios of medians, with the median estimate; the verdict line
    # the estimate the verdict rests on (--figure).
    m = result.median
    title = f"edgepack ab: {result.b.name} against {result.a.name} on {result.serial}"
    used = [(r.index, r.ratio) for r in result.rounds if r.usable and r.ratio is not None]
    left_out = [(r.index, r.ratio) for r in result.rounds
                if not r.usable and r.ratio is not None]
    series = [Series("round B/A", [(k, v, f"round {k}: {v:.4f}") for k, v in used])]
    if left_out:
        series.append(Series("left out (invalid)",
                             [(k, v, f"round {k}: {v:.4f} (invalid)") for k, v in left_out]))
    if m is not None and used:
        ends = (min(k for k, _ in used), max(k for k, _ in used))
        for label, value in (("estimate", m.ratio), ("95 % CI low", m.low),
                             ("95 % CI high", m.high)):
            series.append(Series(f"{label} {value:.4f}",
                                 [(x, value, f"{label}: {value:.4f}") for x in ends]))
    plot = line_plot(series, y_unit="B/A", title="per-round ratio of medians (B / A)")
    j = result.judged
    verdict = (f"{j.ratio:.4f} [{j.low:.4f}, {j.high:.4f}]" if j else "no interval")
    rows = "".join(
        f"<tr><td>{r.index}</td><td>{r.order}</td>"
        f"<td class='n'>{_ms(r.stats('A'))}</td><td class='n'>{_ms(r.stats('B'))}</td>"
        f"<td class='n'>{'-' if r.ratio is None else f'{r.ratio:.4f}'}</td>"
        f"<td class='n'>{r.cooldown_s:.1f}{' (cut short)' if _cut(r) else ''}</td>"
        f"<td>{escape(r.validity.text())}</td></tr>"
        for r in result.rounds)
    outputs = (escape(result.outputs_note) if result.outputs_note else
               "; ".join(f"set {d.set_index}: {'pass' if d.passed else 'DIFFER'}"
                         for d in result.outputs))
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{escape(title)}</title><style>body{{font:14px system-ui,sans-serif;"
            "margin:24px}} td,th{padding:2px 8px;border-bottom:1px solid #eee} "
            "td.n{text-align:right}</style></head><body>"
            f"<h1>{escape(title)}</h1>"
            f"<p>session <code>{escape(result.session)}</code>, {escape(result.config_key)}, "
            f"{len(result.rounds)} round(s) ({len(result.usable_rounds)} used), stopped by "
            f"{escape(result.stopped_by)}; {escape(cooldown_text(result))}</p>"
            f"<p><b>B/A {escape(result.params.figure)} ratio {verdict}: "
            f"{escape(result.verdict)}</b> "
            f"(equivalence &plusmn;{result.params.equivalence * 100:g} %)</p>"
            f"{plot}<h2>rounds</h2><table><tr><th>round</th><th>order</th><th>A median ms</th>"
            f"<th>B median ms</th><th>B/A</th><th>cooldown s</th><th>validity</th></tr>"
            f"{rows}</table>"
            f"<h2>outputs, B against A</h2><p>{outputs}</p></body></html>\n")


def _ms(stats: object) -> str:
    median = getattr(stats, "median_ms", None)
    return "-" if median is None else f"{median:.3f}"


def _cut(r: object) -> bool:
    runs = (getattr(r, "a", None), getattr(r, "b", None))
    return any(run is not None and run.cooldown_cut for run in runs)


def cooldown_text(result: AbResult) -> str:
    """How long the cooldowns waited in all, and whether --cooldown auto gave up before any."""
    p = result.params
    how = "auto" if p.cooldown_auto else f"{p.cooldown_s:g} s"
    waited = sum(r.cooldown_s for r in result.rounds)
    cut = sum(_cut(r) for r in result.rounds)
    text = f"cooldown {how}: waited {waited:.1f} s in all"
    if cut:
        text += f", cut short before {cut} round(s) (those are semivalid)"
    return text
