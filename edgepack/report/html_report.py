"""report.html: one self-contained file (inline CSS, SVG plots, PNG data URIs); opens offline."""

from __future__ import annotations

from datetime import datetime
from html import escape
from statistics import median

from edgepack.records import BenchRun, GroupSummary
from edgepack.report import ReportData
from edgepack.report.images import ImageComparison
from edgepack.report.markdown import (
    fmt_drift,
    fmt_metric,
    fmt_ms,
    fmt_per_iteration,
    fmt_spread,
    profile_heading,
)
from edgepack.report.svg import Row, Series, distribution_plot, line_plot
from edgepack.stats import DRIFT_THRESHOLD, OUTLIER_RULE, UNSTABLE_SPREAD
from edgepack.validity import Validity, judge_run

CSS = """
body{font:14px/1.45 system-ui,'Segoe UI',Helvetica,Arial,sans-serif;margin:24px;color:#222}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:6px 0 12px}
td,th{padding:3px 9px;border-bottom:1px solid #eee}
th{text-align:left;background:#f6f6f6} td.n{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:#1a7f37;font-weight:600} .fail{color:#cf222e;font-weight:700}
.error{color:#9a6700;font-weight:700} .muted{color:#777} .warn{color:#9a6700}
.cards{display:flex;gap:10px;margin:12px 0} .card{border:1px solid #ddd;border-radius:6px;
padding:6px 14px} .card b{font-size:20px;display:block}
figure{display:inline-block;margin:4px 12px 12px 0;vertical-align:top}
figure img{image-rendering:pixelated;border:1px solid #ccc;width:224px;height:auto}
figcaption{font-size:12px;color:#555;max-width:224px} code{background:#f3f3f3;padding:0 3px}
"""


def render_html(data: ReportData) -> str:
    bench, counts = data.bench, data.counts
    names = ", ".join(b.name for b in bench.bundles)
    title = f"edgepack bench: {names} on {len(bench.serials)} device(s)"
    body = [
        f"<h1>{escape(title)}</h1>",
        f"<div class='muted'>session <code>{escape(bench.session)}</code>"
        + (f", label <code>{escape(bench.label)}</code>" if bench.label else "")
        + f", started {escape(bench.started_at)}, {bench.wall_s:.1f} s"
        + (", <b class='fail'>interrupted</b>" if bench.interrupted else "")
        + f"; {bench.params.repeat} run(s) x {bench.params.iterations} iteration(s) per "
        f"configuration</div>",
        "<div class='cards'>"
        + _card("tests", counts["tests"]) + _card("passed", counts["passed"], "pass")
        + _card("failed", counts["failures"], "fail" if counts["failures"] else "")
        + _card("errors", counts["errors"], "error" if counts["errors"] else "")
        + _card("regressions", counts["regressions"], "fail" if counts["regressions"] else "")
        + _card("not judged", counts["unjudged"], "warn" if counts["unjudged"] else "")
        + _card("unstable", counts["unstable"], "warn" if counts["unstable"] else "")
        + _card("drifting", counts["drifting"], "warn" if counts["drifting"] else "")
        + "</div>",
        _devices(data),
        _results(data),
        _browsers(data),
        _distributions(data),
        _ab_rounds(data),
        _trend(data),
        _regressions(data),
        _outputs(data),
        _top_classes(data),
        _images(data.images),
        _state(data),
        _providers(data),
        _profiles(data),
        f"<p class='muted'>generated {escape(data.generated_at)} by edgepack"
        + (f"; history: {escape(data.history_db)}" if data.history_db else "") + "</p>",
    ]
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
            + "\n".join(part for part in body if part) + "</body></html>\n")


def _card(label: str, value: int, cls: str = "") -> str:
    return f"<div class='card'><b class='{cls}'>{value}</b>{escape(label)}</div>"


def _outcome(outcome: str) -> str:
    text = {"pass": "pass", "fail": "FAIL", "unjudged": "NOT JUDGED"}.get(outcome, "ERROR")
    cls = "warn" if outcome == "unjudged" else outcome
    return f"<span class='{cls}'>{text}</span>"


def _table(headers: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td class='n'>{c}</td>" if i in numeric else f"<td>{c}</td>"
                         for i, c in enumerate(row)) + "</tr>"
        for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _devices(data: ReportData) -> str:
    failed = data.bench.failed_devices
    rows = []
    for serial in data.bench.serials:
        groups = [g for g in data.groups if g.serial == serial]
        info = next((g.device for g in groups if g.device), None)
        outcomes = [data.outcome(g) for g in groups]
        worst = next((o for o in ("fail", "error", "unjudged") if o in outcomes), "pass")
        rows.append([
            escape(serial), escape(info.model or "-") if info else "-",
            escape(info.abis[0]) if info and info.abis else "-",
            str(info.sdk) if info and info.sdk else "-",
            escape(info.soc or "-") if info else "-",
            _outcome(worst),
            f"{outcomes.count('pass')}/{len(outcomes)}",
            escape(failed.get(serial, "")),
        ])
    return "<h2>Devices</h2>" + _table(
        ["device", "model", "ABI", "SDK", "SoC", "outcome", "passed", "error"], rows, {6})


def _results(data: ReportData) -> str:
    rows = []
    for g in data.groups:
        s = g.stats
        cv = "-" if s is None else f"{s.cv * 100:.1f} %"
        spread = fmt_spread(g).replace(" unstable", " <span class='warn'>unstable</span>")
        drift = fmt_drift(g).replace(" drifting", " <span class='warn'>drifting</span>")
        rows.append([
            escape(g.serial), escape(g.model), escape(g.bundle_name),
            f"<code>{escape(g.config_key)}</code>", _outcome(data.outcome(g)),
            _validity(data.validity(g)),
            f"{g.completed}/{g.runs}", str(s.count) if s else "0",
            fmt_ms(s.median_ms if s else None), fmt_ms(s.mean_ms if s else None),
            fmt_ms(s.std_ms if s else None), fmt_ms(s.min_ms if s else None),
            fmt_ms(s.p90_ms if s else None), fmt_ms(s.p95_ms if s else None),
            fmt_ms(s.p99_ms if s else None), fmt_ms(s.max_ms if s else None), cv, spread,
            str(g.outliers) if s else "-", drift,
            fmt_ms(g.session_create_ms), fmt_ms(g.first_inference_ms),
            escape(g.peak_rss_text), _ep_cell(g),
        ])
    return ("<h2>Latency (ms)</h2><p class='muted'>IQR / median (of the widest repeat) over "
            f"{UNSTABLE_SPREAD * 100:g} % is unstable; outliers: iterations "
            f"{escape(OUTLIER_RULE)} of their repeat; drift: the repeats' medians max / min - 1, "
            f"drifting when over {DRIFT_THRESHOLD * 100:g} % and over the repeats' own IQR / "
            "median; the other figures pool every repeat"
            + "; validity: valid, semivalid (real figures, moved conditions) or invalid (no "
            "verdict rests on them), the reasons below</p>"
            + _table(["device", "model", "bundle", "config", "outcome", "validity", "runs", "n",
                      "median", "mean", "std", "min", "p90", "p95", "p99", "max", "CV",
                      "IQR / median", "outliers", "drift", "load", "first", "peak MB", "EP"],
                     rows, set(range(6, 23)))
            + _validity_reasons(data))


def _browsers(data: ReportData) -> str:
    """What a browser run has that a runner's has not, beside the phone's rows rather than
    folded into them: the JS runtime and its backend (`--ep cpu` is onnxruntime-web's wasm),
    the threads it ran, the JS heap, and the renderer's peak RSS (not Chromium's whole tree)."""
    from edgepack.web.executor import ENGINE as BROWSER_ENGINE

    rows = []
    for g in data.groups:
        runners = [s.runner for r in data.bench.runs
                   if (r.serial, r.bundle_sha256, r.config_key)
                   == (g.serial, g.bundle_sha256, g.config_key) and r.result is not None
                   for s in r.result.sets]
        runners = [x for x in runners if x.engine == BROWSER_ENGINE]
        if not runners:
            continue
        heaps = [x.extra.get("js_heap_bytes") for x in runners]
        heap = max((h for h in heaps if isinstance(h, int)), default=None)
        rss = max((x.peak_rss_kb_end for x in runners if x.peak_rss_kb_end), default=None)
        backends = dict.fromkeys(str(x.extra.get("web_ep", x.ep_used)) for x in runners)
        rows.append([
            escape(g.serial), escape(g.bundle_name), f"<code>{escape(g.config_key)}</code>",
            escape(runners[0].runner_version), escape(", ".join(backends)),
            escape(runners[0].threads_text()),
            fmt_ms(g.session_create_ms), fmt_ms(g.first_inference_ms),
            fmt_ms(g.stats.median_ms if g.stats else None),
            f"{heap / 2**20:.1f}" if heap is not None else "-",
            f"{rss / 1024:.1f}" if rss is not None else "-",
        ])
    if not rows:
        return ""
    return ("<h2>In the browser</h2><p class='muted'>headless Chromium on this machine; timed "
            "by performance.now() in the page; session create and first inference: medians "
            "over repeats; JS heap: performance.memory's used JS heap after the run (V8's "
            "heap; the WASM memory shows in the renderer's RSS, not here); renderer RSS: the "
            "page's renderer process's peak (VmHWM), the figure to set beside a phone's runner "
            "RSS</p>"
            + _table(["device", "bundle", "config", "runtime", "backend", "threads",
                      "session create ms", "first ms", "median ms", "JS heap MB",
                      "renderer peak RSS MB"], rows, set(range(6, 11))))


def _validity(v: Validity) -> str:
    cls = {"valid": "pass", "semivalid": "warn"}.get(v.verdict.value, "fail")
    return (f"<span class='{cls}' title='{escape('; '.join(v.reasons))}'>"
            f"{escape(v.verdict.value)}</span>")


def _validity_reasons(data: ReportData) -> str:
    items = [f"<li><b>{escape(g.serial)}</b> {escape(g.bundle_name)} "
             f"<code>{escape(g.config_key)}</code>: {_validity(v)}: {escape(reason)}</li>"
             for g in data.groups for v in [data.validity(g)] for reason in v.reasons]
    return f"<ul>{''.join(items)}</ul>" if items else ""


def _ab_rounds(data: ReportData) -> str:
    """An `ab` session (from the history too): its per-round ratios B/A, plotted. A's and B's
    k-th runs are round k in either order (ABBA or bundle-major); in an A/A session, where
    both sides are one bundle, ABBA's order tells them apart."""
    bench = data.bench
    if bench.params.kind != "ab" or len(bench.bundles) < 1:
        return ""
    from edgepack.report.svg import Series, line_plot

    a_sha = bench.bundles[0].sha256
    b_sha = bench.bundles[-1].sha256
    done = sorted((r for r in bench.runs if r.latencies_ms), key=lambda r: r.repeat)
    if a_sha != b_sha:
        a_runs = [r for r in done if r.bundle_sha256 == a_sha]
        b_runs = [r for r in done if r.bundle_sha256 == b_sha]
        pairs = list(zip(a_runs, b_runs, strict=False))
    else:
        by_round: dict[int, dict[str, BenchRun]] = {}
        for r in done:
            k, first = divmod(r.repeat, 2)
            side = ("A" if first == 0 else "B") if k % 2 == 0 else ("B" if first == 0 else "A")
            by_round.setdefault(k, {})[side] = r
        pairs = [(v["A"], v["B"]) for _, v in sorted(by_round.items()) if len(v) == 2]
    rules = bench.params.rules()
    points, left_out = [], []
    for k, (a, b) in enumerate(pairs):
        ratio = median(b.latencies_ms) / median(a.latencies_ms)
        usable = judge_run(a, rules).usable and judge_run(b, rules).usable
        (points if usable else left_out).append((k, ratio, f"round {k}: {ratio:.4f}"))
    if not points and not left_out:
        return ""
    series = [Series("round B/A", points)]
    if left_out:
        series.append(Series("left out (invalid)", left_out))
    return ("<h2>A/B rounds</h2><p class='muted'>each round's ratio of medians, B / A (A: "
            f"{escape(bench.bundles[0].name)}, B: {escape(bench.bundles[-1].name)}); "
            "<code>edgepack ab</code> gives the interval and the verdict</p>"
            + line_plot(series, y_unit="B/A", title="per-round ratio of medians (B / A)"))


def _ep_cell(g: GroupSummary) -> str:
    # The provider asked for, and the one that ran when another did: a fallback never reads
    # as the provider.
    text = escape(g.ep_text)
    return text if g.ep_used == g.ep_requested else f"<span class='warn'>{text}</span>"


def _distributions(data: ReportData) -> str:
    # One plot per device and bundle: configurations of one model share an axis; models that
    # differ by orders of magnitude do not squash each other's boxes.
    parts = []
    for serial in data.bench.serials:
        for bundle in data.bench.bundles:
            rows = []
            for g in data.groups:
                if (g.serial, g.bundle_sha256) != (serial, bundle.sha256) or g.stats is None:
                    continue
                samples = [x for r in data.bench.runs
                           if (r.serial, r.bundle_sha256, r.config_key)
                           == (g.serial, g.bundle_sha256, g.config_key)
                           for x in r.latencies_ms]
                rows.append(Row(g.config_key, samples, f"median {fmt_ms(g.stats.median_ms)} ms"))
            if rows:
                model = next((g.model for g in data.groups if g.serial == serial), serial)
                plot = distribution_plot(rows, "ms", f"{bundle.name} on {serial} ({model})")
                parts.append(f"<div class='plot'>{plot}</div>")
    return ("<h2>Latency distribution per device</h2><p class='muted'>box: 25th-75th "
            "percentile, thick line: median, whiskers: 5th-95th percentile, dots: iterations"
            "</p>" + "".join(parts)) if parts else ""


def _trend(data: ReportData) -> str:
    by_bundle: dict[str, list[Series]] = {}
    stamps: set[float] = set()
    for t in data.trend:
        points = []
        for p in t.points:
            x = _epoch(p.started_at)
            stamps.add(x)
            points.append((x, p.median_ms, f"{t.model} {t.config_key}: {p.median_ms:.3f} ms, "
                           f"{p.started_at[:16]}" + (f", {p.label}" if p.label else "")
                           + f", bundle {p.bundle_sha256[:8]}"))
        by_bundle.setdefault(t.bundle_name, []).append(Series(f"{t.model} {t.config_key}",
                                                              points))
    if not stamps or all(len(s.points) < 2 for series in by_bundle.values() for s in series):
        return ""
    lo, hi = min(stamps), max(stamps)
    labels = [(lo, _day(lo)), (hi, _day(hi))] if hi > lo else [(lo, _day(lo))]
    plots = "".join(
        "<div class='plot'>"
        + line_plot(series, "median ms", f"{name}: median latency by session", labels)
        + "</div>"
        for name, series in by_bundle.items())
    return "<h2>History</h2>" + plots


def _regressions(data: ReportData) -> str:
    r = data.regression
    if r is None:
        return ""
    rows = []
    for c in r.comparisons:
        t = c.latency
        verdict = (_outcome("fail") + " regression" if c.regressed else
                   _outcome("unjudged") + ": " + escape(t.too_few()) if c.unjudged and t else
                   escape(t.verdict) if t is not None else
                   "ok" if c.baseline else escape(c.note or "no baseline"))
        g = next((x for x in data.groups if (x.serial, x.bundle_sha256, x.config_key)
                  == (c.serial, c.bundle_sha256, c.config_key)), None)
        if c.accuracy:
            verdict += "<br>" + "<br>".join(
                escape(f"set {a.set_index} {a.output}: {a.reason}") for a in c.accuracy)
        rows.append([
            escape(c.serial), escape(c.model), escape(c.bundle_name),
            f"<code>{escape(c.config_key)}</code>",
            escape(c.baseline.session + (f" ({c.baseline.label})" if c.baseline.label else ""))
            if c.baseline else "-",
            fmt_ms(t.baseline_median_ms if t else None),
            fmt_ms(t.candidate_median_ms if t else None),
            f"{t.change * 100:+.1f} %" if t else "-",
            escape(t.interval_text()) if t else "-",
            f"{t.runs_baseline}/{t.runs_candidate}" if t else "-",
            _validity(data.validity(g)) if g is not None else "-", verdict,
        ])
    return (f"<h2>Regressions against {escape(r.baseline.description)}</h2><p class='muted'>"
            f"latency over runs (per-run medians): the {(1 - r.alpha) * 100:g} % interval of the "
            "change; a regression is slower with confidence and not shown to be within the "
            f"&plusmn;{r.threshold * 100:g} % margin; invalid runs are left out. Accuracy: an "
            "output that passed in the baseline fails now</p>"
            + _table(["device", "model", "bundle", "config", "baseline session", "baseline ms",
                      "now ms", "change", "interval", "runs", "validity", "verdict"], rows,
                     {5, 6, 7, 8, 9}))


def _outputs(data: ReportData) -> str:
    rows = []
    for g in data.groups:
        for c in g.checks:
            v, m = c.verdict, c.verdict.metrics
            rows.append([
                escape(g.serial), escape(g.bundle_name), f"<code>{escape(g.config_key)}</code>",
                str(c.set_index), escape(v.name), "x".join(map(str, v.expected_shape)),
                _outcome("pass") if v.passed else _outcome("fail") + " " + escape(v.reason),
                fmt_metric(m.max_abs_error if m else None),
                fmt_metric(m.max_rel_error if m else None),
                fmt_metric(m.mean_abs_error if m else None),
                fmt_metric(m.cosine_similarity if m else None),
                fmt_metric(m.snr_db if m else None),
                fmt_metric(m.top1_agreement if m else None),
                f"{v.tolerance.rtol:g} / {v.tolerance.atol:g}",
            ])
    if not rows:
        return ""
    return "<h2>Comparison with the host</h2>" + _table(
        ["device", "bundle", "config", "set", "output", "shape", "verdict", "max abs",
         "max rel", "mean abs", "cosine", "SNR dB", "top-1", "rtol / atol"], rows,
        set(range(7, 13)))


def _top_classes(data: ReportData) -> str:
    """bench --labels: per device, each class-score row's top-5 by name, host beside device;
    a device class that is not the host's at that rank is marked."""
    parts = []
    for top in data.top_classes:
        for t in top.classes:
            agree = _outcome("pass" if t.top1_agrees else "fail")
            parts.append(f"<p>{escape(top.serial)} {escape(top.bundle_name)} "
                         f"<code>{escape(top.config_key)}</code> set {t.set_index} output "
                         f"<code>{escape(t.output)}</code> row {t.row}: top-1 {agree}</p>")
            rows = []
            for rank in range(max(len(t.host), len(t.device))):
                h = t.host[rank] if rank < len(t.host) else None
                d = t.device[rank] if rank < len(t.device) else None
                same = h is not None and d is not None and h.index == d.index
                rows.append([
                    str(rank + 1),
                    escape(h.label) if h else "", fmt_metric(h.score) if h else "",
                    (escape(d.label) if same else f"<b class='fail'>{escape(d.label)}</b>")
                    if d else "<span class='muted'>missing</span>",
                    fmt_metric(d.score) if d else ""])
            parts.append(_table(["rank", "host", "score", f"device {top.serial}",
                                 "score"], rows, {2, 4}))
    if not parts:
        return ""
    return "<h2>Top classes (--labels)</h2>" + "".join(parts)


def _images(images: list[ImageComparison]) -> str:
    if not images:
        return ""
    parts = ["<h2>Image outputs</h2><p class='muted'>host (expected) and device output on one "
             "scale; difference map: black = equal, white = the largest difference</p>"]
    for im in images:
        lo, hi = im.value_range
        head = (f"{im.serial} <code>{escape(im.config_key)}</code> {escape(im.bundle_name)} "
                f"set {im.set_index} output <code>{escape(im.output)}</code> {im.shape} "
                + _outcome("pass" if im.passed else "fail"))
        parts.append(f"<div><p>{head}</p>")
        for png, caption in (
            (im.expected_png, f"host (expected), values {lo:.4g} .. {hi:.4g}"),
            (im.actual_png, f"device {im.serial}"),
            (im.diff_png, f"|device - host|, max {im.max_abs_diff:.3g}"),
        ):
            parts.append(f"<figure><img alt='{escape(caption)}' "
                         f"src='{ImageComparison.data_uri(png)}'>"
                         f"<figcaption>{escape(caption)}</figcaption></figure>")
        parts.append("</div>")
    return "".join(parts)


def _state(data: ReportData) -> str:
    rows = [[escape(g.serial), f"<code>{escape(g.config_key)}</code>", escape(w)]
            for g in data.groups for w in g.warnings]
    if not rows:
        return ""
    return ("<h2>Warnings (device state, provider fallbacks)</h2>"
            + _table(["device", "config", "warning"], rows))


def _providers(data: ReportData) -> str:
    """What `edgepack check` predicted for each provider asked for, beside what ran."""
    rows = []
    for g in data.groups:
        check = data.ep_checks.get(g.bundle_sha256)
        predicted = check.ep(g.config.ep) if check is not None else None
        if predicted is None and g.placement is None and g.ep_used == g.ep_requested:
            continue
        if g.placement is not None:
            truth = g.placement.summary
        elif g.ep_used is not None and g.ep_used != g.ep_requested:
            truth = f"ran on {g.ep_used}: the runner's library lacks {g.ep_requested}"
        else:
            truth = "not profiled (bench --profile reads where each node ran)"
        rows.append([escape(g.serial), escape(g.bundle_name),
                     f"<code>{escape(g.config_key)}</code>", _ep_cell(g),
                     escape(predicted.summary) if predicted else "-", escape(truth)])
    if not rows:
        return ""
    return ("<h2>Execution providers: predicted and measured</h2><p class='muted'>predicted: "
            "<code>edgepack check</code> (onnxruntime's op tables, no device); measured: what "
            "the runner reported and, with --profile, onnxruntime's profile</p>"
            + _table(["device", "bundle", "config", "EP", "predicted (check)",
                      "on the device"], rows))


def _profiles(data: ReportData) -> str:
    parts = []
    for g in data.groups:
        if not g.profile:
            continue
        rows = [[escape(op.op_type), escape(op.provider.removesuffix("ExecutionProvider")),
                 fmt_per_iteration(op.calls_per_iteration, op.calls),
                 fmt_per_iteration(op.ms_per_iteration, op.total_ms, ".3f"),
                 f"{op.share * 100:.1f} %"]
                for op in g.profile[: data.top_ops]]
        parts.append(f"<p><b>{escape(g.serial)}</b> {escape(g.bundle_name)} "
                     f"<code>{escape(g.config_key)}</code>, {escape(profile_heading(g))}</p>"
                     + _table(["operator", "EP", "calls / iteration", "ms / iteration",
                               "share"], rows, {2, 3, 4}))
    if not parts:
        return ""
    return f"<h2>Operator profile (top {data.top_ops} by kernel time)</h2>" + "".join(parts)


def _epoch(stamp: str) -> float:
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return 0.0


def _day(epoch: float) -> str:
    from datetime import UTC

    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M")

