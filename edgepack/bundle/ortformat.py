"""`pack --format ort|both`: the ORT flatbuffer model, the format onnxruntime's mobile package
and reduced builds run, made by onnxruntime's own converter.

What a bundle pushes per format (a runner reads one model file, and nothing else of the model):

    onnx   predict.onnx + init.bin (its external data)
    ort    predict.ort alone: an ORT-format model embeds its initializers, so there is no
           init.bin and no predict.onnx in the bundle
    both   predict.ort; predict.onnx and init.bin stay in the bundle as host files (hashed, never
           pushed), for `check` and for anyone who wants to look at the graph

`required_operators.config` (the operator list a reduced onnxruntime build needs for the model)
is a host file in both ORT formats: it is for whoever builds onnxruntime, not for the runner.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepack.bundle.schema import INIT, PREDICT, TensorSpec, Tolerance
from edgepack.errors import EdgepackError, ExitCode, short

FORMATS = ("onnx", "ort", "both")
ORT_MODEL = "predict.ort"
OPERATORS_CONFIG = "required_operators.config"
# The converter's target: "arm" keeps the layout transforms that only x86 kernels have
# (NCHWc) out of the saved graph, so one ORT file runs on a phone and on this machine alike;
# it also lets QDQ int8 fuse into int8 kernels, which ARM cores prefer.
TARGET_PLATFORM = "arm"


@dataclass(frozen=True)
class Layout:
    """Where a format puts the model's files (see the module's docstring)."""

    file: str  # what the runner loads
    external_data: str | None
    onnx_file: str | None
    operators_config: str | None
    host: list[str]  # kept, hashed, never pushed
    dropped: list[str]  # made on the way (the ORT file is converted from them), then removed


def layout(fmt: str) -> Layout:
    check_format(fmt)
    if fmt == "onnx":
        return Layout(PREDICT, INIT, PREDICT, None, [], [])
    if fmt == "both":
        return Layout(ORT_MODEL, INIT, PREDICT, OPERATORS_CONFIG,
                      [PREDICT, INIT, OPERATORS_CONFIG], [])
    return Layout(ORT_MODEL, None, None, OPERATORS_CONFIG, [OPERATORS_CONFIG], [PREDICT, INIT])


def check_conversion(outputs: list[TensorSpec], onnx_results: list[Any],
                     ort_results: list[Any], k: int, tolerances: list[Tolerance]) -> None:
    """The ORT file against the ONNX file it came from, within the outputs' own tolerances:
    the ORT expected outputs are the bundle's, and must be what the model computes."""
    import numpy as np

    from edgepack.compare import compare_output

    for spec, before, after, tol in zip(outputs, onnx_results, ort_results, tolerances,
                                        strict=True):
        verdict = compare_output(spec.name, np.asarray(before), np.asarray(after), tol)
        if not verdict.passed:
            raise EdgepackError(
                f"input set {k}: the ORT-format model computes output {spec.name!r} otherwise "
                f"than the ONNX model it was converted from ({verdict.reason}); pack it with "
                "--format onnx", ExitCode.MISMATCH)


def check_format(value: str) -> str:
    if value not in FORMATS:
        raise EdgepackError(f"--format must be one of {', '.join(FORMATS)}, not {value!r}")
    return value


def convert_to_ort(onnx_path: Path, root: Path) -> tuple[str, str]:
    """Convert `onnx_path` (its external data beside it) into root/predict.ort and
    root/required_operators.config; returns their paths relative to root."""
    from edgepack.providers import ort_tool

    # Not `from onnxruntime.tools...`: that package's __init__ imports torch when installed.
    converter = ort_tool("convert_onnx_models_to_ort")
    OptimizationStyle = converter.OptimizationStyle  # noqa: N806 - onnxruntime's enum
    convert_onnx_models_to_ort = converter.convert_onnx_models_to_ort

    with tempfile.TemporaryDirectory(prefix=".ort-", dir=root.parent) as tmp:
        out = Path(tmp)
        chatter = io.StringIO()
        # The converter prints its progress and logs the config it wrote; pack speaks for it.
        logger = logging.getLogger("ort_format_model.utils")
        level = logger.level
        logger.setLevel(logging.WARNING)
        try:
            with contextlib.redirect_stdout(chatter):
                convert_onnx_models_to_ort(
                    Path(onnx_path), output_dir=out,
                    optimization_styles=[OptimizationStyle.Fixed],
                    target_platform=TARGET_PLATFORM,
                )
        except Exception as exc:
            raise EdgepackError(
                f"onnxruntime could not convert the model to the ORT format: {short(exc)}"
            ) from None
        finally:
            logger.setLevel(level)
        stem = Path(onnx_path).stem
        converted = out / f"{stem}.ort"
        config = out / f"{stem}.required_operators.config"
        if not converted.is_file() or not config.is_file():
            raise EdgepackError("onnxruntime's ORT converter wrote no model: "
                                + " ".join(chatter.getvalue().split())[-300:])
        (root / ORT_MODEL).write_bytes(converted.read_bytes())
        (root / OPERATORS_CONFIG).write_text(_config_text(config.read_text()))
    return ORT_MODEL, OPERATORS_CONFIG


def _config_text(text: str) -> str:
    # The converter's header names the temporary files it read: packing twice must give the
    # same bytes, and a bundle must not carry this machine's paths.
    body = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return "\n".join([f"# Operators {ORT_MODEL} needs in a reduced onnxruntime build "
                      "(build.py --include_ops_by_config)", *body]) + "\n"
