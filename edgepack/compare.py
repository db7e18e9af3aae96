"""Outputs against expected outputs: metrics and a verdict per output.

Independent of who produced the outputs (Python onnxruntime on the host, the native runner on the
host, a phone over adb): callers hand in arrays, this module judges them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgepack.bundle import Tolerance
from edgepack.errors import EdgepackError, ExitCode


@dataclass(frozen=True)
class Metrics:
    """How far actual is from expected.

    max_rel_error divides by |expected| where expected is non-zero (zeros are judged by atol
    alone). snr_db is 10*log10(sum(expected^2) / sum(error^2)), +inf when identical. For a 2-D
    float output read as class scores (rows of N >= 2 classes): top1_agreement is the share of
    rows whose arg-max agrees, top5_agreement the mean overlap of the rows' top-5 class sets.
    """

    max_abs_error: float
    max_rel_error: float
    mean_abs_error: float
    cosine_similarity: float
    snr_db: float
    mismatched: int  # elements beyond tolerance
    total: int
    top1_agreement: float | None = None
    top5_agreement: float | None = None


@dataclass(frozen=True)
class OutputVerdict:
    name: str
    passed: bool
    reason: str
    tolerance: Tolerance
    expected_dtype: str
    expected_shape: list[int]
    actual_dtype: str | None
    actual_shape: list[int] | None
    metrics: Metrics | None


def compare_output(
    name: str, expected: np.ndarray, actual: np.ndarray | None, tol: Tolerance
) -> OutputVerdict:
    def verdict(passed: bool, reason: str, metrics: Metrics | None = None) -> OutputVerdict:
        return OutputVerdict(
            name,
            passed,
            reason,
            tol,
            expected.dtype.name,
            list(expected.shape),
            None if actual is None else actual.dtype.name,
            None if actual is None else list(actual.shape),
            metrics,
        )

    if actual is None:
        return verdict(False, "output missing")
    if actual.shape != expected.shape:
        return verdict(
            False, f"shape differs: expected {list(expected.shape)}, got {list(actual.shape)}"
        )
    if actual.dtype != expected.dtype:
        return verdict(False, f"dtype differs: expected {expected.dtype}, got {actual.dtype}")

    e = expected.astype(np.float64).ravel()
    a = actual.astype(np.float64).ravel()
    e_nan, a_nan = np.isnan(e), np.isnan(a)
    nan_mismatch = int(np.count_nonzero(e_nan != a_nan))
    both_inf = np.isinf(e) & np.isinf(a) & (np.sign(e) == np.sign(a))
    finite = ~(e_nan | a_nan) & ~both_inf
    diff = np.zeros_like(e)
    with np.errstate(invalid="ignore", over="ignore"):
        diff[finite] = np.abs(a[finite] - e[finite])
    beyond = finite & ~(diff <= tol.atol + tol.rtol * np.abs(e))
    mismatched = int(np.count_nonzero(beyond)) + nan_mismatch
    metrics = _metrics(e[finite], a[finite], diff[finite], mismatched, e.size, expected, actual)
    if mismatched == 0:
        return verdict(True, "within tolerance", metrics)
    where = ""
    if np.any(beyond):
        flat = int(np.argmax(np.where(beyond, diff, -1.0)))
        index = tuple(int(i) for i in np.unravel_index(flat, expected.shape))
        where = (
            f"; worst at {list(index)}: expected {e[flat]:.6g}, got {a[flat]:.6g}"
            if expected.ndim
            else f"; expected {e[flat]:.6g}, got {a[flat]:.6g}"
        )
    nan_text = f" ({nan_mismatch} NaN where the other side has none)" if nan_mismatch else ""
    return verdict(
        False,
        f"{mismatched} of {e.size} elements beyond rtol={tol.rtol:g} atol={tol.atol:g}"
        f"{nan_text}{where}",
        metrics,
    )


def _metrics(
    e: np.ndarray,
    a: np.ndarray,
    diff: np.ndarray,
    mismatched: int,
    total: int,
    expected: np.ndarray,
    actual: np.ndarray,
) -> Metrics:
    if e.size == 0:
        return Metrics(0.0, 0.0, 0.0, 1.0, math.inf, mismatched, total)
    nonzero = e != 0
    max_rel = float(np.max(diff[nonzero] / np.abs(e[nonzero]))) if np.any(nonzero) else 0.0
    norm_e, norm_a = float(np.linalg.norm(e)), float(np.linalg.norm(a))
    if norm_e == 0 and norm_a == 0:
        cosine = 1.0
    elif norm_e == 0 or norm_a == 0:
        cosine = 0.0
    else:
        cosine = float(np.dot(e, a) / (norm_e * norm_a))
    signal, noise = float(np.sum(e * e)), float(np.sum(diff * diff))
    if noise == 0:
        snr = math.inf
    elif signal == 0:
        snr = -math.inf
    else:
        snr = 10.0 * math.log10(signal / noise)
    top1 = top5 = None
    if expected.ndim == 2 and expected.dtype.kind == "f" and expected.shape[1] >= 2:
        top1, top5 = _topk_agreement(expected, actual)
    return Metrics(
        max_abs_error=float(np.max(diff)),
        max_rel_error=max_rel,
        mean_abs_error=float(np.mean(diff)),
        cosine_similarity=cosine,
        snr_db=snr,
        mismatched=mismatched,
        total=total,
        top1_agreement=top1,
        top5_agreement=top5,
    )


def _topk_agreement(expected: np.ndarray, actual: np.ndarray) -> tuple[float, float | None]:
    e = np.nan_to_num(expected.astype(np.float64), nan=-np.inf)
    a = np.nan_to_num(actual.astype(np.float64), nan=-np.inf)
    top1 = float(np.mean(np.argmax(e, axis=1) == np.argmax(a, axis=1)))
    if expected.shape[1] < 5:
        return top1, None
    e5 = np.argsort(-e, axis=1, kind="stable")[:, :5]
    a5 = np.argsort(-a, axis=1, kind="stable")[:, :5]
    overlap = [len(set(x) & set(y)) / 5.0 for x, y in zip(e5.tolist(), a5.tolist(), strict=True)]
    return top1, float(np.mean(overlap))


def compare_outputs(
    expected: dict[str, np.ndarray],
    actual: dict[str, np.ndarray],
    tolerances: dict[str, Tolerance],
) -> list[OutputVerdict]:
    """One verdict per expected output, in the expected outputs' order."""
    return [
        compare_output(name, array, actual.get(name), tolerances[name])
        for name, array in expected.items()
    ]


def read_outputs(directory: Path, names: list[str]) -> dict[str, np.ndarray]:
    """Read output_<i>.pb files, matched to `names` by the names they carry, else by position.

    Missing files are simply absent from the result: the comparison reports them.
    """
    from edgepack.tensors import read_tensor

    directory = Path(directory)
    files = sorted(
        directory.glob("output_*.pb"),
        key=lambda p: int(m.group(1)) if (m := re.search(r"(\d+)$", p.stem)) else 0,
    )
    result: dict[str, np.ndarray] = {}
    for position, path in enumerate(files):
        try:
            name, array = read_tensor(path)
        except EdgepackError as exc:
            raise EdgepackError(f"an output the device wrote is unreadable: {exc.message}",
                                ExitCode.DEVICE) from None
        if not name and position < len(names):
            name = names[position]
        if name:
            result[name] = array
    return result
