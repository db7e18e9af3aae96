"""PyTorch nn.Module -> ONNX, validated against PyTorch before it is called done.

The only module that imports torch, and only inside its functions. Validation is part of export:
the full ONNX checker, then the same seeded inputs through PyTorch and through onnxruntime, with
the dynamic axes exercised at a second size when there are any.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import io
import json
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgepack import dtypes
from edgepack.bundle import EXPORT_METADATA_KEY, Tolerance
from edgepack.compare import OutputVerdict, compare_output
from edgepack.errors import EdgepackError, ExitCode, short
from edgepack.limits import check_tensor_size
from edgepack.onnx_model import TensorSpec
from edgepack.option_values import DynamicAxis, ExportInput

EXPORTERS = ("dynamo", "torchscript")


@dataclass(frozen=True)
class ExportOptions:
    model_ref: str
    inputs: list[ExportInput]
    output: Path
    weights: Path | None = None
    strict: bool = True
    dynamic: list[DynamicAxis] = field(default_factory=list)
    output_names: list[str] = field(default_factory=list)
    opset: int = 17
    exporter: str = "dynamo"
    seed: int = 0
    tolerance: Tolerance = Tolerance(rtol=1e-3, atol=1e-5)
    force: bool = False


@dataclass(frozen=True)
class ValidationCase:
    """One seeded input through both PyTorch and onnxruntime."""

    label: str
    shapes: dict[str, list[int]]
    verdicts: list[OutputVerdict]


@dataclass(frozen=True)
class WeightsLoad:
    """What --weights put into the module, and what it did not."""

    path: Path
    sha256: str
    strict: bool
    # Only possible with --no-strict: parameters the file lacks keep the values the factory gave
    # them (often random), and entries the module lacks are dropped.
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ExportResult:
    path: Path
    exporter: str
    exporter_detail: str
    opset: int  # what the model declares, which the exporter may have raised
    requested_opset: int
    torch_version: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    validation: list[ValidationCase]
    export_s: float
    size_bytes: int
    notes: list[str] = field(default_factory=list)
    weights: WeightsLoad | None = None
    # Things that make the exported model other than the user likely meant (a --no-strict load
    # that left parameters as the factory built them): shown as warnings, and in --json.
    warnings: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(v.passed for case in self.validation for v in case.verdicts)


def export(options: ExportOptions, progress: Callable[[str], None] | None = None) -> ExportResult:
    """Export, check and validate; the file appears at options.output only if it validates.

    `progress` hears what is happening once the arguments have been checked and the module
    built (export takes seconds)."""
    if options.exporter not in EXPORTERS:
        raise EdgepackError(
            f"--exporter must be one of {', '.join(EXPORTERS)}, not {options.exporter!r}"
        )
    if not options.inputs:
        raise EdgepackError("give at least one --input NAME:SHAPE:DTYPE, e.g. input:1x3x32x32")
    out = Path(options.output)
    if out.exists() and not options.force:
        raise EdgepackError(f"{out}: already exists; choose another -o or pass --force")
    _check_names(options)
    _check_opset(options.opset)
    dynamic = {(d.name, d.axis) for d in options.dynamic}
    for spec in options.inputs:
        # Allocated at this shape, and by validation at one more along each dynamic axis.
        largest = [n + 1 if (spec.name, axis) in dynamic else n
                   for axis, n in enumerate(spec.shape)]
        row = dtypes.lookup(spec.dtype)
        check_tensor_size(f"--input {spec.name}", largest,
                          max(1, row.bits // 8) if row is not None else 8)

    with _model_module_named(options.model_ref):
        return _export(options, progress, out)


def _export(options: ExportOptions, progress: Callable[[str], None] | None, out: Path
            ) -> ExportResult:
    import torch

    module = _build_module(options.model_ref)
    weights = (
        _load_weights(module, options.weights, options.strict, options.model_ref)
        if options.weights else None
    )
    warnings = [_weights_warning(weights)] if weights and (
        weights.missing_keys or weights.unexpected_keys) else []
    module.eval()
    example = _seeded_inputs(options.inputs, options.seed)
    if progress:
        progress(f"exporting {options.model_ref} with the {options.exporter} exporter ...")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        t0 = time.perf_counter()
        detail = _run_exporter(module, example, tmp, options)
        export_s = time.perf_counter() - t0
        settings = {
            "model": _portable_ref(options.model_ref),
            "exporter": options.exporter,
            "opset": options.opset,
            "torch_version": torch.__version__,
            "inputs": [
                {"name": i.name, "shape": list(i.shape), "dtype": i.dtype} for i in options.inputs
            ],
            "dynamic": [
                {"name": d.name, "axis": d.axis, "label": d.label} for d in options.dynamic
            ],
            "weights_sha256": weights.sha256 if weights else None,
            "seed": options.seed,
        }
        onnx_inputs, onnx_outputs, opset = _finish_model(tmp, settings)
        notes = []
        if opset != options.opset:
            notes.append(
                f"opset {opset}, not the requested {options.opset}: the {options.exporter} "
                f"exporter could not produce {options.opset} for this model"
                + (" (try --exporter torchscript)" if options.exporter == "dynamo" else "")
            )
        validation = _validate(module, tmp, options)
        result = ExportResult(
            path=out,
            exporter=options.exporter,
            exporter_detail=detail,
            opset=opset,
            requested_opset=options.opset,
            torch_version=torch.__version__,
            inputs=onnx_inputs,
            outputs=onnx_outputs,
            validation=validation,
            export_s=export_s,
            size_bytes=sum(f.stat().st_size for f in (tmp, _data_file(tmp)) if f.exists()),
            notes=notes,
            weights=weights,
            warnings=warnings,
        )
        if result.passed:
            _place_model(tmp, out)
        else:
            # Keep the rejected model for inspection under a name nothing mistakes for a model.
            rejected = out.with_name(out.name + ".rejected")
            _place_model(tmp, rejected)
            result = _with_path(result, rejected)
        return result
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        for side in tmp.parent.glob(tmp.name + "*.data"):
            side.unlink()


def _data_file(model: Path) -> Path:
    """Where the dynamo exporter puts the weights of a model over 2 GiB: beside it, named after
    it (torch decides by size, whatever external_data says)."""
    return model.with_name(model.name + ".data")


def _place_model(tmp: Path, dest: Path) -> None:
    """Rename the finished model into place. Its external data file, if it has one, goes first,
    renamed after `dest` and the model's references with it; an old model at `dest` is removed
    before that, so no crash pairs an old model with new weights."""
    import onnx

    from edgepack.bundle.weights import rename_data_file

    data = _data_file(tmp)
    if data.exists():
        model = onnx.load(str(tmp), load_external_data=False)
        if rename_data_file(model, data.name, _data_file(dest).name):
            onnx.save_model(model, str(tmp))
            dest.unlink(missing_ok=True)
            os.replace(data, _data_file(dest))
    os.replace(tmp, dest)


def _with_path(result: ExportResult, path: Path) -> ExportResult:
    from dataclasses import replace

    return replace(result, path=path)


def _check_names(options: ExportOptions) -> None:
    """Names the exporter would trip over later, and with a worse message, after torch ran."""
    names = [i.name for i in options.inputs]
    if len(set(names)) != len(names):
        raise EdgepackError("each --input name must be given once")
    seen: set[str] = set()
    for name in options.output_names:
        if not name:
            raise EdgepackError("--output-name must not be empty")
        if name in seen:
            raise EdgepackError(f"--output-name {name} is given twice: each output needs a name "
                                "of its own")
        if name in names:
            raise EdgepackError(f"--output-name {name} is also an --input name: an ONNX graph "
                                "needs its inputs and outputs named differently")
        seen.add(name)
    known = set(names) | set(options.output_names)
    for d in options.dynamic:
        if d.name not in known:
            raise EdgepackError(
                f"--dynamic {d.name}:{d.axis}:{d.label}: {d.name!r} is not an --input "
                "(or an --output-name)"
            )
        if d.name in names:
            rank = len(next(i for i in options.inputs if i.name == d.name).shape)
            if not 0 <= d.axis < rank:
                raise EdgepackError(
                    f"--dynamic {d.name}:{d.axis}:{d.label}: axis out of range for rank {rank}"
                )


def _check_opset(opset: int) -> None:
    import onnx.defs

    newest = onnx.defs.onnx_opset_version()
    if not 1 <= opset <= newest:
        raise EdgepackError(f"--opset {opset}: the installed onnx knows opsets 1 to {newest}")


# ---------------------------------------------------------------------------- the module


def _module_name(path: Path) -> str:
    """The name a model file is imported under. Exporters write it into the model (a dynamo
    export's node namespaces read `resnet20.ResNet/layer1.0: ...`), so it must not depend on
    where the file lies: the file's stem, unless that would shadow a module already imported."""
    stem = path.stem
    if stem.isidentifier() and stem not in sys.modules:
        return stem
    return "edgepack_model"


@contextlib.contextmanager
def _model_module_named(ref: str) -> Any:
    """Take the model file's module back out of sys.modules after the export, so the next
    export in this process (tests, a notebook) imports its own file under the same name."""
    before = dict(sys.modules)
    try:
        yield
    finally:
        for name in [n for n in sys.modules if n not in before]:
            module = sys.modules[name]
            if getattr(module, "__file__", None) and _is_model_file(ref, module.__file__):
                del sys.modules[name]


def _is_model_file(ref: str, file: str) -> bool:
    target = ref.rpartition(":")[0]
    return target.endswith(".py") and Path(target).resolve() == Path(file).resolve()


def _portable_ref(ref: str) -> str:
    """MODEL as the model records it: a file under the working directory by its relative path,
    so the same checkout exported from two places records the same text."""
    target, sep, attr = ref.rpartition(":")
    if sep and (target.endswith(".py") or "/" in target):
        path = Path(target)
        if path.is_absolute():
            with contextlib.suppress(ValueError):
                return f"{path.resolve().relative_to(Path.cwd().resolve()).as_posix()}:{attr}"
    return ref


_TRACE_FILE = re.compile(r'File "([^"]+)"')


def _portable_trace(trace: str) -> str:
    """A stack trace with its files named relative to the working directory or to the Python
    installation (`<site-packages>/torch/nn/modules/conv.py`): absolute paths name home
    directories and virtualenvs, and would make two exports of one checkout differ."""
    cwd = Path.cwd().resolve()
    roots = sorted((Path(p).resolve() for p in sys.path if p and Path(p).is_dir()),
                   key=lambda r: len(r.parts), reverse=True)

    def portable(match: re.Match[str]) -> str:
        path = Path(match.group(1))
        if not path.is_absolute():
            return match.group(0)
        for base, label in ((cwd, None), *((r, r.name) for r in roots)):
            try:
                rel = path.relative_to(base).as_posix()
            except ValueError:
                continue
            if label is None:
                return f'File "{rel}"'
            kind = "site-packages" if label in ("site-packages", "dist-packages") else "python"
            return f'File "<{kind}>/{rel}"'
        return f'File "<elsewhere>/{path.name}"'

    return _TRACE_FILE.sub(portable, trace)


def _build_module(ref: str) -> Any:
    import torch

    target, sep, attr = ref.rpartition(":")
    if not sep or not target or not attr:
        raise EdgepackError(
            f"MODEL {ref!r}: expected path/to/file.py:make_model or package.module:make_model"
        )
    if target.endswith(".py") or os.sep in target or "/" in target:
        path = Path(target)
        if not path.is_file():
            raise EdgepackError(f"{path}: no such file")
        name = _module_name(path)
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise EdgepackError(f"{path}: cannot be imported as a Python module")
        module = importlib.util.module_from_spec(spec)
        # The model file may import its neighbours, as a script run from its directory would.
        sys.path.insert(0, str(path.resolve().parent))
        try:
            sys.modules[name] = module
            spec.loader.exec_module(module)
        except Exception as exc:
            raise EdgepackError(f"{path}: importing it failed: {short(exc)}") from exc
        finally:
            sys.path.remove(str(path.resolve().parent))
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise EdgepackError(f"MODEL {ref!r}: cannot import {target!r} ({short(exc)})") from exc
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise EdgepackError(f"MODEL {ref!r}: {target} has no callable {attr!r}")
    try:
        built = factory()
    except Exception as exc:
        raise EdgepackError(f"MODEL {ref!r}: calling {attr}() failed: {short(exc)}") from exc
    if not isinstance(built, torch.nn.Module):
        raise EdgepackError(
            f"MODEL {ref!r}: {attr}() returned {type(built).__name__}, not a torch.nn.Module"
        )
    return built


def _load_weights(module: Any, path: Path, strict: bool, model_ref: str) -> WeightsLoad:
    import torch

    path = Path(path)
    if not path.is_file():
        raise EdgepackError(f"{path}: no such weights file")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    try:
        # weights_only: a checkpoint is data, never code to run.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise EdgepackError(
            f"{path}: not a loadable state dict ({short(exc, 200)}); save one with "
            "torch.save(model.state_dict(), path)"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise EdgepackError(f"{path}: holds a {type(state).__name__}, not a state dict")
    try:
        # Never strict here: torch's strict error buries the keys in a paragraph; the keys it
        # returns are listed below instead. Shape mismatches raise either way.
        keys = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise EdgepackError(
            f"{path}: does not match the module: {_state_dict_problem(str(exc))} "
            "(--no-strict ignores missing and unexpected keys, not shape mismatches)"
        ) from None
    loaded = WeightsLoad(path, digest, strict, list(keys.missing_keys),
                         list(keys.unexpected_keys))
    if strict and (loaded.missing_keys or loaded.unexpected_keys):
        raise EdgepackError(
            f"{path}: does not match the module {model_ref}: {_key_problems(loaded)}; "
            "--no-strict loads the keys that match and leaves the others as built"
        )
    return loaded


def _key_problems(w: WeightsLoad, shown: int = 8) -> str:
    def listing(keys: list[str]) -> str:
        more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
        return ", ".join(keys[:shown]) + more

    parts = []
    if w.missing_keys:
        parts.append(f"{len(w.missing_keys)} key(s) of the module missing from the file: "
                     f"{listing(w.missing_keys)}")
    if w.unexpected_keys:
        parts.append(f"{len(w.unexpected_keys)} key(s) in the file the module does not have: "
                     f"{listing(w.unexpected_keys)}")
    return "; ".join(parts)


def _weights_warning(w: WeightsLoad) -> str:
    kept = ("; the missing ones keep the values the model factory gave them"
            if w.missing_keys else "")
    return f"--no-strict: {w.path} does not match the module: {_key_problems(w)}{kept}"


def _state_dict_problem(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    detail = "; ".join(lines[1:4]) if len(lines) > 1 else lines[0] if lines else text
    return short(RuntimeError(detail), 300)


def _seeded_inputs(
    inputs: list[ExportInput], seed: int, sizes: dict[tuple[str, int], int] | None = None
) -> tuple[Any, ...]:
    import torch

    generator = torch.Generator().manual_seed(seed)
    tensors = []
    for spec in inputs:
        shape = [
            (sizes or {}).get((spec.name, axis), dim) for axis, dim in enumerate(spec.shape)
        ]
        dtype = getattr(torch, spec.dtype)
        if dtype.is_floating_point:
            t = torch.randn(shape, generator=generator, dtype=torch.float32).to(dtype)
        elif dtype == torch.bool:
            t = torch.randint(0, 2, shape, generator=generator).to(torch.bool)
        else:
            t = torch.randint(0, 10, shape, generator=generator).to(dtype)
        tensors.append(t)
    return tuple(tensors)


# ---------------------------------------------------------------------------- exporting


def _run_exporter(module: Any, example: tuple[Any, ...], path: Path, options: ExportOptions) -> str:
    import torch

    input_names = [i.name for i in options.inputs]
    dynamic_axes: dict[str, dict[int, str]] = {}
    for d in options.dynamic:
        dynamic_axes.setdefault(d.name, {})[d.axis] = d.label
    kwargs: dict[str, Any] = {
        "input_names": input_names,
        "opset_version": options.opset,
    }
    if options.output_names:
        kwargs["output_names"] = options.output_names
    if dynamic_axes:
        kwargs["dynamic_axes"] = dynamic_axes
    try:
        with _quiet(), torch.no_grad():
            if options.exporter == "dynamo":
                program = torch.onnx.export(
                    module, example, dynamo=True, external_data=False, optimize=True, **kwargs
                )
                if program is None:
                    raise RuntimeError("the exporter returned no program")
                program.save(str(path), external_data=False)
                detail = "dynamo (torch.export + onnxscript)"
            else:
                torch.onnx.export(module, example, str(path), dynamo=False, **kwargs)
                detail = "torchscript (torch.jit.trace)"
    except EdgepackError:
        raise
    except Exception as exc:
        hint = (
            "; try --exporter torchscript" if options.exporter == "dynamo"
            else "; try --exporter dynamo"
        )
        raise EdgepackError(
            f"the {options.exporter} exporter failed: {short(exc, 400)}{hint}", ExitCode.BAD_INPUT
        ) from exc
    return detail


@contextlib.contextmanager
def _quiet() -> Any:
    """Hold back the exporters' progress lines, warnings and logged tracebacks: the CLI shows its
    own summary, and EDGEPACK_DEBUG=1 lets them through."""
    if os.environ.get("EDGEPACK_DEBUG", "") not in ("", "0"):
        yield
        return
    import logging
    import warnings

    noise = io.StringIO()
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(noise), \
                contextlib.redirect_stderr(noise):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _finish_model(
    path: Path, settings: dict[str, Any]
) -> tuple[list[TensorSpec], list[TensorSpec], int]:
    """Record the export settings in the model and run the full checker."""
    import onnx

    from edgepack.onnx_model import describe_inputs, describe_outputs

    # The graph alone: weights over 2 GiB stay in their data file, which save_model leaves be.
    model = onnx.load(str(path), load_external_data=False)
    for prop in list(model.metadata_props):
        if prop.key == EXPORT_METADATA_KEY:
            model.metadata_props.remove(prop)
    for node in _all_nodes(model):
        for prop in node.metadata_props:
            if prop.key == "pkg.torch.onnx.stack_trace":
                prop.value = _portable_trace(prop.value)
    entry = model.metadata_props.add()
    entry.key = EXPORT_METADATA_KEY
    entry.value = json.dumps(settings, sort_keys=True)
    onnx.save_model(model, str(path))
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise EdgepackError(
            f"the exported model fails the ONNX checker: {short(exc)}", ExitCode.MISMATCH
        ) from None
    opset = next((op.version for op in model.opset_import if op.domain in ("", "ai.onnx")), 0)
    return describe_inputs(model), describe_outputs(model), int(opset)


def _all_nodes(model: Any) -> list[Any]:
    import onnx

    found: list[Any] = []

    def visit(nodes: Any) -> None:
        for node in nodes:
            found.append(node)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    visit(attr.g.node)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for g in attr.graphs:
                        visit(g.node)

    visit(model.graph.node)
    for function in model.functions:
        visit(function.node)
    return found


def _validate(module: Any, path: Path, options: ExportOptions) -> list[ValidationCase]:
    import onnxruntime as ort
    import torch

    from edgepack.ort_session import prepare, run_session

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise EdgepackError(
            f"onnxruntime cannot load the exported model: {short(exc)}", ExitCode.MISMATCH
        ) from None
    out_names = [o.name for o in session.get_outputs()]

    cases: list[tuple[str, dict[tuple[str, int], int]]] = [("declared shapes", {})]
    if options.dynamic:
        # Exercise every dynamic axis at another size: a trace that baked the size in fails here.
        grown = {
            (d.name, d.axis): next(i for i in options.inputs if i.name == d.name).shape[d.axis] + 1
            for d in options.dynamic
            if d.name in {i.name for i in options.inputs}
        }
        cases.append(("dynamic axes at other sizes", grown))

    results = []
    for k, (label, sizes) in enumerate(cases):
        tensors = _seeded_inputs(options.inputs, options.seed + 1 + k, sizes)
        with torch.no_grad():
            expected = _flatten(module(*tensors))
        feeds = {i.name: _to_numpy(t) for i, t in zip(options.inputs, tensors, strict=True)}
        try:
            actual = run_session(session, prepare(session, feeds))
        except Exception as exc:
            raise EdgepackError(
                f"onnxruntime failed to run the exported model on {label}: {short(exc)}",
                ExitCode.MISMATCH,
            ) from None
        if len(actual) != len(expected):
            raise EdgepackError(
                f"the exported model has {len(actual)} outputs, PyTorch returned {len(expected)}",
                ExitCode.MISMATCH,
            )
        verdicts = [
            compare_output(name, e, np.asarray(a), options.tolerance)
            for name, e, a in zip(out_names, expected, actual, strict=True)
        ]
        shapes = {i.name: list(t.shape) for i, t in zip(options.inputs, tensors, strict=True)}
        results.append(ValidationCase(label, shapes, verdicts))
    return results


def _to_numpy(tensor: Any) -> np.ndarray:
    """A torch tensor as numpy; torch's bfloat16 and float8 (which .numpy() refuses) through
    their bits, viewed as edgepack.dtypes' ml_dtypes type of the same name."""
    import torch

    tensor = tensor.detach().cpu()
    name = str(tensor.dtype).removeprefix("torch.")
    row = dtypes.lookup(name)
    if row is not None and row.module == "ml_dtypes" and not row.packed:
        bits = torch.int16 if row.bits == 16 else torch.uint8
        return tensor.contiguous().view(bits).numpy().view(row.numpy())
    return tensor.numpy()


def _flatten(value: Any) -> list[np.ndarray]:
    import torch

    if isinstance(value, torch.Tensor):
        return [_to_numpy(value)]
    if isinstance(value, (list, tuple)):
        return [a for v in value for a in _flatten(v)]
    if isinstance(value, dict):
        return [a for v in value.values() for a in _flatten(v)]
    if isinstance(value, (int, float, bool)):
        return [np.asarray(value)]
    raise EdgepackError(
        f"the module returned a {type(value).__name__}; export needs tensors (or tuples, lists "
        "or dicts of them)"
    )
