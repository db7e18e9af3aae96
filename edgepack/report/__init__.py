"""Reports of a bench (or regress): report.json, junit.xml, report.md and report.html.

All four render one `ReportData`, built once from the bench's records, so they always agree.
report.json's schema is documented in docs/report-schema.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from edgepack.devices.state import now_iso
from edgepack.records import BenchResult, GroupSummary, RunStatus
from edgepack.trend import TrendSeries, bundle_trend

if TYPE_CHECKING:
    from edgepack.bundle import Bundle
    from edgepack.check import CheckReport
    from edgepack.history import HistoryStore
    from edgepack.labels import GroupTop, Labels
    from edgepack.regress import Comparison, RegressionReport
    from edgepack.report.images import ImageComparison
    from edgepack.validity import Validity

REPORT_FILES = ("report.json", "junit.xml", "report.md", "report.html")


@dataclass(frozen=True)
class ReportData:
    bench: BenchResult
    groups: list[GroupSummary]
    regression: RegressionReport | None = None
    trend: list[TrendSeries] = field(default_factory=list)
    images: list[ImageComparison] = field(default_factory=list)
    generated_at: str = ""
    history_db: str | None = None
    # `edgepack check`'s prediction per bundle (sha256) for the providers the bench asked for,
    # shown beside what the device reported.
    ep_checks: dict[str, CheckReport] = field(default_factory=dict)
    top_classes: list[GroupTop] = field(default_factory=list)  # bench --labels

    def top_of(self, g: GroupSummary) -> GroupTop | None:
        return next((t for t in self.top_classes
                     if (t.serial, t.bundle_sha256, t.config_key)
                     == (g.serial, g.bundle_sha256, g.config_key)), None)

    @property
    def top_ops(self) -> int:
        return self.bench.params.top_ops

    def comparison(self, g: GroupSummary) -> Comparison | None:
        if self.regression is None:
            return None
        return self.regression.find(g.serial, g.bundle_sha256, g.config_key)

    def outcome(self, g: GroupSummary) -> str:
        """"fail" (outputs differ or a regression), "error" (a run did not finish),
        "unjudged" (regress had too few runs to judge latency; outputs passed) or "pass"."""
        c = self.comparison(g)
        if g.status is RunStatus.FAIL or (c is not None and c.regressed):
            return "fail"
        if g.status is RunStatus.PASS and c is not None and c.unjudged:
            return "unjudged"  # never "pass": no slowdown could have been flagged
        return g.status.value

    def validity(self, g: GroupSummary) -> Validity:
        """The group's runs judged against the bench's minimums and cap: the worst run's
        verdict, every reason once (edgepack.validity.of_runs); shown beside every figure."""
        from edgepack.validity import of_runs

        return of_runs([r for r in self.bench.runs
                        if (r.serial, r.bundle_sha256, r.config_key)
                        == (g.serial, g.bundle_sha256, g.config_key)],
                       self.bench.params.rules())

    @property
    def counts(self) -> dict[str, int]:
        outcomes = [self.outcome(g) for g in self.groups]
        return {
            "tests": len(outcomes),
            "passed": outcomes.count("pass"),
            "failures": outcomes.count("fail"),
            "errors": outcomes.count("error"),
            "mismatches": sum(1 for g in self.groups if g.status is RunStatus.FAIL),
            "regressions": len(self.regression.regressions) if self.regression else 0,
            "unjudged": outcomes.count("unjudged"),
            "unstable": sum(1 for g in self.groups if g.unstable),
            "drifting": sum(1 for g in self.groups if g.drifting),
        }


def build_report(
    bench: BenchResult,
    *,
    regression: RegressionReport | None = None,
    store: HistoryStore | None = None,
    bundles: Sequence[Bundle] = (),
    max_images: int = 12,
    labels: Sequence[tuple[Bundle, Labels]] = (),
) -> ReportData:
    """Gather what the renderers need: summaries, the history trend, image comparisons."""
    groups = bench.groups()
    trend: list[TrendSeries] = []
    if store is not None:
        for name in dict.fromkeys(b.name for b in bench.bundles):
            keys = {(g.model, g.config_key) for g in groups if g.bundle_name == name and g.stats}
            trend += bundle_trend(store, name, keys)
    work_dirs: dict[tuple[str, str, str], str] = {}
    for run in bench.runs:
        if run.result is not None and run.work_dir:
            # A failing run's outputs are the ones worth looking at.
            key = (run.serial, run.bundle_sha256, run.config_key)
            if key not in work_dirs or run.status is RunStatus.FAIL:
                work_dirs[key] = run.work_dir
    images: list[ImageComparison] = []
    if bundles:
        from edgepack.report.images import image_comparisons

        images = image_comparisons(groups, {b.sha256: b for b in bundles}, work_dirs, max_images)
    return ReportData(bench, groups, regression, trend, images, now_iso(),
                      store.location if store is not None else None,
                      _ep_checks(groups, bundles), _top_classes(groups, labels, work_dirs))


def _top_classes(groups: Sequence[GroupSummary], labels: Sequence[tuple[Bundle, Labels]],
                 work_dirs: dict[tuple[str, str, str], str]) -> list[GroupTop]:
    from edgepack.labels import GroupTop, top_classes

    by_sha = {bundle.sha256: (bundle, given) for bundle, given in labels}
    tops = []
    for g in groups:
        work = work_dirs.get((g.serial, g.bundle_sha256, g.config_key))
        if g.bundle_sha256 in by_sha and work:
            bundle, given = by_sha[g.bundle_sha256]
            tops.append(GroupTop(g.serial, g.bundle_name, g.bundle_sha256, g.config_key,
                                 top_classes(bundle, given, Path(work))))
    return tops


def _ep_checks(groups: Sequence[GroupSummary], bundles: Sequence[Bundle]
               ) -> dict[str, CheckReport]:
    """check's analysis of each bundle for the providers its runs asked for; only when one
    asked for more than the CPU (it is cheap, but a CPU-only bench has nothing to compare)."""
    from edgepack.check import check_bundle
    from edgepack.errors import EdgepackError
    from edgepack.providers import PROVIDERS

    checks = {}
    for bundle in bundles:
        eps = list(dict.fromkeys(g.config.ep for g in groups
                                 if g.bundle_sha256 == bundle.sha256 and g.config.ep in PROVIDERS))
        if not eps or eps == ["cpu"] or bundle.sha256 in checks:
            continue
        try:
            checks[bundle.sha256] = check_bundle(bundle, eps)
        except EdgepackError:
            continue  # a report never fails for want of a prediction
    return checks


def write_reports(data: ReportData, directory: Path) -> list[Path]:
    from edgepack.fileio import atomic_write_text
    from edgepack.report.html_report import render_html
    from edgepack.report.json_report import render_json
    from edgepack.report.junit import render_junit
    from edgepack.report.markdown import render_markdown

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, render in zip(REPORT_FILES, (render_json, render_junit, render_markdown,
                                           render_html), strict=True):
        path = directory / name
        atomic_write_text(path, render(data))
        written.append(path)
    return written
