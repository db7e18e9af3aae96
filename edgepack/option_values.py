"""Command-line values from their text: every parser of an option's value, in one place.

Each parser takes the text as typed and returns a typed value, or raises EdgepackError (exit 2)
whose one line names the option and the text. Plain integers and floats are range-checked by
typer where the options are declared (edgepack/cli/options.py); what needs parsing (lists,
pairs, shapes, sizes) is here, for every command: export's and pack's inputs, pack's tolerances
and dims, bench's and regress's sweeps, virtual-device's byte sizes and sensors.

This is a module of its own, not part of inputs.py, because inputs.py imports numpy and the
parsers are wanted where numpy is not: lab.py and virtual-device parse here too, and nothing
here may slow `edgepack --help` (no numpy, onnx or typer; edgepack.runner.result, for the
execution providers, is imported when an --ep list is parsed).
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from edgepack.errors import EdgepackError
from edgepack.limits import MAX_THREADS, max_dim

# The dtypes `export --input NAME:SHAPE:DTYPE` names: edgepack.dtypes' names of the types both
# torch and onnxruntime's CPU provider have (random inputs of every type: edgepack.dtypes).
NUMPY_DTYPES = (
    "float32", "float16", "bfloat16", "float64", "int8", "uint8", "int16", "uint16", "int32",
    "uint32", "int64", "uint64", "bool",
)

# Decimal digits of any script, as int() reads them; str.isdigit() also took digits int()
# refuses ("²"), which then escaped as a ValueError.
_COUNT = re.compile(r"\d+")
_HUGE = 2**64  # above every limit an option here has


def _count(text: str) -> int | None:
    """Decimal digits -> their number, or None when `text` is not digits. Past 2**64 the number
    reads as 2**64, still above every limit: int() refuses strings of more than 4300 digits,
    which escaped as a ValueError."""
    if not _COUNT.fullmatch(text):
        return None
    digits = "".join(str(unicodedata.decimal(c)) for c in text).lstrip("0")
    return int(digits or "0") if len(digits) <= 20 else _HUGE


@dataclass(frozen=True)
class ExportInput:
    """One `--input NAME:SHAPE:DTYPE` of `edgepack export`."""

    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class DynamicAxis:
    """One `--dynamic NAME:AXIS:LABEL` of `edgepack export`."""

    name: str
    axis: int
    label: str


@dataclass(frozen=True)
class OutputTolerance:
    """One `--tolerance NAME=RTOL,ATOL` of `edgepack pack`."""

    name: str
    rtol: float
    atol: float


# ---------------------------------------------------------------------------- export


def parse_export_input(text: str) -> ExportInput:
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0]:
        raise EdgepackError(
            f"--input {text!r}: expected NAME:SHAPE[:DTYPE], e.g. input:1x3x32x32:float32"
        )
    name, shape_text = parts[0], parts[1]
    dtype = parts[2] if len(parts) == 3 else "float32"
    try:
        shape = tuple(int(d) for d in shape_text.lower().split("x")) if shape_text else ()
    except ValueError:
        raise EdgepackError(
            f"--input {text!r}: shape {shape_text!r} must be sizes joined by x, e.g. 1x3x32x32"
        ) from None
    if any(d <= 0 for d in shape):
        raise EdgepackError(f"--input {text!r}: every dimension must be a positive integer")
    if dtype not in NUMPY_DTYPES:
        raise EdgepackError(
            f"--input {text!r}: unknown dtype {dtype!r}; use one of {', '.join(NUMPY_DTYPES)}"
        )
    return ExportInput(name, shape, dtype)


def parse_dynamic(text: str) -> DynamicAxis:
    parts = text.split(":")
    if len(parts) != 3 or not parts[0] or not parts[2]:
        raise EdgepackError(f"--dynamic {text!r}: expected NAME:AXIS:LABEL, e.g. input:0:batch")
    try:
        axis = int(parts[1])
    except ValueError:
        raise EdgepackError(f"--dynamic {text!r}: AXIS must be an integer") from None
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", parts[2]):
        raise EdgepackError(f"--dynamic {text!r}: LABEL must be an identifier, e.g. batch")
    return DynamicAxis(parts[0], axis, parts[2])


# ---------------------------------------------------------------------------- pack


def parse_named_file(text: str) -> tuple[str, Path]:
    name, sep, file = text.partition("=")
    if not sep or not name or not file:
        raise EdgepackError(f"--input {text!r}: expected NAME=FILE")
    return name, Path(file)


def parse_resize(text: str) -> tuple[int, int]:
    """`--resize WxH` -> (width, height)."""
    m = re.fullmatch(r"(\d+)[xX](\d+)", text.strip())
    width, height = (_count(m.group(1)), _count(m.group(2))) if m else (None, None)
    if not width or not height:
        raise EdgepackError(f"--resize {text!r}: expected WIDTHxHEIGHT, e.g. 224x224")
    return width, height


def parse_floats(option: str, text: str) -> tuple[float, ...]:
    """A comma-separated list of finite numbers (--mean, --std)."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise EdgepackError(f"{option} {text!r}: expected numbers separated by commas") from None
    if not all(math.isfinite(v) for v in values):
        raise EdgepackError(f"{option} {text!r}: every value must be a finite number")
    return values


def parse_tolerance(text: str) -> OutputTolerance:
    name, sep, values = text.rpartition("=")
    parts = values.split(",")
    try:
        if not sep or len(parts) != 2:
            raise ValueError
        rtol, atol = float(parts[0]), float(parts[1])
    except ValueError:
        raise EdgepackError(
            f"--tolerance {text!r}: expected NAME=RTOL,ATOL, e.g. logits=1e-3,1e-5"
        ) from None
    if not all(math.isfinite(v) and v >= 0 for v in (rtol, atol)):
        raise EdgepackError(f"--tolerance {text!r}: RTOL and ATOL must be finite numbers >= 0")
    return OutputTolerance(name, rtol, atol)


def parse_dim(text: str) -> tuple[str, int]:
    """`--dim LABEL=SIZE`, a symbolic dimension's size for random inputs."""
    label, sep, value = text.partition("=")
    size = _count(value) if sep else None
    if not size:
        raise EdgepackError(f"--dim {text!r}: expected LABEL=SIZE, e.g. batch=4")
    # Any input with this dimension holds at least SIZE one-byte elements; the product with
    # the other dims is checked per input when the random value is made.
    if size > max_dim():
        raise EdgepackError(f"--dim {text!r}: SIZE may be at most {max_dim():,}, or an "
                            "input with this dimension could not be stored in a bundle")
    return label, size


# ---------------------------------------------------------------------------- bench, regress


def parse_list(option: str, text: str) -> list[str]:
    """A comma-separated list of at least one value; blanks around values are dropped."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise EdgepackError(f"{option} needs at least one value")
    return items


def parse_threads(text: str) -> tuple[int, ...]:
    """`--threads 1,2,4`: a sweep of intra-op thread counts."""
    try:
        threads = tuple(int(t) for t in parse_list("--threads", text))
    except ValueError:
        raise EdgepackError(f"--threads {text!r}: expected integers, e.g. 1,2,4") from None
    if not all(0 <= t <= MAX_THREADS for t in threads):
        raise EdgepackError(f"--threads {text!r}: each value must be from 0 (onnxruntime's "
                            f"default) to {MAX_THREADS}")
    return threads


def parse_eps(text: str) -> tuple[str, ...]:
    """`--ep cpu,xnnpack`: a sweep of execution providers."""
    from edgepack.runner.result import EXECUTION_PROVIDERS

    eps = tuple(parse_list("--ep", text))
    unknown = next((e for e in eps if e not in EXECUTION_PROVIDERS), None)
    if unknown is not None:
        raise EdgepackError(f"--ep {text!r}: unknown execution provider {unknown!r}: choose "
                            f"one of {', '.join(EXECUTION_PROVIDERS)}")
    return eps


def parse_cpu_affinity(text: str) -> str:
    """`--cpu-affinity MASK`, taskset's hex mask; returned as typed once it selects a CPU."""
    from edgepack.runner.result import parse_cpu_mask

    try:
        parse_cpu_mask(text)
    except EdgepackError as exc:
        raise EdgepackError(f"--cpu-affinity: {exc.message}") from None
    return text


# ---------------------------------------------------------------------------- virtual-device


_BYTES = re.compile(r"(\d+(?:\.\d+)?)\s*([KMG]?)i?B?", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}
# A signed 64-bit size: what off_t and the device shell's $((...)) arithmetic hold.
MAX_BYTES = 2**63 - 1


def parse_cooldown(text: str | float) -> float | None:
    """`--cooldown` (bench, regress, ab; lab.toml's `cooldown`): seconds between runs, or
    `auto` (None): until the device's thermal status and battery temperature are back to the
    session's start, bounded (edgepack.bench.cool_down)."""
    from edgepack.limits import MAX_SECONDS

    text = str(text)
    if text.strip().lower() == "auto":
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_SECONDS:
        raise EdgepackError(f"--cooldown {text!r}: expected auto or a number of seconds from 0 "
                            f"to {MAX_SECONDS:g}")
    return seconds


def parse_bytes(option: str, text: str) -> int:
    """Bytes from `123`, `64K`, `10M`, `1.5G` (binary multiples)."""
    match = _BYTES.fullmatch(text.strip())
    if not match:
        raise EdgepackError(f"{option} {text!r}: expected a number of bytes, e.g. 65536, 64K, "
                            "10M")
    # Exact, not float: a number of 309 digits was inf as a float, and int(inf) raised.
    whole, _, fraction = match.group(1).partition(".")
    fraction = fraction[:18]  # a billionth of a byte at G: finer is noise, and int() has limits
    unit = _UNITS[match.group(2).upper()]
    value = (_count(whole) or 0) * unit + int(Fraction(int(fraction or "0"), 10**len(fraction))
                                              * unit)
    if value > MAX_BYTES:
        raise EdgepackError(f"{option} {text!r}: expected at most {MAX_BYTES} bytes (8 EiB)")
    return value


def parse_pairs(option: str, items: list[str]) -> dict[str, str]:
    """Repeated `KEY=VALUE` options; a later KEY replaces an earlier one."""
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise EdgepackError(f"{option} {item!r}: expected KEY=VALUE")
        pairs[key] = value
    return pairs


def parse_temperatures(items: list[str]) -> dict[str, float]:
    """Repeated `--temperature NAME=CELSIUS`, each a plausible temperature."""
    temperatures: dict[str, float] = {}
    for name, text in parse_pairs("--temperature", items).items():
        try:
            celsius = float(text)
        except ValueError:
            celsius = math.nan
        if not (math.isfinite(celsius) and -273.15 <= celsius <= 1000):
            raise EdgepackError(f"--temperature {name}={text}: expected NAME=CELSIUS with "
                                "-273.15 to 1000 degrees, e.g. cpu0=45.5")
        temperatures[name] = celsius
    return temperatures
