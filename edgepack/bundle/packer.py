"""Packing: an ONNX model and its inputs become a bundle, with the host's expected outputs.

The packer runs onnxruntime (one thread, deterministic kernels) on the packed predict.onnx to
make the expected outputs, lifts weights held in Constant nodes into init.bin, strips what only
a debugger needs from the graph (keeping the node map on the host), and refuses expected outputs
that hold NaN or inf unless asked. A bundle is written into a hidden temporary directory and
renamed into place, and the manifest is written last, so nothing half-written ever looks like a
bundle.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgepack import __version__
from edgepack.bundle.schema import (
    EXPORT_METADATA_KEY,
    EXTERNAL_THRESHOLD,
    INIT,
    MANIFEST,
    NODE_MAP,
    PREDICT,
    SCHEMA_VERSION,
    FileEntry,
    Manifest,
    ModelInfo,
    OutputSpec,
    Provenance,
    Rewrite,
    TensorFile,
    TensorSpec,
    TestSet,
    Tolerance,
    check_manifest,
    default_tolerance,
)
from edgepack.bundle.verify import Bundle
from edgepack.errors import EdgepackError, ExitCode, short
from edgepack.fileio import atomic_write_text, sha256_bytes, sha256_file

if TYPE_CHECKING:
    from edgepack.bundle.weights import WrittenWeights
    from edgepack.inputs import InputRequest, InputValue
    from edgepack.quantize import QuantizedModel
    from edgepack.rewrite import FixDim, OpsAllowed


@dataclass(frozen=True)
class PackOptions:
    name: str | None = None
    tolerances: dict[str, Tolerance] = field(default_factory=dict)  # per output name
    rtol: float | None = None  # overrides for every output without its own entry
    atol: float | None = None
    force: bool = False
    # Expected outputs holding NaN or inf prove little (NaN "matches" NaN); refused unless asked.
    allow_nonfinite: bool = False
    format: str = "onnx"  # --format onnx|ort|both (bundle/ortformat.py)
    quantize: str | None = None  # --quantize int8|fp16 (edgepack/quantize.py)
    calibrate: Path | None = None  # --calibrate DIR, int8's calibration inputs
    # Per output, in place of its dtype's default tolerance (a quantized model's, set by pack).
    default_tolerances: dict[str, Tolerance] = field(default_factory=dict)
    ops_allowed: OpsAllowed | None = None  # --ops-allowed SPEC (edgepack/rewrite/)
    fix_dims: tuple[FixDim, ...] = ()  # --fix-dim NAME=VALUE, in order


def pack(model_path: Path, out_dir: Path, request: InputRequest, options: PackOptions) -> Bundle:
    """Pack an ONNX model and its inputs into a bundle at `out_dir`."""
    from edgepack.inputs import collect_input_sets
    from edgepack.onnx_model import describe_inputs, describe_outputs, load_model

    model_path, out_dir = Path(model_path), Path(out_dir)
    if out_dir.exists() and not options.force:
        raise EdgepackError(f"{out_dir}: already exists; choose another -o or pass --force")
    if out_dir.exists() and not out_dir.is_dir():
        raise EdgepackError(f"{out_dir}: exists and is not a directory")

    # The graph alone: weights stay where they are until _write_predict_net streams them.
    model = load_model(model_path, load_weights=False)
    transformed = None
    if options.ops_allowed is not None or options.fix_dims:
        from edgepack.rewrite import transform_model

        if options.quantize is not None:
            raise EdgepackError("pack --quantize does not take --ops-allowed or --fix-dim yet: "
                                "pack them in two steps")
        # Rules read weights (a norm's scale, a Pad's pads): the rewritten model holds them all.
        transformed = transform_model(load_model(model_path), options.ops_allowed,
                                      list(options.fix_dims))
        model = transformed.model
    inputs = describe_inputs(model)
    outputs = describe_outputs(model)
    for name in options.tolerances:
        if name not in {o.name for o in outputs}:
            raise EdgepackError(
                f"--tolerance {name}: the model has no output {name!r} "
                f"(its outputs: {', '.join(o.name for o in outputs)})"
            )
    input_sets = collect_input_sets(inputs, request)
    if transformed is not None:
        from edgepack.rewrite import check_rewrite

        transformed = check_rewrite(model_path, transformed, outputs, input_sets,
                                    lambda spec: _tolerance_for(spec, options), out_dir)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    work = out_dir.parent / f".{out_dir.name}.work-{os.getpid()}"  # quantization's scratch
    try:
        quantized = None
        if options.quantize is not None:
            from edgepack.quantize import quantize

            work.mkdir(exist_ok=True)
            quantized = quantize(load_model(model_path), inputs, outputs, input_sets,
                                 options.quantize, options.calibrate, request.image, work)
            model = quantized.model
            options = replace(options, default_tolerances=quantized.tolerances)
        bundle = _write_bundle(staging, model, model_path, inputs, outputs, input_sets, options,
                               quantized, transformed.record if transformed else None)
        _move_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Bundle(out_dir, bundle.manifest, bundle.sha256)


def _write_bundle(
    root: Path,
    model: Any,
    model_path: Path,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    input_sets: list[list[InputValue]],
    options: PackOptions,
    quantized: QuantizedModel | None = None,
    rewrite: Rewrite | None = None,
) -> Bundle:
    from edgepack.bundle import ortformat
    from edgepack.onnx_model import opset_imports
    from edgepack.ort_session import reference_session
    from edgepack.tensors import array_dtype, write_tensor

    export_settings = _export_settings(model)
    lifted = lift_constants(model)
    node_map = strip_debug_info(model)
    # A quantized graph is the one packed: its weights and its lift check are its own file's.
    graph_path = quantized.path if quantized is not None else model_path
    weights = _write_predict_net(model, graph_path, root)
    if options.format != "onnx":
        ortformat.convert_to_ort(root / PREDICT, root)
    layout = ortformat.layout(options.format)

    import onnxruntime as ort

    session = reference_session(root / layout.file)
    # Lifting Constant nodes rewrote the graph: the original must still compute the same.
    original = reference_session(graph_path) if lifted else None
    # So did onnxruntime's conversion to the ORT format (with its optimizations baked in).
    as_onnx = reference_session(root / PREDICT) if layout.file != PREDICT else None
    test_sets, expected = [], []
    chroma_files: list[str] = []
    for k, values in enumerate(input_sets):
        set_dir = f"test_data_set_{k}"
        (root / set_dir).mkdir()
        feeds = {v.name: v.array for v in values}
        results = _run(session, feeds, k)
        expected.append(results)
        if as_onnx is not None:
            ortformat.check_conversion(outputs, _run(as_onnx, feeds, k), results, k,
                                       [_tolerance_for(o, options) for o in outputs])
        if original is not None:
            _check_same(outputs, _run(original, feeds, k), results, k, lifted, options)
        in_files = []
        for i, v in enumerate(values):
            rel = f"{set_dir}/input_{i}.pb"
            write_tensor(root / rel, v.name, v.array)
            source = {k2: val for k2, val in asdict(v.source).items() if val not in (None, {})}
            image = v.image
            if v.chroma is not None and image is not None:
                # The source's Cb and Cr, kept on the host for --save-images (images_out.py).
                chroma_rel = f"host/{set_dir}/input_{i}_cbcr.npy"
                (root / chroma_rel).parent.mkdir(parents=True, exist_ok=True)
                np.save(root / chroma_rel, v.chroma, allow_pickle=False)
                chroma_files.append(chroma_rel)
                image = replace(image, chroma_file=chroma_rel)
            in_files.append(TensorFile(v.name, rel, array_dtype(v.array), list(v.array.shape),
                                       source, _nonfinite(v.array), image))
        out_files = []
        for i, (spec, array) in enumerate(zip(outputs, results, strict=True)):
            if not isinstance(array, np.ndarray):
                raise EdgepackError(
                    f"model output {spec.name!r} is not a tensor at run time; edgepack compares "
                    "tensors"
                )
            bad = _nonfinite(array)
            if bad and not options.allow_nonfinite:
                raise EdgepackError(
                    f"input set {k}: the expected output {spec.name!r} holds {bad} NaN or inf "
                    f"value(s) ({_first_nonfinite(array)}); a comparison against them proves "
                    "little. Check the inputs (" + ", ".join(_describe_source(v) for v in values)
                    + "), or pass --allow-nonfinite to pack them anyway (they must then match "
                    "exactly)"
                )
            rel = f"{set_dir}/output_{i}.pb"
            write_tensor(root / rel, spec.name, array)
            out_files.append(TensorFile(spec.name, rel, array_dtype(array), list(array.shape),
                                        None, bad))
        test_sets.append(TestSet(k, set_dir, in_files, out_files))

    host_files = [_entry(root, rel) for rel in chroma_files]
    if node_map is not None:
        (root / NODE_MAP).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(root / NODE_MAP, json.dumps(node_map, indent=1, sort_keys=True) + "\n")
        host_files.append(_entry(root, NODE_MAP))
    quantization = None
    if quantized is not None:
        from edgepack.quantize import write_reference

        quantization = write_reference(root, quantized, outputs, expected,
                                       [t.dir for t in test_sets])
        host_files += [_entry(root, t.file) for s in quantization.reference for t in s.outputs]
    for rel in layout.dropped:
        (root / rel).unlink()
    host_files += [_entry(root, rel) for rel in layout.host]
    host_paths = {f.path for f in host_files}
    files = [
        _entry(root, rel, weights.sha256_if_unchanged(root / INIT) if rel == INIT else None)
        for rel in sorted(
            p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()
        )
        if rel not in host_paths
    ]
    source_sha = sha256_file(model_path)
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        name=options.name or model_path.stem,
        edgepack_version=__version__,
        onnxruntime_version=ort.__version__,
        model=ModelInfo(
            file=layout.file,
            external_data=layout.external_data,
            ir_version=int(model.ir_version),
            opset_imports=opset_imports(model),
            producer=" ".join(p for p in (model.producer_name, model.producer_version) if p),
            external_tensors=weights.external,
            inline_tensors=weights.inline,
            format=options.format,
            onnx_file=layout.onnx_file,
            operators_config=layout.operators_config,
        ),
        inputs=inputs,
        outputs=[
            OutputSpec(o.name, o.dtype, o.shape, _tolerance_for(o, options)) for o in outputs
        ],
        test_sets=test_sets,
        files=files,
        provenance=Provenance(
            kind="edgepack-export" if export_settings else "onnx",
            file=model_path.name,
            sha256=source_sha,
            export=export_settings,
        ),
        expected_outputs={
            "engine": "onnxruntime-python",
            "version": ort.__version__,
            "provider": "CPUExecutionProvider",
            "threads": 1,
            "deterministic_compute": True,
        },
        host_files=host_files,
        quantization=quantization,
        rewrite=rewrite,
    )
    check_manifest(manifest)  # what pack writes, every reader must accept
    text = manifest.dumps()
    atomic_write_text(root / MANIFEST, text)
    return Bundle(root, manifest, sha256_bytes(text.encode()))


def _entry(root: Path, rel: str, sha256: str | None = None) -> FileEntry:
    return FileEntry(rel, sha256 or sha256_file(root / rel), (root / rel).stat().st_size)


def _run(session: Any, feeds: dict[str, np.ndarray], k: int) -> list[Any]:
    from edgepack.ort_session import prepare, run_session

    try:
        return run_session(session, prepare(session, feeds))
    except Exception as exc:
        raise EdgepackError(
            f"onnxruntime could not run the model on input set {k}: {short(exc)}"
        ) from None


def _nonfinite(array: Any) -> int:
    if not isinstance(array, np.ndarray) or not _floating(array):
        return 0
    return int(array.size - np.count_nonzero(np.isfinite(array)))


def _floating(array: np.ndarray) -> bool:
    # bfloat16 and float8 are floats that numpy files under kind "V".
    from edgepack.dtypes import kind_of
    from edgepack.tensors import array_dtype

    return array.dtype.kind in "fc" or kind_of(array_dtype(array)) == "float"


def _first_nonfinite(array: np.ndarray) -> str:
    flat = int(np.flatnonzero(~np.isfinite(array.ravel()))[0])
    index = [int(i) for i in np.unravel_index(flat, array.shape)] if array.ndim else []
    return f"the first, {array.ravel()[flat]}, at {index}"


def _describe_source(value: InputValue) -> str:
    src = value.source
    where = src.file or (f"random, seed {src.seed}" if src.kind == "random" else src.kind)
    bad = _nonfinite(value.array)
    return f"{value.name} from {where}" + (f", which holds {bad} NaN or inf" if bad else "")


def _check_same(outputs: list[TensorSpec], before: list[Any], after: list[Any], k: int,
                lifted: int, options: PackOptions) -> None:
    """The packed graph against the model as given, on the same inputs: a rewrite of the graph
    must not change what it computes beyond the outputs' own tolerances."""
    from edgepack.compare import compare_output

    for spec, b, a in zip(outputs, before, after, strict=True):
        b, a = np.asarray(b), np.asarray(a)
        verdict = compare_output(spec.name, b, a, _tolerance_for(spec, options))
        if not verdict.passed:
            raise EdgepackError(
                f"input set {k}: moving {lifted} Constant weight(s) into {INIT} changed output "
                f"{spec.name!r} ({verdict.reason}); this is a bug in edgepack, please report it",
                ExitCode.INTERNAL,
            )


def _tolerance_for(spec: TensorSpec, options: PackOptions) -> Tolerance:
    if spec.name in options.tolerances:
        return options.tolerances[spec.name]
    base = options.default_tolerances.get(spec.name) or default_tolerance(spec.dtype)
    return Tolerance(
        rtol=base.rtol if options.rtol is None else options.rtol,
        atol=base.atol if options.atol is None else options.atol,
    )


def _write_predict_net(model: Any, model_path: Path, root: Path) -> WrittenWeights:
    """Write predict.onnx and init.bin, streaming external weights from beside `model_path`.

    Written by hand rather than with onnx.save_model's external-data option: that one needs
    every weight in memory and measures sizes with sys.getsizeof (object overhead included), and
    we want a fixed layout with aligned offsets so runtimes can map large weights straight from
    the file.
    """
    import onnx

    from edgepack.bundle.weights import write_weights

    predict = onnx.ModelProto()
    predict.CopyFrom(model)  # the graph only: external weights were never loaded
    written = write_weights(predict, model_path, root / INIT, INIT)
    (root / PREDICT).write_bytes(predict.SerializeToString(deterministic=True))
    return written


def lift_constants(model: Any) -> int:
    """Constant nodes holding more than EXTERNAL_THRESHOLD bytes become initializers, so their
    weights go to init.bin like everyone else's. paddle2onnx and some tf2onnx models keep every
    weight so; left in predict.onnx, they would be pushed again with every change of the graph.
    Returns how many were lifted (in subgraphs too)."""
    import onnx
    from onnx import helper, numpy_helper

    lifted = 0

    def visit(graph: Any) -> None:
        nonlocal lifted
        graph_outputs = {o.name for o in graph.output}
        kept = []
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    visit(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for g in attr.graphs:
                        visit(g)
            value = _constant_tensor(node)
            # A graph output that is an initializer is not something every runtime produces.
            if value is not None and node.output[0] not in graph_outputs:
                # External data is lifted whatever its size: the weight copy reads it from
                # beside the model (numpy_helper would look for it in the working directory).
                external = value.data_location == onnx.TensorProto.EXTERNAL
                size = (0 if external else len(value.raw_data) if value.HasField("raw_data")
                        else numpy_helper.to_array(value).nbytes)
                if external or size > EXTERNAL_THRESHOLD:
                    tensor = graph.initializer.add()
                    tensor.CopyFrom(value)
                    tensor.name = node.output[0]
                    if model.ir_version < 4:  # before IR 4 every initializer is a graph input
                        graph.input.append(helper.make_tensor_value_info(
                            tensor.name, tensor.data_type, list(tensor.dims)))
                    lifted += 1
                    continue
            kept.append(node)
        if len(kept) != len(graph.node):
            del graph.node[:]
            graph.node.extend(kept)

    visit(model.graph)
    return lifted


def _constant_tensor(node: Any) -> Any | None:
    """The TensorProto of a `Constant` node's `value`, or None for any other node."""
    import onnx

    if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or len(node.output) != 1:
        return None
    if len(node.attribute) != 1 or node.attribute[0].name != "value":
        return None  # value_float, value_ints...: scalars and short lists, never weights
    value = node.attribute[0].t
    if value.data_type == onnx.TensorProto.STRING:
        return None
    return value


# Node metadata left out of the node map as well as predict.onnx: stack traces name files by
# their absolute paths (home directories, virtualenvs), and the module names already say where
# a node came from.
_DROPPED_METADATA = ("pkg.torch.onnx.stack_trace",)


def strip_debug_info(model: Any) -> dict[str, Any] | None:
    """Remove what only a debugger needs from the model that goes to devices: per-node, per-value
    and per-graph metadata_props (a dynamo export's module names, FX nodes and stack traces),
    doc strings, and edgepack's own export record (the manifest keeps that). Returns the node map
    kept on the host (which PyTorch module each node came from), or None when there was none."""
    import onnx

    nodes: list[dict[str, Any]] = []
    values: dict[str, dict[str, str]] = {}
    graphs: dict[str, dict[str, str]] = {}

    def take(props: Any) -> dict[str, str]:
        kept = {p.key: p.value for p in props if p.key not in _DROPPED_METADATA}
        del props[:]
        return kept

    def visit(graph: Any, where: str) -> None:
        graph.doc_string = ""
        if meta := take(graph.metadata_props):
            graphs[where] = meta
        for group in (graph.input, graph.output, graph.value_info, graph.initializer):
            for item in group:
                item.doc_string = ""
                if meta := take(item.metadata_props):
                    values[item.name] = meta
        for i, node in enumerate(graph.node):
            node.doc_string = ""
            if meta := take(node.metadata_props):
                nodes.append({"graph": where, "index": i, "name": node.name,
                              "op_type": node.op_type, "domain": node.domain, "metadata": meta})
            for attr in node.attribute:
                attr.doc_string = ""
                label = f"{where}/{node.name or i}/{attr.name}"
                if attr.type == onnx.AttributeProto.GRAPH:
                    visit(attr.g, label)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for n, g in enumerate(attr.graphs):
                        visit(g, f"{label}[{n}]")

    model.doc_string = ""
    for prop in list(model.metadata_props):
        if prop.key == EXPORT_METADATA_KEY:
            model.metadata_props.remove(prop)
    visit(model.graph, "main")
    for function in model.functions:
        function.doc_string = ""
        where = f"function {function.domain}.{function.name}"
        if meta := take(function.metadata_props):
            graphs[where] = meta
        for i, node in enumerate(function.node):
            node.doc_string = ""
            if meta := take(node.metadata_props):
                nodes.append({"graph": where, "index": i, "name": node.name,
                              "op_type": node.op_type, "domain": node.domain, "metadata": meta})
    if not (nodes or values or graphs):
        return None
    return {"schema": "edgepack-node-map/1", "nodes": nodes, "values": values, "graphs": graphs}


def _export_settings(model: Any) -> dict[str, Any] | None:
    for prop in model.metadata_props:
        if prop.key == EXPORT_METADATA_KEY:
            try:
                return json.loads(prop.value)
            except ValueError:
                return None
    return None


def _move_into_place(staging: Path, out_dir: Path) -> None:
    if out_dir.exists():
        # --force: park the old bundle under a hidden name, swap, then delete it, so a crash
        # leaves either the old bundle or the new one in place.
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        os.replace(out_dir, old)
        os.replace(staging, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, out_dir)
