"""onnxruntime's profiles (Chrome traces) as kernel time per operator type and provider."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgepack.errors import EdgepackError, ExitCode, short


@dataclass(frozen=True)
class OpTime:
    """Where the kernel time went, by operator type and execution provider."""

    op_type: str  # after fusion, e.g. FusedConv
    provider: str
    calls: int
    total_ms: float
    share: float  # of all kernel time in the profile


def parse_profile(path: Path) -> list[OpTime]:
    """onnxruntime's profile (a Chrome trace) -> kernel time per operator type, largest first.

    Node events named `<node>_kernel_time` carry `dur` in microseconds and `args.op_name` and
    `args.provider`; the `_fence_before/_after` events around them are not kernel time.
    """
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EdgepackError(f"{path}: unreadable onnxruntime profile ({short(exc)})",
                            ExitCode.DEVICE) from None
    events = doc.get("traceEvents", []) if isinstance(doc, dict) else doc
    totals: dict[tuple[str, str], list[float]] = {}
    for ev in events if isinstance(events, list) else []:
        if not isinstance(ev, dict) or ev.get("cat") != "Node":
            continue
        if not str(ev.get("name", "")).endswith("_kernel_time"):
            continue
        args = ev.get("args") if isinstance(ev.get("args"), dict) else {}
        key = (str(args.get("op_name") or "?"), str(args.get("provider") or "?"))
        entry = totals.setdefault(key, [0, 0.0])
        entry[0] += 1
        entry[1] += float(ev.get("dur") or 0) / 1000.0
    return _op_times({k: (int(v[0]), v[1]) for k, v in totals.items()})


def merge_op_times(profiles: Sequence[Sequence[OpTime]]) -> list[OpTime]:
    """Several runs' profiles as one: totals add up, shares are of the new total."""
    totals: dict[tuple[str, str], tuple[int, float]] = {}
    for ops in profiles:
        for op in ops:
            calls, ms = totals.get((op.op_type, op.provider), (0, 0.0))
            totals[(op.op_type, op.provider)] = (calls + op.calls, ms + op.total_ms)
    return _op_times(totals)


def _op_times(totals: dict[tuple[str, str], tuple[int, float]]) -> list[OpTime]:
    whole = sum(ms for _, ms in totals.values())
    ops = [OpTime(op, provider, calls, ms, ms / whole if whole > 0 else 0.0)
           for (op, provider), (calls, ms) in totals.items()]
    return sorted(ops, key=lambda o: (-o.total_ms, o.op_type))
