"""onnxruntime's profiles (Chrome traces) as kernel time per operator type and provider.

The runner profiles its whole session: the first inference (allocations, kernel selection,
often several times a steady iteration), the warm-ups, then the timed iterations. Only the timed
iterations are counted here, so the operator shares describe the runs whose latencies are
reported, and calls are given per iteration.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepack.errors import EdgepackError, ExitCode, short


@dataclass(frozen=True)
class OpTime:
    """Where the kernel time of the timed iterations went, by operator type and provider."""

    op_type: str  # after fusion, e.g. FusedConv
    provider: str
    calls: int  # over all `iterations`
    total_ms: float  # over all `iterations`
    share: float  # of all kernel time in the profile
    # How many timed iterations the counts cover; 0: unknown (stored by an edgepack that counted
    # the first inference and the warm-ups too).
    iterations: int = 0

    @property
    def calls_per_iteration(self) -> float | None:
        return self.calls / self.iterations if self.iterations else None

    @property
    def ms_per_iteration(self) -> float | None:
        return self.total_ms / self.iterations if self.iterations else None


def parse_profile(path: Path, iterations: int) -> list[OpTime]:
    """onnxruntime's profile (a Chrome trace) -> kernel time per operator type, largest first,
    over the last `iterations` inferences: the timed ones, as many as the runner reported
    latencies for.

    Each inference is a `model_run` event (cat "Session") spanning `ts` .. `ts + dur`
    (microseconds); node events named `<node>_kernel_time` (cat "Node") carry `dur` and
    `args.op_name` and `args.provider`, and count when they start inside a counted span. The
    `_fence_before/_after` events around them are not kernel time.
    """
    if iterations < 1:
        raise ValueError("parse_profile needs the number of timed iterations (>= 1)")
    events, runs = _events_and_runs(path)
    if len(runs) < iterations:
        raise EdgepackError(
            f"{path}: the profile has {len(runs)} model_run event(s), fewer than the "
            f"{iterations} timed iteration(s) the runner reported: it cannot tell the timed "
            "iterations from the first inference and the warm-ups", ExitCode.DEVICE)
    timed = runs[-iterations:]
    starts = [start for start, _ in timed]
    totals: dict[tuple[str, str], list[float]] = {}
    for ev in events:
        if ev.get("cat") != "Node" or not str(ev.get("name", "")).endswith("_kernel_time"):
            continue
        ts = _number(ev, "ts")
        i = bisect_right(starts, ts) - 1
        if i < 0 or ts > timed[i][1]:
            continue  # the first inference, a warm-up, or between runs
        args = ev.get("args") if isinstance(ev.get("args"), dict) else {}
        key = (str(args.get("op_name") or "?"), str(args.get("provider") or "?"))
        entry = totals.setdefault(key, [0, 0.0])
        entry[0] += 1
        entry[1] += _number(ev, "dur") / 1000.0
    return _op_times({k: (int(v[0]), v[1]) for k, v in totals.items()}, iterations)


def merge_op_times(profiles: Sequence[Sequence[OpTime]]) -> list[OpTime]:
    """Several runs' profiles as one: totals and iterations add up, shares are of the new total.
    One profile of unknown iterations makes the merged count unknown too."""
    totals: dict[tuple[str, str], tuple[int, float]] = {}
    counts = []
    for ops in profiles:
        if not ops:
            continue
        counts.append(min(op.iterations for op in ops))
        for op in ops:
            calls, ms = totals.get((op.op_type, op.provider), (0, 0.0))
            totals[(op.op_type, op.provider)] = (calls + op.calls, ms + op.total_ms)
    return _op_times(totals, 0 if 0 in counts else sum(counts))


def _op_times(totals: dict[tuple[str, str], tuple[int, float]], iterations: int
              ) -> list[OpTime]:
    whole = sum(ms for _, ms in totals.values())
    ops = [OpTime(op, provider, calls, ms, ms / whole if whole > 0 else 0.0, iterations)
           for (op, provider), (calls, ms) in totals.items()]
    return sorted(ops, key=lambda o: (-o.total_ms, o.op_type))


def _number(ev: dict[str, Any], key: str) -> float:
    try:
        return float(ev.get(key) or 0)
    except (TypeError, ValueError):
        return 0.0


# edgepack's --ep names -> the provider names onnxruntime writes in a profile's node events.
ORT_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
    "nnapi": "NnapiExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
}


@dataclass(frozen=True)
class EpPlacement:
    """Where one timed inference's nodes ran, read from onnxruntime's profile: the device's
    truth beside `edgepack check`'s prediction.

    A compiling provider (NNAPI, CoreML) runs each partition as one fused node, so for those
    `nodes_on_ep` counts partitions' fused nodes, not the model's nodes inside them."""

    ep: str  # the provider asked for (edgepack's name)
    nodes: int  # node events in one inference
    nodes_on_ep: int
    partitions: int  # runs of consecutive nodes on the asked provider
    cpu_ops: list[str]  # operator types that ran on the CPU instead (empty when cpu was asked)
    by_provider: dict[str, int]

    @property
    def summary(self) -> str:
        if self.ep == "cpu":
            return f"cpu: all {self.nodes} node(s)"
        text = (f"{self.ep}: {self.nodes_on_ep} of {self.nodes} node(s) in "
                f"{self.partitions} partition(s)")
        if self.cpu_ops:
            text += f"; on the CPU: {', '.join(self.cpu_ops)}"
        return text


def _events_and_runs(path: Path) -> tuple[list[dict[str, Any]], list[tuple[float, float]]]:
    """A profile's events (dicts only: a truncated or foreign file is not trusted), and its
    inferences, the `model_run` spans (start, end) in microseconds, in time order."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EdgepackError(f"{path}: unreadable onnxruntime profile ({short(exc)})",
                            ExitCode.DEVICE) from None
    events = doc.get("traceEvents", []) if isinstance(doc, dict) else doc
    events = [ev for ev in (events if isinstance(events, list) else []) if isinstance(ev, dict)]
    runs = sorted((_number(ev, "ts"), _number(ev, "ts") + _number(ev, "dur")) for ev in events
                  if ev.get("cat") == "Session" and ev.get("name") == "model_run")
    return events, runs


def parse_placement(path: Path, ep: str) -> EpPlacement:
    """The last inference of a profile (a timed one), node by node in the order they ran."""
    events, runs = _events_and_runs(path)
    if not runs:
        raise EdgepackError(f"{path}: the profile has no model_run event", ExitCode.DEVICE)
    start, end = runs[-1]
    nodes = sorted(
        (_number(ev, "ts"), ev.get("args") if isinstance(ev.get("args"), dict) else {})
        for ev in events
        if ev.get("cat") == "Node" and str(ev.get("name", "")).endswith("_kernel_time")
        and start <= _number(ev, "ts") <= end
    )
    wanted = ORT_PROVIDERS.get(ep, ep)
    by_provider: dict[str, int] = {}
    partitions, on_ep, previous = 0, 0, False
    cpu_ops: list[str] = []
    for _, args in nodes:
        provider = str(args.get("provider") or "?")
        by_provider[provider] = by_provider.get(provider, 0) + 1
        here = provider == wanted
        on_ep += here
        partitions += here and not previous
        previous = here
        if not here and ep != "cpu":
            cpu_ops.append(str(args.get("op_name") or "?"))
    return EpPlacement(ep, len(nodes), on_ep, partitions, sorted(set(cpu_ops)), by_provider)
