"""`pack --quantize int8|fp16`: a smaller model, and what it costs against the float one.

int8 is onnxruntime's static quantization in QDQ form (QuantizeLinear/DequantizeLinear pairs
around the float ops, which onnxruntime fuses into integer kernels where it has them), after
onnxruntime's pre-processing (shape inference, graph optimization), calibrated by MinMax on the
bundle's own input sets or on `--calibrate DIR`: uint8 activations, int8 per-channel weights,
onnxruntime's recommended CPU setting. fp16 is onnxruntime's own converter with keep_io_types:
the inputs and outputs stay float32, so the bundle's inputs, the application feeding the model and
the float reference all keep their dtypes; only the weights and the arithmetic inside go fp16.

A quantized bundle carries two references. Its expected outputs are the quantized model's own
host outputs: a device must match them within the tolerance, as for any bundle. The float
model's outputs on the same inputs are kept as host files (reference/test_data_set_<k>/), with
the accuracy cost (SNR, cosine, top-1/top-5 agreement, max abs error) computed at pack time:
reported, never judged by the float tolerances.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgepack.bundle.schema import (
    AccuracyCost,
    Quantization,
    TensorFile,
    TensorSpec,
    TestSet,
    Tolerance,
    default_tolerance,
)
from edgepack.errors import EdgepackError, short
from edgepack.fileio import sha256_bytes

if TYPE_CHECKING:
    from edgepack.inputs import ImageOptions, InputValue

MODES = ("int8", "fp16")
REFERENCE_DIR = "reference"
INT8_METHOD = ("onnxruntime.quantization.quantize_static, QDQ format, uint8 activations, int8 "
               "per-channel weights, MinMax calibration, after quant_pre_process")
FP16_METHOD = ("onnxruntime.transformers.float16.convert_float_to_float16, keep_io_types "
               "(inputs and outputs stay float32)")


@dataclass(frozen=True)
class QuantizedModel:
    model: Any  # onnx.ModelProto, the quantized graph (weights in memory)
    path: Path  # the same model on disk: the packer checks its rewritten graph against it
    mode: str
    method: str
    calibration: str | None
    calibration_sets: int
    float_sha256: str
    float_outputs: list[list[np.ndarray]]  # per input set, in output order
    tolerances: dict[str, Tolerance]  # per output: what a device must match the host within


def check_mode(value: str) -> str:
    if value not in MODES:
        raise EdgepackError(f"--quantize must be one of {', '.join(MODES)}, not {value!r}")
    return value


def quantize(model: Any, inputs: list[TensorSpec], outputs: list[TensorSpec],
             input_sets: list[list[InputValue]], mode: str, calibrate: Path | None,
             image: ImageOptions, work: Path) -> QuantizedModel:
    """Quantize `model` (float, in memory) in `work` (a scratch directory the caller removes)."""
    import onnx

    from edgepack.ort_session import reference_session

    check_mode(mode)
    weights = _has_float32_weights(model)
    if not weights and not any(s.dtype == "float32" for s in inputs):
        raise EdgepackError(f"--quantize {mode}: the model has no float32 inputs or weights; "
                            "there is nothing to quantize")
    if mode == "int8" and not weights:
        raise EdgepackError("--quantize int8: the model has no float32 weights (initializers), "
                            "which static quantization needs; try --quantize fp16")
    float_bytes = model.SerializeToString()
    float_session = reference_session(float_bytes, "the float model")
    float_outputs = [_run(float_session, s, k) for k, s in enumerate(input_sets)]
    out = work / f"quantized-{mode}.onnx"
    if mode == "int8":
        if calibrate is not None:
            calib_sets, where = calibration_sets(calibrate, inputs, image), str(calibrate)
        else:
            calib_sets, where = input_sets, "the bundle's input sets"
        _int8(model, [{v.name: v.array for v in s} for s in calib_sets], work, out)
        method, calibration, n_calib = INT8_METHOD, where, len(calib_sets)
    else:
        _fp16(model, out)
        method, calibration, n_calib = FP16_METHOD, None, 0
    quantized = onnx.load(str(out))
    tolerances = _tolerances(quantized, outputs, mode)
    return QuantizedModel(quantized, out, mode, method, calibration, n_calib,
                          sha256_bytes(float_bytes), float_outputs, tolerances)


def calibration_sets(directory: Path, inputs: list[TensorSpec], image: ImageOptions
                     ) -> list[list[InputValue]]:
    """`--calibrate DIR`: test_data_set_* directories (or input_<i>.pb files), or images for a
    model with one input, preprocessed as pack's image options say."""
    from edgepack.inputs import IMAGE_SUFFIXES, InputRequest, collect_input_sets

    directory = Path(directory)
    if not directory.is_dir():
        raise EdgepackError(f"--calibrate {directory}: no such directory")
    if any(directory.glob("test_data_set_*")) or any(directory.glob("input_*.pb")):
        return collect_input_sets(inputs, InputRequest(dirs=[directory]))
    images = sorted(p for p in directory.iterdir()
                    if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise EdgepackError(f"--calibrate {directory}: holds no test_data_set_* directories, "
                            "input_<i>.pb files or images")
    if len(inputs) != 1:
        raise EdgepackError(f"--calibrate {directory}: images calibrate a model with one input; "
                            f"this one has {len(inputs)}: give test_data_set_* directories")
    request = InputRequest(named=[(inputs[0].name, p) for p in images], image=image)
    return collect_input_sets(inputs, request)


def write_reference(root: Path, q: QuantizedModel, outputs: list[TensorSpec],
                    quantized_outputs: list[list[Any]], set_dirs: list[str]) -> Quantization:
    """Write the float outputs under root/reference/ and measure the cost against them."""
    from edgepack.tensors import array_dtype, write_tensor

    reference = []
    for k, (set_dir, float_set) in enumerate(zip(set_dirs, q.float_outputs, strict=True)):
        ref_dir = f"{REFERENCE_DIR}/{set_dir}"
        (root / ref_dir).mkdir(parents=True)
        files = []
        for i, (spec, array) in enumerate(zip(outputs, float_set, strict=True)):
            rel = f"{ref_dir}/output_{i}.pb"
            write_tensor(root / rel, spec.name, array)
            files.append(TensorFile(spec.name, rel, array_dtype(array), list(array.shape)))
        reference.append(TestSet(k, ref_dir, [], files))
    cost = [accuracy_cost(spec.name, [s[i] for s in q.float_outputs],
                          [np.asarray(s[i]) for s in quantized_outputs])
            for i, spec in enumerate(outputs)]
    return Quantization(q.mode, q.method, q.calibration, q.calibration_sets, q.float_sha256,
                        reference, cost)


def cost_note(q: Quantization) -> str:
    """One line for a run's notes (console, --json, --report): the device is judged against the
    quantized model; this says what the quantization itself cost."""
    parts = []
    for c in q.cost:
        bits = [f"SNR {'identical' if c.snr_db is None else format(c.snr_db, '.1f') + ' dB'}"]
        if c.cosine is not None:
            bits.append(f"cosine {c.cosine:.6f}")
        if c.top1_agreement is not None:
            bits.append(f"top-1 {c.top1_agreement:.0%}")
        if c.top5_agreement is not None:
            bits.append(f"top-5 {c.top5_agreement:.0%}")
        if c.max_abs_error is not None:
            bits.append(f"max abs {c.max_abs_error:.3g}")
        parts.append(f"{c.output}: " + ", ".join(bits))
    return (f"quantized {q.mode}: cost against the float model at pack time: "
            + "; ".join(parts))


def accuracy_cost(name: str, float_arrays: list[np.ndarray], quant_arrays: list[np.ndarray]
                  ) -> AccuracyCost:
    """One output over every input set, through compare's metrics with no tolerance: class rows
    of every set together for top-k, every element for SNR, cosine and max error."""
    from edgepack.compare import compare_output

    expected, actual = _joined(float_arrays), _joined(quant_arrays)
    if expected.dtype.kind not in "fc" or expected.shape != actual.shape:
        return AccuracyCost(name, None, None, None)
    m = compare_output(name, expected.astype(np.float64), actual.astype(np.float64),
                       Tolerance(0.0, 0.0)).metrics
    if m is None:
        return AccuracyCost(name, None, None, None)
    snr = m.snr_db if m.snr_db is not None and np.isfinite(m.snr_db) else None
    return AccuracyCost(name, snr, m.cosine_similarity, m.max_abs_error,
                        m.top1_agreement, m.top5_agreement)


def _joined(arrays: list[np.ndarray]) -> np.ndarray:
    # Sets of a model with a batch dim join along it (so class rows stay rows); others flatten.
    if all(a.ndim >= 1 and a.shape[1:] == arrays[0].shape[1:] for a in arrays):
        return np.concatenate(arrays, axis=0)
    return np.concatenate([a.ravel() for a in arrays])


# ---------------------------------------------------------------------------- the tools


def _int8(model: Any, feeds: list[dict[str, np.ndarray]], work: Path, out: Path) -> None:
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    pre = work / "preprocessed.onnx"
    with _quiet():
        # Symbolic shape inference and the optimizer know fewer ops than a model may hold; the
        # quantizer works without them, only less well informed.
        for skip in ({}, {"skip_symbolic_shape": True}, {"skip_symbolic_shape": True,
                                                          "skip_optimization": True}):
            try:
                quant_pre_process(onnx.ModelProto.FromString(model.SerializeToString()), pre,
                                  **skip)
                break
            except Exception:
                pre.unlink(missing_ok=True)
        if not pre.is_file():
            onnx.save(model, str(pre))
        try:
            quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            per_channel=True)
        except Exception as exc:
            raise EdgepackError(f"onnxruntime could not quantize the model: {short(exc)}") from None
    ops = {n.op_type for n in onnx.load(str(out), load_external_data=False).graph.node}
    if "QuantizeLinear" not in ops:
        raise EdgepackError("--quantize int8: onnxruntime's quantizer found no operator of this "
                            "model it quantizes; the bundle would be the float model")


def _fp16(model: Any, out: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with _quiet():
        try:
            converted = convert_float_to_float16(
                onnx.ModelProto.FromString(model.SerializeToString()), keep_io_types=True)
        except Exception as exc:
            raise EdgepackError(f"onnxruntime could not convert the model to float16: "
                                f"{short(exc)}") from None
    out.write_bytes(converted.SerializeToString())


@contextlib.contextmanager
def _quiet():  # noqa: ANN202 - a context manager
    # The quantization tools log advice, progress and the tracebacks of what they retry on
    # their own, and print; pack speaks for them, in one line when they fail.
    import io

    disabled = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.disable(disabled)


def _has_float32_weights(model: Any) -> bool:
    import onnx

    # Weights held in Constant nodes count too: pack lifts them into initializers later.
    return (any(t.data_type == onnx.TensorProto.FLOAT for t in model.graph.initializer)
            or any(n.op_type == "Constant" and any(a.t.data_type == onnx.TensorProto.FLOAT
                                                   for a in n.attribute if a.name == "value")
                   for n in model.graph.node))


def _tolerances(model: Any, outputs: list[TensorSpec], mode: str) -> dict[str, Tolerance]:
    """How close a device must come to the quantized model's host outputs. fp16: float16's
    tolerances, since CPUs with fp16 arithmetic (ARM) compute what x86 converts to float32 and
    back. int8: atol at least one step of the output's DequantizeLinear scale, since another
    CPU's integer kernels may requantize one step apart."""
    from onnx import numpy_helper

    result = {}
    if mode == "fp16":
        for spec in outputs:
            if spec.dtype == "float32":
                result[spec.name] = default_tolerance("float16")
        return result
    inits = {t.name: t for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    for spec in outputs:
        node = producers.get(spec.name)
        if spec.dtype != "float32" or node is None or node.op_type != "DequantizeLinear":
            continue
        scale = inits.get(node.input[1]) if len(node.input) > 1 else None
        if scale is None:
            continue
        step = float(np.max(numpy_helper.to_array(scale)))
        base = default_tolerance(spec.dtype)
        result[spec.name] = Tolerance(rtol=base.rtol, atol=max(base.atol, step))
    return result



def _run(session: Any, values: list[InputValue], k: int) -> list[np.ndarray]:
    try:
        return [np.asarray(a) for a in session.run(None, {v.name: v.array for v in values})]
    except Exception as exc:
        raise EdgepackError(f"onnxruntime could not run the float model on input set {k}: "
                            f"{short(exc)}") from None
