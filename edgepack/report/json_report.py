"""report.json, schema `edgepack-report/1`, see docs/report-schema.md."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgepack import __version__
from edgepack.profile import OpTime
from edgepack.records import BenchRun, GroupSummary
from edgepack.report import ReportData
from edgepack.serialize import dumps, to_jsonable

if TYPE_CHECKING:
    from edgepack.regress import Comparison, RegressionReport
    from edgepack.validity import ValidityRules

REPORT_SCHEMA = "edgepack-report/1"


def report_document(data: ReportData) -> dict[str, Any]:
    bench = data.bench
    failed = bench.failed_devices
    devices = []
    for serial in bench.serials:
        info = next((g.device for g in data.groups if g.serial == serial and g.device), None)
        devices.append({
            "serial": serial,
            "model": info.model if info else None,
            "kind": info.kind if info else None,
            "abi": info.abis[0] if info and info.abis else None,
            "sdk": info.sdk if info else None,
            "status": "error" if serial in failed else "ok",
            "error": failed.get(serial),
            "info": to_jsonable(info),
        })
    return {
        "schema": REPORT_SCHEMA,
        "generated_at": data.generated_at,
        "edgepack_version": __version__,
        "session": bench.session,
        "label": bench.label,
        "started_at": bench.started_at,
        "finished_at": bench.finished_at,
        "wall_s": bench.wall_s,
        "interrupted": bench.interrupted,
        "history_db": data.history_db,
        "params": to_jsonable(bench.params),
        "bundles": to_jsonable(bench.bundles),
        "devices": devices,
        "summary": data.counts,
        "results": [_group(data, g) for g in data.groups],
        "runs": [_run(r, bench.params.rules()) for r in bench.runs],
        "regression": _regression(data),
        "history": to_jsonable(data.trend),
    }


def render_json(data: ReportData) -> str:
    return dumps(report_document(data)) + "\n"


def _group(data: ReportData, g: GroupSummary) -> dict[str, Any]:
    comparison = data.comparison(g)
    return {
        "serial": g.serial,
        "model": g.device.model if g.device else None,
        "bundle_name": g.bundle_name,
        "bundle_sha256": g.bundle_sha256,
        "config_key": g.config_key,
        "config": to_jsonable(g.config),
        "outcome": data.outcome(g),
        "validity": {"verdict": (v := data.validity(g)).verdict.value, "reasons": v.reasons},
        "status": g.status,
        "regressed": bool(comparison and comparison.regressed),
        "runs": g.runs,
        "completed": g.completed,
        "engine": g.engine,
        "ep_requested": g.ep_requested,
        "ep_used": g.ep_used,
        "ep": g.ep_text,
        "ep_fallback": g.ep_used is not None and g.ep_used != g.ep_requested,
        "placement": to_jsonable(g.placement),
        "latency_ms": to_jsonable(g.stats),
        "unstable": g.unstable,
        "spread": g.spread,
        "outliers": g.outliers,
        "drift": to_jsonable(g.drift),
        "drifting": g.drifting,
        "repeat_medians_ms": g.repeat_medians_ms,
        "session_create_ms": g.session_create_ms,
        "first_inference_ms": g.first_inference_ms,
        "peak_rss_mb": g.peak_rss_mb,
        "peak_rss_scope": g.peak_rss_scope,
        "threads_used": g.threads_used,
        "outputs": [
            {"set_index": c.set_index, "name": c.verdict.name, "passed": c.verdict.passed,
             "reason": c.verdict.reason, "rtol": c.verdict.tolerance.rtol,
             "atol": c.verdict.tolerance.atol, "metrics": to_jsonable(c.verdict.metrics)}
            for c in g.checks
        ],
        "errors": g.errors,
        "warnings": g.warnings,
        "profile": [_op(op) for op in g.profile[: data.top_ops]],
        "regression": _comparison(comparison) if comparison else None,
        # bench --labels: top-5 by name, host beside this device
        "top_classes": to_jsonable(t.classes) if (t := data.top_of(g)) else None,
    }


def _op(op: OpTime) -> dict[str, Any]:
    # Per iteration is what a reader compares across runs of different lengths; properties are
    # not in to_jsonable's output.
    return {**to_jsonable(op), "calls_per_iteration": op.calls_per_iteration,
            "ms_per_iteration": op.ms_per_iteration}


def _validity(r: BenchRun, rules: ValidityRules) -> dict[str, Any]:
    from edgepack.validity import judge_run

    v = judge_run(r, rules)
    return {"verdict": v.verdict.value, "reasons": v.reasons}


def _run(r: BenchRun, rules: ValidityRules) -> dict[str, Any]:
    runner = r.result.sets[0].runner if r.result else None
    return {
        "serial": r.serial,
        "bundle_sha256": r.bundle_sha256,
        "config_key": r.config_key,
        "repeat": r.repeat,
        "status": r.status,
        "error": r.error,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "latencies_ms": r.latencies_ms,
        "latency_ms": to_jsonable(r.result.stats) if r.result else None,
        "session_create_ms": runner.session_create_ms if runner else None,
        "first_inference_ms": runner.first_inference_ms if runner else None,
        "peak_rss_kb": runner.peak_rss_kb_end if runner else None,
        "peak_rss_scope": runner.peak_rss_scope if runner else None,
        "threads_used": runner.threads_used if runner else None,
        "ep_requested": r.config.ep,
        "ep_used": runner.ep_used if runner else None,
        "runner_version": runner.runner_version if runner else None,
        "onnxruntime_version": runner.onnxruntime_version if runner else None,
        "state_before": to_jsonable(r.state_before),
        "state_after": to_jsonable(r.state_after),
        "warnings": r.warnings,
        "validity": _validity(r, rules),
        "cooldown_s": r.cooldown_waited_s,
    }


def _regression(data: ReportData) -> dict[str, Any] | None:
    return regression_document(data.regression) if data.regression is not None else None


def regression_document(report: RegressionReport) -> dict[str, Any]:
    """What `regress --json` prints and report.json's "regression" holds."""
    return {
        "baseline": to_jsonable(report.baseline),
        "threshold": report.threshold,
        "alpha": report.alpha,
        "compared": report.compared,
        "regressions": len(report.regressions),
        "unjudged": len(report.unjudged),
        "comparisons": [_comparison(c) for c in report.comparisons],
        "notes": report.notes,
    }


def _comparison(c: Comparison) -> dict[str, Any]:
    # The verdicts are properties, which to_jsonable leaves out: readers should not recompute.
    doc = to_jsonable(c)
    doc["regressed"] = c.regressed
    doc["unjudged"] = c.unjudged
    if c.latency is not None:
        doc["latency"]["regression"] = c.latency.regression
        doc["latency"]["improvement"] = c.latency.improvement
        doc["latency"]["judged"] = c.latency.judged
        doc["latency"]["verdict"] = c.latency.verdict
        doc["latency"]["reason"] = None if c.latency.judged else c.latency.too_few()
    return doc
