"""Commands of the device lab: bench, history, regress.

They parse and render; the work is edgepack.lab's (the settings, layered once; the targets) and
edgepack.labrun's (benching, judging against a baseline, writing reports).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgepack.cli.app import app
from edgepack.cli.options import DbOpt, JsonOpt, lab_options, number
from edgepack.cli.render import console, emit_json, fmt, note

if TYPE_CHECKING:
    from edgepack.lab import GivenOptions
    from edgepack.labrun import LabListener
    from edgepack.records import BenchPlan, BenchRun
    from edgepack.regress import RegressionReport
    from edgepack.report import ReportData


# ---------------------------------------------------------------------------- bench


@app.command()
@lab_options
def bench(
    bundles: Annotated[list[Path], typer.Argument(help="One or more bundle directories.")],
    given: GivenOptions,
    profile: Annotated[bool, typer.Option(
        "--profile", help="Profile with onnxruntime and show the top operators.")] = False,
    top: Annotated[int, typer.Option(
        "--top", min=1, help="Operators shown with --profile.")] = 10,
    labels: Annotated[Path | None, typer.Option(
        "--labels", help="Class names, one a line: the reports (and --json) show each "
        "device's top-5 of class-score outputs by name, beside the host's.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Benchmark bundles on many devices in parallel; store every run; write reports.

    Exit 1 when outputs differ beyond tolerance, 3 when a device failed (the others still run).
    """
    from dataclasses import replace

    from edgepack.lab import layer_settings
    from edgepack.labrun import run_lab_bench

    settings = layer_settings(replace(given, profile=profile, top=top))
    outcome = run_lab_bench(settings, bundles, _listener(quiet=json_out), labels=labels)
    if json_out:
        from edgepack.report.json_report import report_document

        emit_json(report_document(outcome.report))
    else:
        _print_bench(outcome.report)
    if outcome.result.exit_code:
        raise typer.Exit(int(outcome.result.exit_code))


# ---------------------------------------------------------------------------- history


@app.command()
def history(
    bundle: Annotated[str | None, typer.Option(
        "--bundle", help="A bundle directory, name, or sha256 prefix.")] = None,
    device: Annotated[str | None, typer.Option(
        "--device", help="A device serial or model.")] = None,
    since: Annotated[str | None, typer.Option(
        "--since", help="7d, 12h, 30m, 2w, or an ISO date (2025-01-31).")] = None,
    label: Annotated[str | None, typer.Option("--label", help="Only runs with this label.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="The newest N runs.")] = 50,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List stored runs, oldest first: where, what, how fast, pass or fail."""
    from edgepack.history import HistoryStore, parse_since

    key = _bundle_key(bundle) if bundle else None
    moment = parse_since(since) if since else None  # bad input before the store is made
    with HistoryStore.open(db) as store:
        runs = store.runs(bundle=key, device=device, label=label, since=moment, limit=limit,
                          newest_first=True)[::-1]
        if json_out:
            emit_json({"db": store.location, "schema_version": store.schema_version,
                       "runs": runs})
            return
        from rich.markup import escape as esc
        from rich.table import Table

        out = console()
        if not runs:
            out.print(f"no runs in {store.location} match", markup=False)
            return
        table = Table(title=f"history ({store.location})", title_justify="left")
        for col in ("started (UTC)", "host", "session", "label", "bundle", "device", "config",
                    "run", "status", "n", "median ms", "p90 ms", "CV"):
            table.add_column(col, justify="right" if col in ("n", "median ms", "p90 ms", "CV",
                                                             "run") else "left")
        for r in runs:
            s = r.stats
            status = {"pass": "[green]pass[/green]", "fail": "[red]FAIL[/red]"}.get(
                r.status, "[yellow]error[/yellow]")
            table.add_row(
                r.started_at[:19].replace("T", " "), r.host or "-", r.session, r.label or "-",
                f"{r.bundle_name} {r.bundle_sha256[:8]}", f"{r.serial} ({r.device_model})",
                r.config_key, str(r.repeat + 1), status, str(s.count) if s else "0",
                fmt(s.median_ms) if s else "-", fmt(s.p90_ms) if s else "-",
                f"{s.cv * 100:.1f}%" if s else "-",
            )
        out.print(table)
        for r in runs:
            if r.error:
                out.print(f"[yellow]{esc(r.serial)}[/yellow] {esc(r.config_key)} run "
                          f"{r.repeat + 1} ({r.started_at[:19]}): {esc(r.error)}",
                          highlight=False)


# ---------------------------------------------------------------------------- regress


@app.command()
@lab_options
def regress(
    bundle: Annotated[Path, typer.Argument(
        help="A bundle directory (with --from-history also a name or sha256 prefix).")],
    baseline: Annotated[str, typer.Option(
        "--baseline", help="previous, label:NAME, sha256:PREFIX, or a bundle directory.")],
    given: GivenOptions,
    from_history: Annotated[bool, typer.Option(
        "--from-history", help="Take the bundle's newest stored session instead of running; "
        "its runs are judged by the validity rules stored with that session.")
    ] = False,
    run_baseline: Annotated[bool, typer.Option(
        "--run-baseline", help="Run the baseline too (--baseline a bundle directory), "
        "interleaved with the candidate run by run (ABBA), --repeat runs each on one device: "
        "drift between two benches can no longer read as a change.")] = False,
    threshold: Annotated[float | None, typer.Option(
        "--threshold", callback=number(0),
        help="Equivalence margin in percent: a slowdown whose interval reaches past it is a "
        "regression (default 5).")] = None,
    alpha: Annotated[float | None, typer.Option(
        "--alpha", callback=number(0, 1, above=True, below=True),
        help="1 - the confidence level of the interval over runs (default 0.01: 99 %).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Run a bundle (or take its stored runs) and compare with baseline runs of the same device
    model and configuration. Exit 1 on a latency or accuracy regression."""
    from dataclasses import replace

    from edgepack.lab import layer_settings
    from edgepack.labrun import run_regress

    # Options are checked before the history database is opened (and made, if new).
    settings = layer_settings(replace(given, threshold_percent=threshold, alpha=alpha))
    outcome = run_regress(settings, bundle, baseline, from_history, _listener(quiet=json_out),
                          run_baseline=run_baseline)
    if json_out:
        from edgepack.report.json_report import regression_document

        emit_json(regression_document(outcome.report))
    else:
        _print_regression(outcome.report)
    code = outcome.exit_code()
    if code:
        raise typer.Exit(int(code))


# ---------------------------------------------------------------------------- rendering


def _bundle_key(text: str) -> str:
    # history's --bundle, read by the rule regress reads its bundle by, which labrun keeps.
    from edgepack.labrun import bundle_key

    return bundle_key(text)


def _listener(quiet: bool) -> LabListener:
    from edgepack.labrun import LabListener
    from edgepack.records import RunStatus

    class Progress(LabListener):
        """On stderr: notes on devices left out, then, unless --json, one line per finished run
        (so a long lab bench shows it is alive) and the reports written."""

        def __init__(self) -> None:
            self.total: dict[str, int] = {}
            self.done: dict[str, int] = {}

        def on_notes(self, notes: list[str]) -> None:
            for text in notes:
                note(f"note: {text}")

        def on_reports(self, written: list[Path], caveat: str) -> None:
            if not quiet:
                note("wrote " + ", ".join(str(p) for p in written) + caveat)

        def on_start(self, plan: BenchPlan) -> None:
            self.total = dict(plan.runs_per_device)
            p = plan.params
            if not quiet:
                note(f"bench {', '.join(b.name for b in plan.bundles)} on {len(plan.serials)} "
                     f"device(s): {len(p.threads) * len(p.eps)} configuration(s) x {p.repeat} "
                     f"run(s) x {p.iterations} iteration(s); session {plan.session}")

        def on_run_end(self, run: BenchRun) -> None:
            self.done[run.serial] = self.done.get(run.serial, 0) + 1
            if quiet:
                return
            head = (f"[{self.done[run.serial]}/{self.total.get(run.serial, '?')}] {run.serial} "
                    f"{run.bundle_name} {run.config_key} run {run.repeat + 1}")
            if run.result is None:
                note(f"{head}: error: {run.error}")
                return
            s = run.result.stats
            # A run with outputs can still be an error: --strict-ep's fallback.
            status = ("pass" if run.status is RunStatus.PASS else "FAIL" if run.error is None
                      else f"error: {run.error}")
            note(f"{head}: {status}, median {fmt(s.median_ms)} ms, CV {s.cv * 100:.1f}%"
                 + "".join(f"; {w}" for w in run.warnings))

        def on_device_end(self, serial: str, error: str | None) -> None:
            if error and not quiet:
                note(f"{serial}: stopped: {error}")

    return Progress()


def _print_bench(data: ReportData) -> None:
    from rich.markup import escape as esc
    from rich.table import Table

    from edgepack.cli.render import fmt_spread, latency_table

    out = console()
    rows = []
    # Judged against the bench's --min-iterations, --min-seconds and --max-seconds.
    validity = {(g.serial, g.bundle_sha256, g.config_key): data.validity(g) for g in data.groups}
    for g in data.groups:
        if g.stats is None:
            continue
        outcome = data.outcome(g)
        # A fallback is named in the row itself: the key says what was asked for.
        ran = "" if g.ep_used in (None, g.ep_requested) else f" (ran on {g.ep_used})"
        rows.append((f"{g.serial} {g.bundle_name} {g.config_key}{ran}", g.stats, {
            "IQR/med": fmt_spread(g.spread, g.unstable),
            "outliers": str(g.outliers),
            "drift": "-" if g.drift is None else f"{g.drift.change * 100:.1f}%"
            + (" [yellow]drifting[/yellow]" if g.drifting else ""),
            "load ms": fmt(g.session_create_ms),
            "first ms": fmt(g.first_inference_ms),
            "peak MB": g.peak_rss_text,
            "outputs": {"pass": "[green]pass[/green]", "fail": "[red]FAIL[/red]"}.get(
                outcome, "[yellow]error[/yellow]"),
            "validity": validity[(g.serial, g.bundle_sha256, g.config_key)].verdict.value,
        }))
    if rows:
        out.print(latency_table(rows))
    for g in data.groups:
        for c in g.checks:
            if not c.verdict.passed:
                out.print(f"[red]FAIL[/red] {esc(g.serial)} {esc(g.config_key)} set "
                          f"{c.set_index} output {esc(c.verdict.name)}: {esc(c.verdict.reason)}",
                          highlight=False)
        for e in g.errors:
            out.print(f"[yellow]error[/yellow] {esc(g.serial)} {esc(g.config_key)}: {esc(e)}",
                      highlight=False)
        for w in g.warnings:
            out.print(f"[yellow]warning[/yellow] {esc(g.serial)} {esc(g.config_key)}: {esc(w)}",
                      highlight=False)
        v = validity[(g.serial, g.bundle_sha256, g.config_key)]
        for reason in v.reasons:
            out.print(f"[yellow]{v.verdict.value}[/yellow] {esc(g.serial)} "
                      f"{esc(g.config_key)}: {esc(reason)}", highlight=False)
        if g.drift is not None and g.drifting:
            out.print(f"[yellow]drifting[/yellow] {esc(g.serial)} {esc(g.config_key)}: repeat "
                      f"medians {', '.join(fmt(m) for m in g.repeat_medians_ms)} ms are "
                      f"{g.drift.change * 100:.1f}% apart, beyond the repeats' own spread "
                      f"({g.drift.within_spread * 100:.1f}%)", highlight=False)
    from edgepack.report.markdown import fmt_per_iteration

    for g in data.groups:
        if not g.profile:
            continue
        n = g.profile[0].iterations
        covers = (f"{n} timed iterations" if n else
                  "counts include the first inference and the warm-ups")
        table = Table(title=f"top operators: {g.serial} {g.bundle_name} {g.config_key} "
                            f"({covers})", title_justify="left")
        for col in ("operator", "EP", "calls/iter", "ms/iter", "share"):
            table.add_column(col, justify="left" if col in ("operator", "EP") else "right")
        for op in g.profile[: data.top_ops]:
            table.add_row(op.op_type, op.provider.removesuffix("ExecutionProvider"),
                          fmt_per_iteration(op.calls_per_iteration, op.calls),
                          fmt_per_iteration(op.ms_per_iteration, op.total_ms, ".3f"),
                          f"{op.share * 100:.1f}%")
        out.print(table)
        if g.placement is not None:
            out.print(f"placement on {g.serial} {g.config_key}: {g.placement.summary}",
                      markup=False)
    counts = data.counts
    out.print(f"{counts['tests']} device x bundle x configuration result(s): "
              f"{counts['passed']} passed, {counts['failures']} failed, {counts['errors']} "
              f"error(s); session {data.bench.session}, {data.bench.wall_s:.1f} s", markup=False)


def _print_regression(report: RegressionReport) -> None:
    from rich.markup import escape as esc
    from rich.table import Table

    out = console()
    table = Table(title=f"against {report.baseline.description} (latency over runs: "
                        f"{(1 - report.alpha) * 100:g}% interval of the change, margin "
                        f"+/-{report.threshold * 100:g}%)", title_justify="left")
    for col in ("device", "bundle", "config", "baseline", "base ms", "now ms", "change",
                "interval", "runs", "verdict"):
        table.add_column(col, justify="right" if col in ("base ms", "now ms", "change",
                                                         "interval", "runs") else "left")
    for c in report.comparisons:
        t = c.latency
        verdict = ("[red]REGRESSION[/red]" if c.regressed else
                   "[yellow]NOT JUDGED: too few runs[/yellow]" if c.unjudged else
                   "[green]improvement[/green]" if t is not None and t.improvement else
                   esc(t.verdict) if t is not None else
                   "ok" if c.baseline else f"[yellow]{esc(c.note or '')}[/yellow]")
        table.add_row(
            f"{c.serial} ({c.model})", c.bundle_name, c.config_key,
            (c.baseline.session + (f" {c.baseline.label}" if c.baseline.label else ""))
            if c.baseline else "-",
            fmt(t.baseline_median_ms) if t else "-", fmt(t.candidate_median_ms) if t else "-",
            f"{t.change * 100:+.1f}%" if t else "-", t.interval_text() if t else "-",
            f"{t.runs_baseline}/{t.runs_candidate}" if t else "-", verdict)
    out.print(table)
    for c in report.comparisons:
        for a in c.accuracy:
            out.print(f"[red]accuracy regression[/red] {esc(c.serial)} {esc(c.config_key)}: "
                      f"set {a.set_index} output {esc(a.output)} passed in the baseline, fails "
                      f"now: {esc(a.reason)}", highlight=False)
        if c.unjudged and c.latency is not None:
            out.print(f"[yellow]latency not judged[/yellow] {esc(c.serial)} "
                      f"{esc(c.config_key)}: {esc(c.latency.too_few())}", highlight=False)
        if c.note and c.baseline is not None:
            out.print(f"[yellow]note[/yellow] {esc(c.serial)} {esc(c.config_key)}: "
                      f"{esc(c.note)}", highlight=False)
    for text in report.notes:
        out.print(f"note: {text}", markup=False)
    n, u = len(report.regressions), len(report.unjudged)
    if n:
        line = f"{n} regression(s) in {len(report.comparisons)} comparison(s)"
    elif u:
        line = f"no regression found in {report.compared} comparison(s)"
    else:
        line = f"no regression in {report.compared} comparison(s)"
    if u:
        line += f", but latency was NOT JUDGED in {u} of them (too few runs)"
    out.print(line, markup=False)
