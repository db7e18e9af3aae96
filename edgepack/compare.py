"""Outputs against expected outputs: metrics and a verdict per output.

Independent of who produced the outputs (Python onnxruntime on the host, the native runner on the
host, a phone over adb): callers hand in arrays, this module judges them.

The rules, by kind of output:
- floats: an element passes when |actual - expected| <= atol + rtol * |expected|, both finite.
  NaN and ±inf are never judged by tolerance (inf - inf is NaN, and inf <= inf would pass any
  value): they must match exactly, sign included, and every element where either side is not
  finite and the other does not match it is a mismatch.
- integers and booleans: compared in their own dtype (float64 cannot tell 2^53 from 2^53 + 1),
  exactly unless a tolerance was set on purpose.
- strings: compared exactly, as bytes (onnx hands out bytes, onnxruntime str).

Metrics are total functions: whatever the values, each is a number, ±inf, or None where it is
undefined (cosine against a zero vector, any float metric of strings), never an exception.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgepack import dtypes
from edgepack.bundle.schema import Tolerance
from edgepack.errors import EdgepackError, ExitCode
from edgepack.tensors import STRING, array_dtype, string_bytes

# How many non-finite elements a verdict lists by position.
_SHOWN = 5


@dataclass(frozen=True)
class NonFiniteElement:
    index: list[int]
    expected: str  # "nan", "inf", "-inf" or the finite value as text
    actual: str


@dataclass(frozen=True)
class NonFinite:
    """NaN and ±inf on either side. Matching ones (NaN for NaN, +inf for +inf) agree and are
    left out of the error metrics; every other one is a mismatch."""

    expected_nan: int
    expected_inf: int  # +inf and -inf
    actual_nan: int
    actual_inf: int
    mismatched: int
    elements: list[NonFiniteElement] = field(default_factory=list)  # mismatches first, 5 at most


@dataclass(frozen=True)
class Metrics:
    """How far actual is from expected.

    max_abs_error, mean_abs_error and max_rel_error cover the `compared` elements that are finite
    on both sides. max_rel_error divides by max(|expected|, atol / rtol): below atol / rtol the
    tolerance is absolute, and dividing by a tiny expected value would report a huge "relative"
    error for an element well within tolerance. cosine_similarity and snr_db are of the whole
    output: a non-finite mismatch makes the error unbounded (snr_db -inf, cosine None).
    snr_db is 10*log10(sum(expected^2) / sum(error^2)), +inf when identical. cosine is None
    where it is undefined (one side all zeros). For an output read as class scores
    (class_count: [N, C] or [N, C, 1, 1] floats, not a box): top1_agreement is the share of
    rows whose top class agrees, where classes tied within tolerance count as one;
    top5_agreement is the mean overlap of the rows' top-5 sets, ties at the fifth place within
    tolerance included. Strings have only `mismatched` and `total`.
    """

    max_abs_error: float | None
    max_rel_error: float | None
    mean_abs_error: float | None
    cosine_similarity: float | None
    snr_db: float | None
    mismatched: int  # elements beyond tolerance, non-finite mismatches included
    total: int
    top1_agreement: float | None = None
    top5_agreement: float | None = None
    compared: int | None = None  # elements the error metrics cover (finite on both sides)
    nonfinite: NonFinite | None = None  # None: no NaN or inf on either side


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
            array_dtype(expected),
            list(expected.shape),
            None if actual is None else array_dtype(actual),
            None if actual is None else list(actual.shape),
            metrics,
        )

    if actual is None:
        return verdict(False, "output missing")
    if actual.shape != expected.shape:
        return verdict(
            False, f"shape differs: expected {list(expected.shape)}, got {list(actual.shape)}"
        )
    e_type, a_type = array_dtype(expected), array_dtype(actual)
    if e_type != a_type:
        return verdict(False, f"dtype differs: expected {e_type}, got {a_type}")

    kind = dtypes.kind_of(e_type)
    if kind == "string":
        metrics, reason = _compare_strings(expected, actual)
    elif kind in ("int", "bool") or (kind == "other" and expected.dtype.kind in "iub"):
        metrics, reason = _compare_integers(expected, actual, tol)
    else:
        metrics, reason = _compare_floats(expected, actual, tol, class_count(name, expected))
    if metrics.mismatched == 0:
        return verdict(True, "within tolerance" if e_type != STRING else "identical", metrics)
    return verdict(False, reason, metrics)


# ---------------------------------------------------------------------------- class scores

# Names that say an output is geometry, whatever its width.
_GEOMETRY = re.compile(r"box|coord|landmark|keypoint|offset|delta|regress|loc(?!al)", re.I)
# Names that say an output is scores, the one thing that makes a width of 4 class scores.
_SCORES = re.compile(r"logit|score|prob|class|cls|softmax|label|pred", re.I)


def class_count(name: str, array: np.ndarray) -> int | None:
    """C when an output reads as class scores (top-1/top-5 agreement, --labels), else None.

    The shape must be [N, C] or [N, C, 1, 1] (a classifier's head, or a 1x1 convolution's) of
    a float type, with C >= 2. The shape alone cannot tell four class scores from one box
    (x1, y1, x2, y2 or x, y, w, h), and an argmax over coordinates means nothing, so: a name
    that says geometry (box, coord, landmark, keypoint, offset, delta, regress, loc) is never
    class scores, and a width of 4 is class scores only when the name says scores (logit,
    score, prob, class, cls, softmax, label, pred). Widths 2, 3 and 5 and up are scores unless
    the name says geometry.
    """
    if array.dtype.kind != "f" and dtypes.kind_of(array_dtype(array)) != "float":
        return None  # integers are already labels (an argmax), not scores
    shape = array.shape
    if len(shape) == 4 and shape[2:] == (1, 1):
        shape = shape[:2]
    if len(shape) != 2 or shape[1] < 2 or shape[0] < 1 or _GEOMETRY.search(name):
        return None
    if shape[1] == 4 and not _SCORES.search(name):
        return None
    return int(shape[1])


# ---------------------------------------------------------------------------- by kind


def _compare_floats(expected: np.ndarray, actual: np.ndarray, tol: Tolerance,
                    classes: int | None = None) -> tuple[Metrics, str]:
    e = expected.astype(np.float64).ravel()
    a = actual.astype(np.float64).ravel()
    e_fin, a_fin = np.isfinite(e), np.isfinite(a)
    finite = e_fin & a_fin
    # Non-finite on either side: only the same non-finite value on the other side agrees.
    odd = ~finite
    same = odd & ((np.isnan(e) & np.isnan(a)) | (e == a))
    odd_bad = odd & ~same
    diff = np.zeros_like(e)
    with np.errstate(over="ignore", invalid="ignore"):
        diff[finite] = np.abs(a[finite] - e[finite])  # may overflow to inf: still a mismatch
        beyond = finite & ~(diff <= tol.atol + tol.rtol * np.abs(e))
    mismatched = int(np.count_nonzero(beyond)) + int(np.count_nonzero(odd_bad))

    nonfinite = None
    if np.any(odd):
        nonfinite = _nonfinite(e, a, odd, odd_bad, expected.shape)
    metrics = _float_metrics(e[finite], a[finite], diff[finite], tol,
                             unbounded=bool(np.any(odd_bad)))
    top1 = top5 = None
    if classes is not None:
        rows = expected.shape[0]
        top1, top5 = _topk_agreement(expected.reshape(rows, classes),
                                     actual.reshape(rows, classes), tol)
    metrics = Metrics(**metrics, mismatched=mismatched, total=int(e.size),
                      top1_agreement=top1, top5_agreement=top5,
                      compared=int(np.count_nonzero(finite)), nonfinite=nonfinite)

    parts = [f"{mismatched} of {e.size} elements beyond rtol={tol.rtol:g} atol={tol.atol:g}"]
    if nonfinite is not None and nonfinite.mismatched:
        first = nonfinite.elements[0]
        parts.append(f"{nonfinite.mismatched} where NaN or inf is not matched exactly (first at "
                     f"{first.index}: expected {first.expected}, got {first.actual})")
    if np.any(beyond):
        flat = int(np.argmax(np.where(beyond, diff, -1.0)))
        parts.append(f"worst at {_index(flat, expected.shape)}: expected "
                     f"{dtypes.show(e[flat], 'float64')}, got {dtypes.show(a[flat], 'float64')}")
    return metrics, "; ".join(parts)


def _compare_integers(expected: np.ndarray, actual: np.ndarray, tol: Tolerance
                      ) -> tuple[Metrics, str]:
    e, a = expected.ravel(), actual.ravel()
    if e.dtype.kind not in "iu":
        # bool, and ml_dtypes' int4 and uint4, whose values all fit int16.
        e, a = e.astype(np.int16), a.astype(np.int16)
    # |a - e| exactly: in uint64 arithmetic (mod 2^64) the difference of the larger minus the
    # smaller is exact for any two int64 or uint64 values, where float64 rounds above 2^53.
    larger = a >= e
    au, eu = a.astype(np.uint64), e.astype(np.uint64)
    diff = np.where(larger, au - eu, eu - au)
    if tol.rtol == 0 and tol.atol == 0:
        beyond = diff != 0
    else:
        with np.errstate(over="ignore"):
            beyond = diff.astype(np.float64) > tol.atol + tol.rtol * np.abs(e.astype(np.float64))
    mismatched = int(np.count_nonzero(beyond))
    exact = mismatched == 0 and bool(np.array_equal(e, a))
    metrics = _float_metrics(e.astype(np.float64), a.astype(np.float64),
                             diff.astype(np.float64), tol, unbounded=False, identical=exact)
    metrics = Metrics(**metrics, mismatched=mismatched, total=int(e.size),
                      compared=int(e.size))
    reason = f"{mismatched} of {e.size} elements differ"
    if tol.rtol or tol.atol:
        reason = f"{mismatched} of {e.size} elements beyond rtol={tol.rtol:g} atol={tol.atol:g}"
    if mismatched:
        flat = int(np.flatnonzero(beyond)[np.argmax(diff[beyond])])
        shown = array_dtype(expected)
        reason += (f"; worst at {_index(flat, expected.shape)}: expected "
                   f"{dtypes.show(expected.ravel()[flat], shown)}, got "
                   f"{dtypes.show(actual.ravel()[flat], shown)}")
    return metrics, reason


def _compare_strings(expected: np.ndarray, actual: np.ndarray) -> tuple[Metrics, str]:
    e = [string_bytes(x) for x in expected.ravel().tolist()]
    a = [string_bytes(x) for x in actual.ravel().tolist()]
    differ = [i for i, (x, y) in enumerate(zip(e, a, strict=True)) if x != y]
    metrics = Metrics(None, None, None, None, None, mismatched=len(differ), total=len(e),
                      compared=len(e))
    reason = f"{len(differ)} of {len(e)} strings differ"
    if differ:
        i = differ[0]
        reason += (f"; first at {_index(i, expected.shape)}: expected {_show(e[i])}, "
                   f"got {_show(a[i])}")
    return metrics, reason


def _show(value: bytes, limit: int = 40) -> str:
    text = repr(value.decode("utf-8", errors="backslashreplace"))
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def _index(flat: int, shape: tuple[int, ...]) -> list[int]:
    return [int(i) for i in np.unravel_index(flat, shape)] if shape else []


# ---------------------------------------------------------------------------- metrics


def _float_metrics(e: np.ndarray, a: np.ndarray, diff: np.ndarray, tol: Tolerance, *,
                   unbounded: bool, identical: bool | None = None) -> dict[str, float | None]:
    """The error metrics over finite values; `unbounded` when elements outside them mismatch
    (an inf where a finite value was expected: the error there has no size)."""
    if e.size == 0:
        max_abs = max_rel = mean_abs = 0.0
    else:
        max_abs = float(np.max(diff))
        with np.errstate(over="ignore"):
            mean_abs = float(np.mean(diff))
        # Below atol/rtol the tolerance is absolute: relative error is measured against that.
        floor = tol.atol / tol.rtol if tol.rtol > 0 else 0.0
        scale = np.maximum(np.abs(e), floor)
        measurable = scale > 0
        max_rel = (float(np.max(diff[measurable] / scale[measurable]))
                   if np.any(measurable) else 0.0)
    if unbounded:
        return dict(max_abs_error=max_abs, max_rel_error=max_rel, mean_abs_error=mean_abs,
                    cosine_similarity=None, snr_db=-math.inf)
    if identical is None:
        identical = bool(np.array_equal(e, a))
    cosine, snr = _cosine_snr(e, a, identical)
    return dict(max_abs_error=max_abs, max_rel_error=max_rel, mean_abs_error=mean_abs,
                cosine_similarity=cosine, snr_db=snr)


def _cosine_snr(e: np.ndarray, a: np.ndarray, identical: bool) -> tuple[float | None, float]:
    """Cosine and SNR computed on values scaled by their largest magnitude, so that values
    near 1e200 do not overflow the dot product and values near 1e-200 do not underflow it."""
    if identical:
        return 1.0, math.inf
    scale = max(float(np.max(np.abs(e), initial=0.0)), float(np.max(np.abs(a), initial=0.0)))
    if scale == 0 or not math.isfinite(scale):
        return (1.0 if scale == 0 else None), (math.inf if scale == 0 else -math.inf)
    # Differences of the scaled values: |a - e| itself may have overflowed to inf.
    es, as_ = e / scale, a / scale
    ds = np.abs(as_ - es)
    norm_e, norm_a = float(np.linalg.norm(es)), float(np.linalg.norm(as_))
    if norm_e == 0 or norm_a == 0:
        cosine = None  # a zero vector has no direction
    else:
        cosine = float(np.clip(np.dot(es, as_) / norm_e / norm_a, -1.0, 1.0))
    signal, noise = float(np.dot(es, es)), float(np.dot(ds, ds))
    ratio = signal / noise if noise > 0 else math.inf
    snr = 10.0 * math.log10(ratio) if 0 < ratio < math.inf else (math.inf if ratio else -math.inf)
    return cosine, snr


def _nonfinite(e: np.ndarray, a: np.ndarray, odd: np.ndarray, odd_bad: np.ndarray,
               shape: tuple[int, ...]) -> NonFinite:
    shown = [int(i) for i in np.flatnonzero(odd_bad)[:_SHOWN]]
    if len(shown) < _SHOWN:
        shown += [int(i) for i in np.flatnonzero(odd & ~odd_bad)[:_SHOWN - len(shown)]]
    return NonFinite(
        expected_nan=int(np.count_nonzero(np.isnan(e))),
        expected_inf=int(np.count_nonzero(np.isinf(e))),
        actual_nan=int(np.count_nonzero(np.isnan(a))),
        actual_inf=int(np.count_nonzero(np.isinf(a))),
        mismatched=int(np.count_nonzero(odd_bad)),
        elements=[NonFiniteElement(_index(i, shape), _text(e[i]), _text(a[i])) for i in shown],
    )


def _text(x: float) -> str:
    return dtypes.show(x, "float64")


def _topk_agreement(expected: np.ndarray, actual: np.ndarray, tol: Tolerance
                    ) -> tuple[float, float | None]:
    """Top-1 and top-5 agreement of class-score rows, where scores within tolerance of each
    other are ties: [0.5, 0.5] against [0.5, 0.5000001] agree on top-1, and all-equal scores
    agree on top-5."""
    e = np.nan_to_num(expected.astype(np.float64), nan=-np.inf)
    a = np.nan_to_num(actual.astype(np.float64), nan=-np.inf)

    def near(rows: np.ndarray, ref: np.ndarray) -> np.ndarray:
        # Classes whose score is within tolerance of `ref` (per row) or above it.
        with np.errstate(invalid="ignore", over="ignore"):
            bound = tol.atol + tol.rtol * np.abs(ref)
            return (rows >= ref[:, None]) | (ref[:, None] - rows <= bound[:, None])

    top1_e, top1_a = near(e, e.max(axis=1)), near(a, a.max(axis=1))
    top1 = float(np.mean(np.any(top1_e & top1_a, axis=1)))
    if expected.shape[1] < 5:
        return top1, None
    fifth_e = -np.sort(-e, axis=1)[:, 4]
    fifth_a = -np.sort(-a, axis=1)[:, 4]
    both = near(e, fifth_e) & near(a, fifth_a)
    top5 = float(np.mean(np.minimum(np.count_nonzero(both, axis=1), 5) / 5.0))
    return top1, top5


# ---------------------------------------------------------------------------- many outputs


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
