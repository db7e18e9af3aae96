"""junit.xml: one testcase per device x bundle x configuration, so CI shows a lab run natively.

Outputs beyond tolerance and regressions are <failure>s (the code under test is wrong or slower);
a device that failed, hung or vanished is an <error> (the test could not run); latency that
regress had too few runs to judge is <skipped> (it was not tested, which CI must not read as
a pass). Every testcase carries its runs' validity (edgepack.validity) as a property and beside
its latency figures. When one testcase has both a failure and an error, it is a failure, and the
device error is kept in its <system-err>. One <testsuite> per bundle, named `edgepack.<bundle>`;
testcases are named `<config key>` in class `<bundle>.<device serial>`, so CI tree views group
them by bundle, then by device.
"""

from __future__ import annotations

import platform
import re
import xml.etree.ElementTree as ET
from datetime import datetime

from edgepack.records import GroupSummary
from edgepack.report import ReportData
from edgepack.report.markdown import fmt_ms
from edgepack.stats import OUTLIER_RULE


def render_junit(data: ReportData) -> str:
    bench = data.bench
    root = ET.Element("testsuites", name="edgepack bench")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for ref in bench.bundles:
        groups = [g for g in data.groups if g.bundle_sha256 == ref.sha256]
        suite = ET.SubElement(root, "testsuite", name=f"edgepack.{ref.name}",
                              timestamp=bench.started_at[:19], hostname=platform.node())
        props = ET.SubElement(suite, "properties")
        for name, value in (("bundle_sha256", ref.sha256), ("bundle_path", ref.path),
                            ("session", bench.session), ("label", bench.label or "")):
            ET.SubElement(props, "property", name=name, value=value)
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        suite_time = 0.0
        for g in groups:
            outcome = data.outcome(g)
            counts["tests"] += 1
            counts["failures"] += outcome == "fail"
            counts["errors"] += outcome == "error"
            counts["skipped"] += outcome == "unjudged"
            seconds = _group_seconds(data, g)
            suite_time += seconds
            case = ET.SubElement(suite, "testcase", classname=f"{g.bundle_name}.{g.serial}",
                                 name=g.config_key, time=f"{seconds:.3f}")
            _fill_case(data, g, case, outcome)
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
        suite.set("time", f"{suite_time:.3f}")
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", f"{bench.wall_s:.3f}")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _fill_case(data: ReportData, g: GroupSummary, case: ET.Element, outcome: str) -> None:
    comparison = data.comparison(g)
    if outcome == "fail":
        messages, details = [], []
        failing = [c for c in g.checks if not c.verdict.passed]
        if failing:
            messages.append(f"{len(failing)} output(s) beyond tolerance")
            details += [f"set {c.set_index} output {c.verdict.name}: {c.verdict.reason}"
                        for c in failing]
        if comparison is not None and comparison.regressed:
            messages.append("regression")
            details.append(comparison.summary())
        kind = "mismatch" if failing and not (comparison and comparison.regressed) else (
            "regression" if not failing else "mismatch,regression")
        failure = ET.SubElement(case, "failure", type=kind, message=_xml("; ".join(messages)))
        failure.text = _xml("\n".join(details))
    elif outcome == "error":
        error = ET.SubElement(case, "error", type="device",
                              message=_xml((g.errors[0] if g.errors else "device error")[:500]))
        error.text = _xml("\n".join(g.errors))
    elif outcome == "unjudged" and comparison is not None and comparison.latency is not None:
        ET.SubElement(case, "skipped", type="too-few-runs",
                      message=_xml("latency not judged: " + comparison.latency.too_few()))
    validity = data.validity(g)
    props = ET.Element("properties")
    ET.SubElement(props, "property", name="validity", value=validity.verdict.value)
    for reason in validity.reasons:
        ET.SubElement(props, "property", name="validity_reason", value=_xml(reason))
    case.insert(0, props)  # the schema puts a testcase's properties first
    lines = []
    if g.stats is not None:
        s = g.stats
        lines.append(f"device {g.serial} ({g.model}), ep {g.ep_text}, {g.completed}/{g.runs} "
                     f"run(s), {s.count} iterations")
        lines.append(f"latency ms: median {fmt_ms(s.median_ms)} mean {fmt_ms(s.mean_ms)} "
                     f"p90 {fmt_ms(s.p90_ms)} p99 {fmt_ms(s.p99_ms)} CV {s.cv * 100:.1f}% "
                     f"({_xml(validity.text())})")
        lines.append(f"IQR/median {(g.spread or 0) * 100:.1f}%"
                     + (" (unstable)" if g.unstable else "") + " in the widest repeat; "
                     f"{g.outliers} outlier(s) {OUTLIER_RULE} of their repeat")
    if g.drift is not None:
        d = g.drift
        lines.append(f"repeat medians ms: {', '.join(fmt_ms(m) for m in g.repeat_medians_ms)}: "
                     f"{d.change * 100:.1f}% apart, the repeats' own spread "
                     f"{d.within_spread * 100:.1f}%" + (" (drifting)" if d.drifting else ""))
    if comparison is not None and not comparison.regressed:
        lines.append(comparison.summary())
    lines += [f"warning: {w}" for w in g.warnings]
    if lines:
        ET.SubElement(case, "system-out").text = _xml("\n".join(lines))
    if outcome == "fail" and g.errors:
        ET.SubElement(case, "system-err").text = _xml("\n".join(g.errors))


def _group_seconds(data: ReportData, g: GroupSummary) -> float:
    total = 0.0
    for r in data.bench.runs:
        if (r.serial, r.bundle_sha256, r.config_key) == (g.serial, g.bundle_sha256, g.config_key):
            try:
                total += (datetime.fromisoformat(r.finished_at)
                          - datetime.fromisoformat(r.started_at)).total_seconds()
            except ValueError:
                pass
    return total


_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml(text: str) -> str:
    """A runner's stderr can carry control characters (colour codes) XML 1.0 cannot hold."""
    return _NOT_XML.sub("?", text)
