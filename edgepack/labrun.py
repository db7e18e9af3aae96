"""A lab command's work, from its settings to its results: `bench` and `regress` end to end.

The CLI (edgepack/cli/lab.py) parses the command line into GivenOptions, layers it over lab.toml
with edgepack.lab.layer_settings, calls one of these and renders what comes back. Here the
targets are resolved, the bench runs in a temporary work directory with the history store
listening, candidate runs are judged against a baseline, and the reports are written. What the
user should see while that goes on (devices left out, progress, the reports written) reaches
the caller's LabListener when it happens, not after: a bench can take an hour.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgepack.errors import EdgepackError, ExitCode
from edgepack.records import BenchListener, BenchResult

if TYPE_CHECKING:
    from edgepack.bundle import Bundle
    from edgepack.history import HistoryRun, HistoryStore
    from edgepack.lab import LabSettings
    from edgepack.labels import Labels
    from edgepack.regress import Baseline, RegressionReport
    from edgepack.report import ReportData

# What reports written again from the store lack.
FROM_HISTORY = (" (from history: without the image comparisons, whose outputs are not "
                "stored)")


class LabListener(BenchListener):
    """Hears a lab command: the bench as it goes, and what is done around it."""

    def on_notes(self, notes: list[str]) -> None:
        """Servers or devices left out while the targets were resolved, before the bench."""

    def on_reports(self, written: list[Path], caveat: str) -> None:
        """Reports were written; `caveat` says what they lack ("" if nothing)."""


@dataclass(frozen=True)
class BenchOutcome:
    result: BenchResult
    report: ReportData


@dataclass(frozen=True)
class RegressOutcome:
    report: RegressionReport
    bench_exit: ExitCode  # the bench's own exit; OK when judged from history

    def exit_code(self) -> ExitCode:
        """1 on a regression, else 3 when a device failed, else 0; raises (bad input, 2) when
        latency went unjudged, since then no slowdown could have been flagged, and CI must not
        read that as a pass."""
        report = self.report
        if report.regressions:
            return ExitCode.MISMATCH
        if self.bench_exit == ExitCode.DEVICE:
            return ExitCode.DEVICE
        unjudged = [c for c in report.unjudged if c.latency is not None]
        if unjudged:
            raise EdgepackError(f"latency not judged in {len(unjudged)} of {report.compared} "
                                f"comparison(s): {unjudged[0].latency.too_few()}")
        return ExitCode.OK


# ---------------------------------------------------------------------------- bench


def run_lab_bench(settings: LabSettings, bundles: Sequence[Path],
                  listener: LabListener, labels: Path | None = None) -> BenchOutcome:
    """Bench `bundles` on the settings' devices; every run stored, the reports written.
    `labels` (--labels): the reports show each device's top-5 classes by name."""
    from edgepack.history import HistoryStore

    loaded = load_bundles(bundles)
    labelled: list[tuple[Bundle, Labels]] = []
    if labels is not None:  # checked before any device spends time
        from edgepack.labels import labels_for_bundles

        given = labels_for_bundles(labels, loaded)
        labelled = [(b, given[b.sha256]) for b in loaded if b.sha256 in given]
    with HistoryStore.open(settings.db) as store:
        result, report = _bench(settings, loaded, store, listener, regression=None,
                                labels=labelled)
    return BenchOutcome(result, report)


def load_bundles(paths: Sequence[Path]) -> list[Bundle]:
    from edgepack.bundle import load_bundle

    if not paths:
        raise EdgepackError("give at least one bundle directory")
    loaded = [load_bundle(p) for p in paths]
    shas = [b.sha256 for b in loaded]
    if len(set(shas)) != len(shas):
        raise EdgepackError("the same bundle is given twice")
    return loaded


def _bench(
    settings: LabSettings, bundles: list[Bundle], store: HistoryStore, listener: LabListener,
    regression: Callable[[BenchResult], RegressionReport] | None,
    labels: Sequence[tuple[Bundle, Labels]] = (),
) -> tuple[BenchResult, ReportData]:
    """Resolve the devices, run, store, judge, and write the reports; bench's and regress's."""
    from edgepack.bench import run_bench
    from edgepack.history import HistoryListener
    from edgepack.lab import resolve_targets
    from edgepack.report import build_report, write_reports

    targets, notes = resolve_targets(settings)
    listener.on_notes(notes)
    # A device given up as hung may still write into its run directory as this one goes.
    with tempfile.TemporaryDirectory(prefix="edgepack-bench-", ignore_cleanup_errors=True) as work:
        result = run_bench(bundles, targets, settings.params, [listener, HistoryListener(store)],
                           work_dir=Path(work), label=settings.label)
        judged = regression(result) if regression is not None else None
        # The image comparisons read the runs' outputs, which live in `work` until it goes.
        data = build_report(result, regression=judged, store=store,
                            bundles=bundles if settings.report_dir is not None else (),
                            labels=labels)
        if settings.report_dir is not None:
            listener.on_reports(write_reports(data, settings.report_dir), "")
    return result, data


# ---------------------------------------------------------------------------- regress


def run_regress(settings: LabSettings, bundle: Path, baseline: str, from_history: bool,
                listener: LabListener, run_baseline: bool = False) -> RegressOutcome:
    """Bench `bundle` (or, from history, take its newest stored session) and compare it with
    `baseline`'s runs of the same device model and configuration; with `run_baseline`, run
    the baseline bundle too, interleaved with the candidate (edgepack.regress)."""
    from edgepack.history import HistoryStore
    from edgepack.regress import compare_runs, resolve_baseline

    if run_baseline:
        return _regress_interleaved(settings, bundle, baseline, from_history, listener)
    with HistoryStore.open(settings.db) as store:
        base = resolve_baseline(store, baseline)  # before minutes of benching: fail fast

        def compare(candidate: Sequence[HistoryRun], stored: bool = False) -> RegressionReport:
            return compare_runs(store, candidate, base, settings.threshold, settings.alpha,
                                settings.params.rules(), stored_rules=stored)

        if from_history:
            candidate = stored_candidate(store, bundle_key(str(bundle)), settings.device)
            # Stored runs keep the verdicts their bench gave them: judged by the rules stored
            # with their sessions (the report says so when this command line's differ).
            report = compare(candidate, stored=True)
            bench_exit = ExitCode.OK
            if settings.report_dir is not None and report.compared:
                _rewrite_reports(store, candidate, report, settings.report_dir, listener)
        else:
            result, data = _bench(settings, load_bundles([bundle]), store, listener,
                                  regression=lambda r: compare(store.runs(session=r.session)))
            bench_exit = result.exit_code
            assert data.regression is not None
            report = data.regression
        if report.compared == 0:
            raise _nothing_compared(report, base, baseline, store)
    return RegressOutcome(report, bench_exit)


def _regress_interleaved(settings: LabSettings, bundle: Path, baseline: str,
                         from_history: bool, listener: LabListener) -> RegressOutcome:
    from edgepack.bundle import load_bundle
    from edgepack.history import HistoryListener, HistoryStore
    from edgepack.lab import resolve_targets
    from edgepack.regress import Baseline, compare_interleaved, run_interleaved

    if from_history:
        raise EdgepackError("--run-baseline runs both bundles now; --from-history runs "
                            "nothing: give one of them")
    path = Path(baseline).expanduser()
    if not path.is_dir():
        raise EdgepackError(f"--run-baseline needs --baseline to be a bundle directory, not "
                            f"{baseline!r}")
    base_bundle, cand_bundle = load_bundle(path), load_bundle(bundle)
    targets, notes = resolve_targets(settings)
    if len(targets) != 1:
        raise EdgepackError("--run-baseline runs on one device: --device SERIAL or host")
    listener.on_notes(notes)
    ref = Baseline(baseline, "bundle", base_bundle.sha256,
                   f"bundle {base_bundle.name} at {path} (sha256 {base_bundle.sha256[:12]}), "
                   "run interleaved with the candidate")
    with HistoryStore.open(settings.db) as store, tempfile.TemporaryDirectory(
            prefix="edgepack-regress-", ignore_cleanup_errors=True) as work:
        result = run_interleaved(base_bundle, cand_bundle, targets[0], settings.params,
                                 work_dir=Path(work),
                                 listeners=[listener, HistoryListener(store)],
                                 label=settings.label)
        report = compare_interleaved(store, result.session, base_bundle.sha256,
                                     cand_bundle.sha256, ref, settings.threshold,
                                     settings.alpha, settings.params.rules())
        if settings.report_dir is not None and report.compared:
            candidate = store.runs(session=result.session, bundle=cand_bundle.sha256)
            _rewrite_reports(store, candidate, report, settings.report_dir, listener)
    bench_exit = ExitCode.DEVICE if result.stopped_by == "error" else ExitCode.OK
    return RegressOutcome(report, bench_exit)


def _nothing_compared(report: RegressionReport, base: Baseline, ref: str,
                      store: HistoryStore) -> EdgepackError:
    keys = sorted({f"{c.model} {c.config_key}" for c in report.comparisons})
    return EdgepackError(
        f"--baseline {ref}: {base.description} has no runs for "
        f"{', '.join(keys) or 'these devices'} in {store.location}: bench the baseline "
        "first (e.g. with --label), or choose another --baseline")


def bundle_key(text: str) -> str:
    """A bundle as the store filters it: a directory's sha256, else the text (name or prefix)."""
    path = Path(text).expanduser()
    if path.is_dir():
        from edgepack.bundle import load_bundle

        return load_bundle(path, verify=False).sha256
    return text


def stored_candidate(store: HistoryStore, key: str, device: str | None) -> list[HistoryRun]:
    """The runs of bundle `key`'s newest stored session on each device of --device (all:
    its newest session anywhere)."""
    devices = [d.strip() for d in device.split(",")] if device and device != "all" else [None]
    runs: list[HistoryRun] = []
    for d in devices:
        session = store.latest_session(key, d)
        if session is None:
            raise EdgepackError(f"no stored runs of bundle {key!r}"
                                + (f" on {d}" if d else "") + f" in {store.location}")
        runs += [r for r in store.runs(session=session, bundle=key, device=d)
                 if r.id not in {x.id for x in runs}]
    return runs


def _rewrite_reports(store: HistoryStore, runs: list[HistoryRun], regression: RegressionReport,
                     report_dir: Path, listener: LabListener) -> None:
    """The reports of stored runs, as their bench wrote them, with this regression verdict."""
    from edgepack.report import build_report, write_reports

    result = store.bench_result(runs)
    if result.params.kind == "ab" and len(result.bundles) == 1:
        # An `ab` session's report plots its rounds' ratios B/A: it needs A's runs too.
        result = store.bench_result(store.runs(session=result.session))
    data = build_report(result, regression=regression, store=store)
    listener.on_reports(write_reports(data, report_dir), FROM_HISTORY)
