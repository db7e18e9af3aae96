"""The one mapping between the records and the history's rows, for every backend.

A row is a dict of column -> value: a backend builds its INSERT from the keys
(history.schema.insert), so a column is named once, here, and never found by its place.
Values are what a DB-API driver binds: str, int, float, None. Non-finite floats stay floats:
storing one is the backend's business (SQLite turns NaN into NULL, so history.sqlite writes
them as text), and reading accepts either.

Nested records (the device, configuration, device states, profile, the whole result) are JSON
columns written by serialize.to_jsonable and read by serialize.from_jsonable: one serializer,
the one every --json output uses, which keeps NaN and infinities and ignores keys a newer
edgepack added.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping, Sequence
from typing import Any

from edgepack import __version__
from edgepack.compare import Metrics
from edgepack.devices.base import DeviceInfo
from edgepack.devices.state import DeviceState
from edgepack.history.store import HistoryRun, StoredSession, StoredVerdict
from edgepack.profile import OpTime
from edgepack.records import BenchParams, BenchPlan, BenchResult, BenchRun, BundleRef, RunStatus
from edgepack.runner.result import RunConfig
from edgepack.serialize import from_jsonable, to_jsonable
from edgepack.stats import latency_stats

Row = dict[str, Any]

_STATS = ("mean_ms", "median_ms", "std_ms", "min_ms", "max_ms", "p90_ms", "p95_ms", "p99_ms",
          "cv")
_METRICS = ("max_abs_error", "max_rel_error", "mean_abs_error", "cosine_similarity", "snr_db",
            "mismatched", "total", "top1_agreement", "top5_agreement")


# ---------------------------------------------------------------------------- sessions


def session_row(plan: BenchPlan) -> Row:
    return {
        "id": plan.session,
        "label": plan.label,
        "started_at": plan.started_at,
        # A session begun again under its id starts over.
        "finished_at": None,
        "interrupted": 0,
        "host": platform.node(),
        "edgepack_version": __version__,
        "params_json": _json({"params": plan.params, "bundles": plan.bundles,
                              "serials": plan.serials}),
    }


def session_end_row(result: BenchResult) -> Row:
    return {"finished_at": result.finished_at, "interrupted": int(result.interrupted)}


def session_from_row(row: Mapping[str, Any]) -> StoredSession:
    doc = json.loads(row["params_json"])
    return StoredSession(
        id=row["id"],
        label=row["label"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        interrupted=bool(row["interrupted"]),
        host=row["host"],
        edgepack_version=row["edgepack_version"],
        params=from_jsonable(BenchParams, doc["params"]) if "params" in doc else None,
        bundles=from_jsonable(list[BundleRef], doc.get("bundles", [])),
        serials=from_jsonable(list[str], doc.get("serials", [])),
    )


# ---------------------------------------------------------------------------- runs


def run_row(session: str, run: BenchRun) -> Row:
    """A run as its `runs` row; its verdicts are verdict_rows'."""
    result = run.result
    runner = result.sets[0].runner if result else None
    stats = result.stats if result is not None and result.stats.count else None
    device = run.device
    row = {
        "session_id": session,
        "bundle_sha256": run.bundle_sha256,
        "bundle_name": run.bundle_name,
        "device_serial": run.serial,
        # model, ABI and SDK have columns of their own for SQL readers and the indexes; the
        # record is device_json.
        "device_model": device.model if device else None,
        "device_abi": device.abis[0] if device and device.abis else None,
        "device_sdk": device.sdk if device else None,
        "device_json": _json(device),
        "config_key": run.config_key,
        "config_json": _json(run.config),
        "repeat": run.repeat,
        "status": run.status.value,
        "error": run.error,
        "engine": result.engine if result else None,
        "runner_version": runner.runner_version if runner else None,
        "ort_version": runner.onnxruntime_version if runner else None,
        "ep_used": runner.ep_used if runner else None,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "latencies_json": _json(run.latencies_ms),
        "n": stats.count if stats else 0,
        # For SQL readers: run_from_row computes them again from the samples.
        **{name: getattr(stats, name) if stats else None for name in _STATS},
        "session_create_ms": runner.session_create_ms if runner else None,
        "first_inference_ms": runner.first_inference_ms if runner else None,
        "peak_rss_kb": runner.peak_rss_kb_end if runner else None,
        "state_before_json": _json(run.state_before),
        "state_after_json": _json(run.state_after),
        "warnings_json": _json(run.warnings),
        "profile_json": _json(run.profile),
        "result_json": _json(result),
    }
    if run.cooldown_waited_s or run.cooldown_cut:
        # Only when there was a wait: NULL reads back as none, and a row without these
        # columns is what every edgepack before schema 4 wrote.
        row["cooldown_waited_s"] = run.cooldown_waited_s
        row["cooldown_cut"] = int(run.cooldown_cut)
    return row


def run_from_row(row: Mapping[str, Any], verdicts: Sequence[StoredVerdict] = ()) -> HistoryRun:
    """A `runs` row (with its session's `label`) and its verdicts, read back."""
    latencies = [float(x) for x in json.loads(row["latencies_json"])]
    # Computed again from the samples, a row stored by any edgepack gets the spread and
    # outliers this one judges stability by.
    stats = latency_stats(latencies) if row["n"] and latencies else None
    return HistoryRun(
        id=row["id"],
        session=row["session_id"],
        label=row["label"],
        bundle_sha256=row["bundle_sha256"],
        bundle_name=row["bundle_name"],
        serial=row["device_serial"],
        model=row["device_model"],
        abi=row["device_abi"],
        sdk=row["device_sdk"],
        config_key=row["config_key"],
        config=_load(RunConfig, row["config_json"]),
        repeat=row["repeat"],
        status=RunStatus(row["status"]),
        error=row["error"],
        engine=row["engine"],
        runner_version=row["runner_version"],
        onnxruntime_version=row["ort_version"],
        ep_used=row["ep_used"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        latencies_ms=latencies,
        stats=stats,
        session_create_ms=_real(row["session_create_ms"]),
        first_inference_ms=_real(row["first_inference_ms"]),
        peak_rss_kb=row["peak_rss_kb"],
        state_before=_load(DeviceState, row["state_before_json"]),
        state_after=_load(DeviceState, row["state_after_json"]),
        warnings=_load(list[str], row["warnings_json"]),
        profile=_load(list[OpTime], row["profile_json"]),
        verdicts=list(verdicts),
        device=_load(DeviceInfo, row["device_json"]),
        host=row.get("host"),
        result_json=row["result_json"],
        # NULL in rows stored before schema version 4: no wait is known.
        cooldown_waited_s=_real(row.get("cooldown_waited_s")) or 0.0,
        cooldown_cut=bool(row.get("cooldown_cut")),
    )


# ---------------------------------------------------------------------------- verdicts


def verdict_rows(run_id: int, run: BenchRun) -> list[Row]:
    """One row per test set and output of a run that finished; none for one that did not."""
    if run.result is None:
        return []
    return [{"run_id": run_id, "set_index": s.index, "output": v.name, "passed": int(v.passed),
             "reason": v.reason, **_metric_columns(v.metrics)}
            for s in run.result.sets for v in s.verdicts]


def verdict_from_row(row: Mapping[str, Any]) -> StoredVerdict:
    metrics = None
    if row["total"] is not None:
        # `compared` has no column: it reads back as None ("not known").
        metrics = Metrics(
            max_abs_error=_real(row["max_abs_error"]),
            max_rel_error=_real(row["max_rel_error"]),
            mean_abs_error=_real(row["mean_abs_error"]),
            cosine_similarity=_real(row["cosine_similarity"]),
            snr_db=_real(row["snr_db"]),
            mismatched=row["mismatched"],
            total=row["total"],
            top1_agreement=_real(row["top1_agreement"]),
            top5_agreement=_real(row["top5_agreement"]),
        )
    return StoredVerdict(row["set_index"], row["output"], bool(row["passed"]), row["reason"],
                         metrics)


def _metric_columns(m: Metrics | None) -> Row:
    return {name: getattr(m, name) if m is not None else None for name in _METRICS}


# ---------------------------------------------------------------------------- values


def _json(value: Any) -> str | None:
    """A record as a JSON column; None stays NULL. Strict JSON (NaN as "nan"), which every
    database's JSON functions read."""
    if value is None:
        return None
    return json.dumps(to_jsonable(value), sort_keys=True)


def _load(tp: Any, text: str | None) -> Any:
    return None if text is None else from_jsonable(tp, json.loads(text))


def _real(value: float | str | None) -> float | None:
    # A float column holds a float, or text for one its database could not hold ("nan").
    return None if value is None else float(value)

