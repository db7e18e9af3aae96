"""report.md: the report for a pull-request comment or a CI job summary."""

from __future__ import annotations

import math

from edgepack.records import GroupSummary
from edgepack.report import ReportData
from edgepack.stats import DRIFT_THRESHOLD, OUTLIER_RULE, UNSTABLE_SPREAD


def fmt_ms(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value >= 100:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def fmt_metric(value: float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and (math.isinf(value) or math.isnan(value)):
        return "inf" if value > 0 else ("-inf" if value < 0 else "nan")
    if value == 0:
        return "0"
    return f"{value:.3e}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.4g}"


OUTCOME = {"pass": "✅ pass", "fail": "❌ FAIL", "error": "⚠️ ERROR",
           "unjudged": "⚪ NOT JUDGED"}
VALIDITY = {"valid": "valid", "semivalid": "⚠️ semivalid", "invalid": "❌ invalid"}


def fmt_spread(g: GroupSummary) -> str:
    """The widest repeat's IQR / median, the figure `unstable` is judged on."""
    if g.spread is None or math.isnan(g.spread):
        return "-"
    return f"{g.spread * 100:.1f} %" + (" unstable" if g.unstable else "")


def fmt_drift(g: GroupSummary) -> str:
    """How far the repeats' medians are apart (max / min - 1)."""
    if g.drift is None:
        return "-"
    return f"{g.drift.change * 100:.1f} %" + (" drifting" if g.drifting else "")


def profile_heading(g: GroupSummary) -> str:
    iterations = g.profile[0].iterations if g.profile else 0
    return (f"over {iterations} timed iteration(s), first inference and warm-ups excluded"
            if iterations else "iterations not recorded: the counts include the first inference "
                               "and the warm-ups")


def render_markdown(data: ReportData) -> str:
    bench, counts = data.bench, data.counts
    names = ", ".join(b.name for b in bench.bundles)
    p = bench.params
    out = [
        f"# edgepack bench: {names} on {len(bench.serials)} device(s)",
        "",
        f"Session `{bench.session}`" + (f", label `{bench.label}`" if bench.label else "")
        + f", started {bench.started_at}, {bench.wall_s:.1f} s"
        + (" — **interrupted**" if bench.interrupted else "") + ".",
        f"{p.repeat} run(s) x {p.iterations} iteration(s) per configuration, warmup {p.warmup}, "
        f"cooldown {p.cooldown_s:g} s" + (f", CPU affinity {p.cpu_affinity}"
                                          if p.cpu_affinity else "") + ".",
        "",
        f"**{counts['tests']} test(s): {counts['passed']} passed, {counts['failures']} failed "
        f"({counts['mismatches']} output mismatch(es), {counts['regressions']} regression(s)), "
        f"{counts['errors']} error(s)"
        + (f", {counts['unjudged']} not judged (too few runs)" if counts["unjudged"] else "")
        + "**"
        + (f"; {counts['unstable']} unstable (IQR / median > {UNSTABLE_SPREAD * 100:g} %)"
           if counts["unstable"] else "")
        + (f"; {counts['drifting']} drifting between repeats (medians more than "
           f"{DRIFT_THRESHOLD * 100:g} % and the repeats' own spread apart)"
           if counts["drifting"] else "") + ".",
        "",
        "## Results",
        "",
        f"IQR / median (of the widest repeat) over {UNSTABLE_SPREAD * 100:g} % is unstable; "
        f"outliers are iterations {OUTLIER_RULE} of their repeat; drift is how far the repeats' "
        "medians are apart (max / min - 1). The other figures pool every repeat.",
        "",
        "Validity: valid, semivalid (the figures are real but the conditions moved) or "
        "invalid (the figures do not measure what was asked; no verdict rests on them); the "
        "reasons are under the table.",
        "",
        "| device | model | bundle | config | outcome | validity | n | median ms | p90 | p99 | "
        "CV | IQR / median | outliers | drift | load ms | first ms | peak MB | EP |",
        "|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for g in data.groups:
        s = g.stats
        cv = f"{s.cv * 100:.1f} %" if s else "-"
        spread = fmt_spread(g).replace(" unstable", " ⚠️ unstable")
        drift = fmt_drift(g).replace(" drifting", " ⚠️ drifting")
        out.append(
            f"| {g.serial} | {_cell(g.model)} | {_cell(g.bundle_name)} | `{g.config_key}` | "
            f"{OUTCOME[data.outcome(g)]} | {VALIDITY[data.validity(g).verdict.value]} | "
            f"{s.count if s else 0} | "
            f"{fmt_ms(s.median_ms if s else None)} | {fmt_ms(s.p90_ms if s else None)} | "
            f"{fmt_ms(s.p99_ms if s else None)} | {cv} | {spread} | "
            f"{g.outliers if s else '-'} | {drift} | {fmt_ms(g.session_create_ms)} | "
            f"{fmt_ms(g.first_inference_ms)} | "
            f"{g.peak_rss_text} | {_cell(g.ep_text)} |")

    reasons = [f"- **{g.serial}** {_cell(g.bundle_name)} `{g.config_key}`: "
               f"{data.validity(g).verdict.value}: {_cell(reason)}"
               for g in data.groups for reason in data.validity(g).reasons]
    out += ["", *reasons] if reasons else []

    problems = []
    for g in data.groups:
        where = f"**{g.serial}** {g.bundle_name} `{g.config_key}`"
        for c in g.checks:
            if not c.verdict.passed:
                problems.append(f"- {where}: set {c.set_index} output `{c.verdict.name}`: "
                                f"{_cell(c.verdict.reason)}")
        for e in g.errors:
            problems.append(f"- {where}: {_cell(e)}")
    if problems:
        out += ["", "## Failures and errors", "", *problems]

    if data.regression is not None:
        r = data.regression
        out += ["", f"## Regressions against {r.baseline.description}", "",
                f"Latency over runs (per-run medians): the {(1 - r.alpha) * 100:g} % interval of "
                f"the change; a regression is slower with confidence and not shown to be within "
                f"the +/-{r.threshold * 100:g} % margin. Invalid runs are left out. An accuracy "
                "regression is an output that passed in the baseline and fails now.", "",
                "| device | model | bundle | config | baseline | baseline ms | now ms | change | "
                "interval | runs | validity | verdict |",
                "|---|---|---|---|---|---:|---:|---:|---:|---:|---|---|"]
        for c in r.comparisons:
            t = c.latency
            base = (f"`{c.baseline.session}`" + (f" ({c.baseline.label})" if c.baseline.label
                                                 else "")) if c.baseline else "-"
            verdict = ("❌ REGRESSION" if c.regressed else
                       "⚪ NOT JUDGED: too few runs" if c.unjudged else
                       t.verdict if t is not None else
                       "ok" if c.baseline else (c.note or "no baseline"))
            g = next((x for x in data.groups if (x.serial, x.bundle_sha256, x.config_key)
                      == (c.serial, c.bundle_sha256, c.config_key)), None)
            valid = VALIDITY[data.validity(g).verdict.value] if g is not None else "-"
            if c.accuracy:
                verdict += " (accuracy: " + ", ".join(a.output for a in c.accuracy) + ")"
            out.append(
                f"| {c.serial} | {_cell(c.model)} | {_cell(c.bundle_name)} | `{c.config_key}` | "
                f"{base} | {fmt_ms(t.baseline_median_ms if t else None)} | "
                f"{fmt_ms(t.candidate_median_ms if t else None)} | "
                f"{f'{t.change * 100:+.1f} %' if t else '-'} | "
                f"{t.interval_text() if t else '-'} | "
                f"{f'{t.runs_baseline}/{t.runs_candidate}' if t else '-'} | {valid} | "
                f"{_cell(verdict)} |")
        unjudged = [f"- **{c.serial}** `{c.config_key}`: latency not judged, "
                    f"{_cell(c.latency.too_few())}" for c in r.unjudged if c.latency]
        out += ["", *unjudged] if unjudged else []

    out += ["", "## Outputs", "",
            "| device | bundle | config | set | output | shape | verdict | max abs | max rel | "
            "cosine | SNR dB | top-1 |",
            "|---|---|---|---:|---|---|---|---:|---:|---:|---:|---:|"]
    for g in data.groups:
        for c in g.checks:
            m = c.verdict.metrics
            out.append(
                f"| {g.serial} | {_cell(g.bundle_name)} | `{g.config_key}` | {c.set_index} | "
                f"`{c.verdict.name}` | {'x'.join(map(str, c.verdict.expected_shape))} | "
                f"{'pass' if c.verdict.passed else '**FAIL**'} | "
                f"{fmt_metric(m.max_abs_error if m else None)} | "
                f"{fmt_metric(m.max_rel_error if m else None)} | "
                f"{fmt_metric(m.cosine_similarity if m else None)} | "
                f"{fmt_metric(m.snr_db if m else None)} | "
                f"{fmt_metric(m.top1_agreement if m else None)} |")

    warnings = [f"- **{g.serial}** `{g.config_key}`: {_cell(w)}" for g in data.groups
                for w in g.warnings]
    if warnings:
        out += ["", "## Warnings (device state, provider fallbacks)", "", *warnings]

    profiled = [g for g in data.groups if g.profile]
    if profiled:
        out += ["", f"## Operator profile (top {data.top_ops} by kernel time)"]
        for g in profiled:
            out += ["", f"**{g.serial}** {g.bundle_name} `{g.config_key}`, "
                        f"{profile_heading(g)}", "",
                    "| operator | EP | calls / iteration | ms / iteration | share |",
                    "|---|---|---:|---:|---:|"]
            out += [f"| {op.op_type} | {op.provider.removesuffix('ExecutionProvider')} | "
                    f"{fmt_per_iteration(op.calls_per_iteration, op.calls)} | "
                    f"{fmt_per_iteration(op.ms_per_iteration, op.total_ms, '.3f')} | "
                    f"{op.share * 100:.1f} % |"
                    for op in g.profile[: data.top_ops]]
    return "\n".join(out) + "\n"


def fmt_per_iteration(value: float | None, total: float, spec: str = ".3g") -> str:
    """A per-iteration figure; without a known iteration count, the total marked as such."""
    if value is None:
        return f"{total:{spec}} (total)"
    return f"{value:{spec}}"


def _cell(text: str | None) -> str:
    # A pipe or a newline would break the table row.
    return (text or "-").replace("|", "\\|").replace("\n", " ")
