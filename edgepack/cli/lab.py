"""Commands of the device lab: bench, history, regress."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from edgepack.cli.app import app
from edgepack.cli.options import JsonOpt, number
from edgepack.cli.render import console, emit_json, fmt, note
from edgepack.limits import MAX_ITERATIONS, MAX_SECONDS, MAX_THREADS, MIN_TIMEOUT

if TYPE_CHECKING:
    from collections.abc import Callable

    from edgepack.history import HistoryStore
    from edgepack.lab import Lab
    from edgepack.records import BenchListener, BenchParams, BenchResult, BenchRun
    from edgepack.regress import RegressionReport
    from edgepack.report import ReportData

DeviceOpt = Annotated[str | None, typer.Option(
    "--device", help="host, all (every attached device), or SERIAL,SERIAL (host may be one).")]
LabOpt = Annotated[Path | None, typer.Option(
    "--lab", help="A lab.toml: devices, adb servers and defaults.")]
RepeatOpt = Annotated[int | None, typer.Option(
    "--repeat", min=1, help="Runs per device and configuration (default 3).")]
IterationsOpt = Annotated[int | None, typer.Option(
    "--iterations", min=1, max=MAX_ITERATIONS, help="Timed iterations per run (default 50).")]
WarmupOpt = Annotated[int | None, typer.Option(
    "--warmup", min=0, max=MAX_ITERATIONS, help="Untimed runs first (default 1).")]
CooldownOpt = Annotated[float | None, typer.Option(
    "--cooldown", callback=number(0, MAX_SECONDS),
    help="Seconds between runs on one device (default 0).")]
ThreadsOpt = Annotated[str | None, typer.Option(
    "--threads", help="Intra-op threads; a comma list sweeps, e.g. 1,2,4 (default 1).")]
EpOpt = Annotated[str | None, typer.Option(
    "--ep", help="Execution providers; a comma list sweeps, e.g. cpu,xnnpack (default cpu).")]
AffinityOpt = Annotated[str | None, typer.Option(
    "--cpu-affinity", help="Pin the runner to CPUs: taskset's hex mask, e.g. f0 (big cores).")]
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


# ---------------------------------------------------------------------------- bench


@app.command()
def bench(
    bundles: Annotated[list[Path], typer.Argument(help="One or more bundle directories.")],
    device: DeviceOpt = None,
    lab: LabOpt = None,
    repeat: RepeatOpt = None,
    iterations: IterationsOpt = None,
    warmup: WarmupOpt = None,
    cooldown: CooldownOpt = None,
    threads: ThreadsOpt = None,
    ep: EpOpt = None,
    cpu_affinity: AffinityOpt = None,
    profile: Annotated[bool, typer.Option(
        "--profile", help="Profile with onnxruntime and show the top operators.")] = False,
    top: Annotated[int, typer.Option(
        "--top", min=1, help="Operators shown with --profile.")] = 10,
    timeout: TimeoutOpt = None,
    engine: EngineOpt = "auto",
    db: DbOpt = None,
    label: LabelOpt = None,
    report_dir: ReportDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Benchmark bundles on many devices in parallel; store every run; write reports.

    Exit 1 when outputs differ beyond tolerance, 3 when a device failed (the others still run).
    """
    from edgepack.history import HistoryStore

    lab_file = _load_lab(lab)
    params = _params(lab_file, repeat, iterations, warmup, cooldown, threads, ep, cpu_affinity,
                     timeout, profile, top)
    loaded = _load_bundles(bundles)
    with HistoryStore.open(db) as store:
        result, data = _run_bench(loaded, device, lab_file, engine, params, store, label,
                                  report_dir, json_out, regression=None)
        if json_out:
            from edgepack.report.json_report import report_document

            emit_json(report_document(data))
        else:
            _print_bench(data)
    if result.exit_code:
        raise typer.Exit(int(result.exit_code))


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
            emit_json({"db": str(store.path), "schema_version": store.schema_version,
                       "runs": runs})
            return
        from rich.markup import escape as esc
        from rich.table import Table

        out = console()
        if not runs:
            out.print(f"no runs in {store.path} match", markup=False)
            return
        table = Table(title=f"history ({store.path})", title_justify="left")
        for col in ("started (UTC)", "session", "label", "bundle", "device", "config", "run",
                    "status", "n", "median ms", "p90 ms", "CV"):
            table.add_column(col, justify="right" if col in ("n", "median ms", "p90 ms", "CV",
                                                             "run") else "left")
        for r in runs:
            s = r.stats
            status = {"pass": "[green]pass[/green]", "fail": "[red]FAIL[/red]"}.get(
                r.status, "[yellow]error[/yellow]")
            table.add_row(
                r.started_at[:19].replace("T", " "), r.session, r.label or "-",
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
def regress(
    bundle: Annotated[Path, typer.Argument(
        help="A bundle directory (with --from-history also a name or sha256 prefix).")],
    baseline: Annotated[str, typer.Option(
        "--baseline", help="previous, label:NAME, sha256:PREFIX, or a bundle directory.")],
    device: DeviceOpt = None,
    lab: LabOpt = None,
    from_history: Annotated[bool, typer.Option(
        "--from-history", help="Take the bundle's newest stored session instead of running.")
    ] = False,
    threshold: Annotated[float | None, typer.Option(
        "--threshold", callback=number(0),
        help="Percent slower (median) that counts as a regression (default 5).")] = None,
    alpha: Annotated[float | None, typer.Option(
        "--alpha", callback=number(0, 1, above=True, below=True),
        help="Significance level of the Mann-Whitney U test (default 0.01).")] = None,
    repeat: RepeatOpt = None,
    iterations: IterationsOpt = None,
    warmup: WarmupOpt = None,
    cooldown: CooldownOpt = None,
    threads: ThreadsOpt = None,
    ep: EpOpt = None,
    cpu_affinity: AffinityOpt = None,
    timeout: TimeoutOpt = None,
    engine: EngineOpt = "auto",
    db: DbOpt = None,
    label: LabelOpt = None,
    report_dir: ReportDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Run a bundle (or take its stored runs) and compare with baseline runs of the same device
    model and configuration. Exit 1 on a latency or accuracy regression."""
    from edgepack.errors import EdgepackError, ExitCode
    from edgepack.history import HistoryStore
    from edgepack.regress import DEFAULT_ALPHA, DEFAULT_THRESHOLD, compare_runs, resolve_baseline

    lab_file = _load_lab(lab)
    defaults = lab_file.defaults if lab_file else None
    pct = threshold if threshold is not None else (
        defaults.threshold_percent if defaults and defaults.threshold_percent is not None
        else DEFAULT_THRESHOLD * 100)
    level = alpha if alpha is not None else (
        defaults.alpha if defaults and defaults.alpha is not None else DEFAULT_ALPHA)
    # Options are checked before the history database is opened (and made, if new).
    params = None if from_history else _params(lab_file, repeat, iterations, warmup, cooldown,
                                               threads, ep, cpu_affinity, timeout, False, 10)
    with HistoryStore.open(db) as store:
        base = resolve_baseline(store, baseline)  # before minutes of benching: fail fast
        bench_exit = ExitCode.OK

        def compare(candidate: list[Any]) -> RegressionReport:
            return compare_runs(store, candidate, base, pct / 100, level)

        if from_history:
            candidate = _stored_candidate(store, _bundle_key(str(bundle)), device)
            report = compare(candidate)
            if report_dir is not None and report.compared:
                _write_stored_reports(store, candidate, report, report_dir, json_out)
        else:
            assert params is not None
            result, data = _run_bench(
                _load_bundles([bundle]), device, lab_file, engine, params, store, label,
                report_dir, json_out,
                regression=lambda r: compare(store.runs(session=r.session)))
            bench_exit = result.exit_code
            report = data.regression
        if report.compared == 0:
            keys = sorted({f"{c.model} {c.config_key}" for c in report.comparisons})
            raise EdgepackError(
                f"--baseline {baseline}: {base.description} has no runs for "
                f"{', '.join(keys) or 'these devices'} in {store.path}: bench the baseline "
                "first (e.g. with --label), or choose another --baseline")
    if json_out:
        from edgepack.report.json_report import regression_document

        emit_json(regression_document(report))
    else:
        _print_regression(report)
    if report.regressions:
        raise typer.Exit(int(ExitCode.MISMATCH))
    if bench_exit == ExitCode.DEVICE:
        raise typer.Exit(int(ExitCode.DEVICE))
    unjudged = [c for c in report.unjudged if c.latency is not None]
    if unjudged:
        # Not 0: no slowdown could have been flagged, and CI must not read that as a pass.
        raise EdgepackError(f"latency not judged in {len(unjudged)} of {report.compared} "
                            f"comparison(s): {unjudged[0].latency.too_few()}")


# ---------------------------------------------------------------------------- shared steps


def _load_lab(path: Path | None) -> Lab | None:
    if path is None:
        return None
    from edgepack.lab import load_lab

    return load_lab(path)


def _csv(option: str, text: str) -> list[str]:
    from edgepack.errors import EdgepackError

    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise EdgepackError(f"{option} needs at least one value")
    return items


def _params(
    lab: Lab | None, repeat: int | None, iterations: int | None, warmup: int | None,
    cooldown: float | None, threads: str | None, ep: str | None, cpu_affinity: str | None,
    timeout: float | None, profile: bool, top: int,
) -> BenchParams:
    """Options given on the command line, else the lab file's defaults, else the built-ins."""
    from edgepack.errors import EdgepackError
    from edgepack.lab import LabDefaults
    from edgepack.records import BenchParams

    d = lab.defaults if lab else LabDefaults()
    built = BenchParams()

    def pick(value: Any, lab_value: Any, default: Any) -> Any:
        return value if value is not None else (lab_value if lab_value is not None else default)

    thread_list = d.threads
    if threads is not None:
        try:
            thread_list = [int(t) for t in _csv("--threads", threads)]
        except ValueError:
            raise EdgepackError(f"--threads {threads!r}: expected integers, e.g. 1,2,4") from None
        if not all(0 <= t <= MAX_THREADS for t in thread_list):
            raise EdgepackError(f"--threads {threads!r}: each value must be from 0 (onnxruntime's "
                                f"default) to {MAX_THREADS}")
    return BenchParams(
        repeat=pick(repeat, d.repeat, built.repeat),
        iterations=pick(iterations, d.iterations, built.iterations),
        warmup=pick(warmup, d.warmup, built.warmup),
        cooldown_s=pick(cooldown, d.cooldown, built.cooldown_s),
        threads=tuple(thread_list or built.threads),
        eps=tuple(_csv("--ep", ep) if ep is not None else (d.ep or built.eps)),
        cpu_affinity=pick(cpu_affinity, d.cpu_affinity, None),
        profile=profile,
        top_ops=top,
        timeout_s=pick(timeout, d.timeout, built.timeout_s),
    )


def _load_bundles(paths: list[Path]) -> list[Any]:
    from edgepack.bundle import load_bundle
    from edgepack.errors import EdgepackError

    if not paths:
        raise EdgepackError("give at least one bundle directory")
    loaded = [load_bundle(p) for p in paths]
    shas = [b.sha256 for b in loaded]
    if len(set(shas)) != len(shas):
        raise EdgepackError("the same bundle is given twice")
    return loaded


def _bundle_key(text: str) -> str:
    """--bundle as the store filters it: a directory's sha256, else the text (name or prefix)."""
    path = Path(text).expanduser()
    if path.is_dir():
        from edgepack.bundle import load_bundle

        return load_bundle(path, verify=False).sha256
    return text


def _stored_candidate(store: HistoryStore, key: str, device: str | None) -> list[Any]:
    from edgepack.errors import EdgepackError

    devices = [d.strip() for d in device.split(",")] if device and device != "all" else [None]
    runs = []
    for d in devices:
        session = store.latest_session(key, d)
        if session is None:
            raise EdgepackError(f"no stored runs of bundle {key!r}"
                                + (f" on {d}" if d else "") + f" in {store.path}")
        runs += [r for r in store.runs(session=session, bundle=key, device=d)
                 if r.id not in {x.id for x in runs}]
    return runs


def _write_stored_reports(store: HistoryStore, runs: list[Any], regression: RegressionReport,
                          report_dir: Path, quiet: bool) -> None:
    """The reports of stored runs, as their bench wrote them, with this regression verdict."""
    from edgepack.report import build_report

    data = build_report(store.bench_result(runs), regression=regression, store=store)
    _write_reports(data, report_dir, quiet, " (from history: without the image comparisons, "
                   "whose outputs are not stored)")


def _write_reports(data: ReportData, report_dir: Path, quiet: bool, caveat: str = "") -> None:
    from edgepack.report import write_reports

    written = write_reports(data, report_dir)
    if not quiet:
        note("wrote " + ", ".join(str(p) for p in written) + caveat)


def _run_bench(
    bundles: list[Any], device: str | None, lab: Lab | None, engine: str, params: BenchParams,
    store: HistoryStore, label: str | None, report_dir: Path | None, quiet: bool,
    regression: Callable[[BenchResult], RegressionReport] | None,
) -> tuple[BenchResult, ReportData]:
    """Resolve the devices, run, store, and write the reports; shared by bench and regress."""
    import tempfile

    from edgepack.bench import run_bench
    from edgepack.history import HistoryListener
    from edgepack.lab import resolve_targets
    from edgepack.report import build_report

    targets, notes = resolve_targets(device, lab, engine)
    for text in notes:
        note(f"note: {text}")
    listeners: list[BenchListener] = [HistoryListener(store)]
    if not quiet:
        listeners.insert(0, _progress_listener())
    # A device given up as hung may still write into its run directory as this one goes.
    with tempfile.TemporaryDirectory(prefix="edgepack-bench-", ignore_cleanup_errors=True) as work:
        result = run_bench(bundles, targets, params, listeners, work_dir=Path(work), label=label)
        report = regression(result) if regression is not None else None
        data = build_report(result, regression=report, store=store,
                            bundles=bundles if report_dir is not None else ())
        if report_dir is not None:
            _write_reports(data, report_dir, quiet)
    return result, data


def _progress_listener() -> BenchListener:
    from edgepack.records import BenchListener, BenchPlan, RunStatus

    class Progress(BenchListener):
        """One line on stderr per finished run, so a long lab bench shows it is alive."""

        def __init__(self) -> None:
            self.total: dict[str, int] = {}
            self.done: dict[str, int] = {}

        def on_start(self, plan: BenchPlan) -> None:
            self.total = dict(plan.runs_per_device)
            p = plan.params
            note(f"bench {', '.join(b.name for b in plan.bundles)} on {len(plan.serials)} "
                 f"device(s): {len(p.threads) * len(p.eps)} configuration(s) x {p.repeat} "
                 f"run(s) x {p.iterations} iteration(s); session {plan.session}")

        def on_run_end(self, run: BenchRun) -> None:
            self.done[run.serial] = self.done.get(run.serial, 0) + 1
            head = (f"[{self.done[run.serial]}/{self.total.get(run.serial, '?')}] {run.serial} "
                    f"{run.bundle_name} {run.config_key} run {run.repeat + 1}")
            if run.result is None:
                note(f"{head}: error: {run.error}")
                return
            s = run.result.stats
            note(f"{head}: {'pass' if run.status is RunStatus.PASS else 'FAIL'}, median "
                 f"{fmt(s.median_ms)} ms, CV {s.cv * 100:.1f}%"
                 + "".join(f"; {w}" for w in run.warnings))

        def on_device_end(self, serial: str, error: str | None) -> None:
            if error:
                note(f"{serial}: stopped: {error}")

    return Progress()


def _print_bench(data: ReportData) -> None:
    from rich.markup import escape as esc
    from rich.table import Table

    from edgepack.cli.render import fmt_spread, latency_table

    out = console()
    rows = []
    for g in data.groups:
        if g.stats is None:
            continue
        outcome = data.outcome(g)
        rows.append((f"{g.serial} {g.bundle_name} {g.config_key}", g.stats, {
            "IQR/med": fmt_spread(g.spread, g.unstable),
            "outliers": str(g.outliers),
            "drift": "-" if g.drift is None else f"{g.drift.change * 100:.1f}%"
            + (" [yellow]drifting[/yellow]" if g.drifting else ""),
            "load ms": fmt(g.session_create_ms),
            "first ms": fmt(g.first_inference_ms),
            "peak MB": g.peak_rss_text,
            "outputs": {"pass": "[green]pass[/green]", "fail": "[red]FAIL[/red]"}.get(
                outcome, "[yellow]error[/yellow]"),
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
    counts = data.counts
    out.print(f"{counts['tests']} device x bundle x configuration result(s): "
              f"{counts['passed']} passed, {counts['failures']} failed, {counts['errors']} "
              f"error(s); session {data.bench.session}, {data.bench.wall_s:.1f} s", markup=False)


def _print_regression(report: RegressionReport) -> None:
    from rich.markup import escape as esc
    from rich.table import Table

    out = console()
    table = Table(title=f"against {report.baseline.description} (latency: > "
                        f"{report.threshold * 100:g}% slower and p < {report.alpha:g})",
                  title_justify="left")
    for col in ("device", "bundle", "config", "baseline", "base ms", "now ms", "change", "p",
                "verdict"):
        table.add_column(col, justify="right" if col in ("base ms", "now ms", "change", "p")
                         else "left")
    for c in report.comparisons:
        t = c.latency
        verdict = ("[red]REGRESSION[/red]" if c.regressed else
                   "[yellow]NOT JUDGED: too few samples[/yellow]" if c.unjudged else
                   "[green]improvement[/green]" if t is not None and t.improvement else
                   "ok" if c.baseline else f"[yellow]{esc(c.note or '')}[/yellow]")
        table.add_row(
            f"{c.serial} ({c.model})", c.bundle_name, c.config_key,
            (c.baseline.session + (f" {c.baseline.label}" if c.baseline.label else ""))
            if c.baseline else "-",
            fmt(t.baseline_median_ms) if t else "-", fmt(t.candidate_median_ms) if t else "-",
            f"{t.change * 100:+.1f}%" if t else "-", f"{t.p_value:.2g}" if t else "-", verdict)
    out.print(table)
    for c in report.comparisons:
        for a in c.accuracy:
            out.print(f"[red]accuracy regression[/red] {esc(c.serial)} {esc(c.config_key)}: "
                      f"set {a.set_index} output {esc(a.output)} passed in the baseline, fails "
                      f"now: {esc(a.reason)}", highlight=False)
        if c.unjudged and c.latency is not None:
            out.print(f"[yellow]latency not judged[/yellow] {esc(c.serial)} "
                      f"{esc(c.config_key)}: {esc(c.latency.too_few())}", highlight=False)
    n, u = len(report.regressions), len(report.unjudged)
    if n:
        line = f"{n} regression(s) in {len(report.comparisons)} comparison(s)"
    elif u:
        line = f"no regression found in {report.compared} comparison(s)"
    else:
        line = f"no regression in {report.compared} comparison(s)"
    if u:
        line += f", but latency was NOT JUDGED in {u} of them (too few samples)"
    out.print(line, markup=False)
