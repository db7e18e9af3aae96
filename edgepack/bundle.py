"""The bundle: a directory that carries a model to a device and the proof of what it must compute.

Layout (the init/predict split of Caffe2's mobile exporter, in standard ONNX):

    manifest.json                 this module's Manifest, schema_version 1
    predict.onnx                  the graph; every initializer over 1 KiB lives in init.bin
    init.bin                      the external-data file predict.onnx points at
    test_data_set_<k>/input_<i>.pb    named TensorProto inputs (ONNX test-data layout)
    test_data_set_<k>/output_<i>.pb   expected outputs, from onnxruntime's CPU provider

The manifest is the schema; everything else is derived from it. A bundle is written into a hidden
temporary directory and renamed into place, and the manifest is written last, so nothing
half-written ever looks like a bundle.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgepack import __version__
from edgepack.errors import EdgepackError, short
from edgepack.fileio import atomic_write_text, cache_root, sha256_bytes, sha256_file
from edgepack.onnx_model import TensorSpec

if TYPE_CHECKING:
    from edgepack.inputs import InputRequest, InputValue

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
PREDICT = "predict.onnx"
INIT = "init.bin"
EXTERNAL_THRESHOLD = 1024  # bytes: "every initializer above 1 KiB"
EXPORT_METADATA_KEY = "edgepack.export"


# ---------------------------------------------------------------------------- the schema


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float


def default_tolerance(dtype: str) -> Tolerance:
    """Tolerances loose enough for another CPU's kernels, tight enough to catch a wrong op."""
    if dtype == "float16":
        return Tolerance(rtol=1e-2, atol=1e-2)
    if dtype == "float32":
        return Tolerance(rtol=1e-3, atol=1e-4)
    if dtype == "float64":
        return Tolerance(rtol=1e-7, atol=1e-9)
    return Tolerance(rtol=0.0, atol=0.0)  # integers and booleans must match exactly


@dataclass(frozen=True)
class OutputSpec:
    name: str
    dtype: str
    shape: list[int | str | None]
    tolerance: Tolerance


@dataclass(frozen=True)
class FileEntry:
    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class TensorFile:
    name: str
    file: str  # relative to the bundle
    dtype: str
    shape: list[int]
    source: dict[str, Any] | None = None


@dataclass(frozen=True)
class TestSet:
    index: int
    dir: str
    inputs: list[TensorFile]
    outputs: list[TensorFile]


@dataclass(frozen=True)
class ModelInfo:
    file: str
    external_data: str
    ir_version: int
    opset_imports: dict[str, int]
    producer: str
    external_tensors: int
    inline_tensors: int


@dataclass(frozen=True)
class Provenance:
    kind: str  # "edgepack-export" or "onnx"
    file: str
    sha256: str
    export: dict[str, Any] | None = None


@dataclass(frozen=True)
class Manifest:
    schema_version: int
    name: str
    edgepack_version: str
    onnxruntime_version: str
    model: ModelInfo
    inputs: list[TensorSpec]
    outputs: list[OutputSpec]
    test_sets: list[TestSet]
    files: list[FileEntry]
    provenance: Provenance
    expected_outputs: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def dumps(self) -> str:
        # Sorted keys and a fixed indent: packing twice gives the same bytes.
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Manifest:
        version = doc.get("schema_version")
        if version != SCHEMA_VERSION:
            raise EdgepackError(
                f"bundle manifest schema_version {version!r} is not one this edgepack reads "
                f"({SCHEMA_VERSION}); repack the model with this version"
            )
        return cls(
            schema_version=version,
            name=doc["name"],
            edgepack_version=doc["edgepack_version"],
            onnxruntime_version=doc["onnxruntime_version"],
            model=ModelInfo(**doc["model"]),
            inputs=[TensorSpec(**t) for t in doc["inputs"]],
            outputs=[
                OutputSpec(o["name"], o["dtype"], o["shape"], Tolerance(**o["tolerance"]))
                for o in doc["outputs"]
            ],
            test_sets=[
                TestSet(
                    s["index"],
                    s["dir"],
                    [TensorFile(**t) for t in s["inputs"]],
                    [TensorFile(**t) for t in s["outputs"]],
                )
                for s in doc["test_sets"]
            ],
            files=[FileEntry(**f) for f in doc["files"]],
            provenance=Provenance(**doc["provenance"]),
            expected_outputs=doc.get("expected_outputs", {}),
        )

    def tolerance(self, output: str) -> Tolerance:
        for o in self.outputs:
            if o.name == output:
                return o.tolerance
        raise KeyError(output)


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: Manifest
    sha256: str  # of manifest.json, which hashes every other file: the bundle's identity

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def predict_path(self) -> Path:
        return self.path / self.manifest.model.file

    def set_dir(self, index: int) -> Path:
        return self.path / self.manifest.test_sets[index].dir

    def expected_outputs(self, index: int) -> dict[str, np.ndarray]:
        from edgepack.tensors import read_tensor

        result = {}
        for out in self.manifest.test_sets[index].outputs:
            _, array = read_tensor(self.path / out.file)
            result[out.name] = array
        return result

    def size_bytes(self) -> int:
        return sum(f.size for f in self.manifest.files)


# ---------------------------------------------------------------------------- loading


def load_bundle(path: Path, *, verify: bool = True) -> Bundle:
    """Read a bundle's manifest; with `verify`, check every file's size and sha256."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not path.is_dir():
        raise EdgepackError(f"{path}: no such bundle directory (make one with `edgepack pack`)")
    if not manifest_path.is_file():
        raise EdgepackError(f"{path}: not a bundle (no {MANIFEST}; make one with `edgepack pack`)")
    raw = manifest_path.read_bytes()
    try:
        doc = json.loads(raw)
        manifest = Manifest.from_json(doc)
    except EdgepackError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise EdgepackError(f"{manifest_path}: malformed manifest ({exc!r})") from None
    digest = sha256_bytes(raw)
    if verify:
        _verify_files(path, manifest, digest)
    return Bundle(path, manifest, digest)


def _verify_files(path: Path, manifest: Manifest, digest: str) -> None:
    """Every file against its manifest sha256. Files whose size, mtime and inode are as they
    were when last verified are not hashed again (the way git trusts its index): a 1 GB bundle
    would otherwise cost a second of hashing on every deploy."""
    record = cache_root() / "verified" / f"{digest}.json"
    where = str(path.resolve())
    try:
        known = json.loads(record.read_text())
        if known.get("path") != where:
            known = {}
    except (OSError, ValueError):
        known = {}
    seen: dict[str, list[int]] = {}
    for entry in manifest.files:
        file = path / entry.path
        if not _inside(path, file):
            raise EdgepackError(f"{path / MANIFEST}: file {entry.path!r} lies outside the bundle")
        if not file.is_file():
            raise EdgepackError(f"{path}: bundle file {entry.path} is missing")
        st = file.stat()
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev]
        if known.get("files", {}).get(entry.path) != stamp and (
            st.st_size != entry.size or sha256_file(file) != entry.sha256
        ):
            raise EdgepackError(
                f"{path}: bundle file {entry.path} does not match its manifest hash; "
                "the bundle was changed after packing: pack it again"
            )
        seen[entry.path] = stamp
    with contextlib.suppress(OSError):  # a read-only cache only costs the hashing next time
        record.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(record, json.dumps({"path": where, "files": seen}))


def _inside(root: Path, file: Path) -> bool:
    try:
        file.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------- packing


@dataclass(frozen=True)
class PackOptions:
    name: str | None = None
    tolerances: dict[str, Tolerance] = field(default_factory=dict)  # per output name
    rtol: float | None = None  # overrides for every output without its own entry
    atol: float | None = None
    force: bool = False


def pack(model_path: Path, out_dir: Path, request: InputRequest, options: PackOptions) -> Bundle:
    """Pack an ONNX model and its inputs into a bundle at `out_dir`."""
    from edgepack.inputs import collect_input_sets
    from edgepack.onnx_model import describe_inputs, describe_outputs, load_model

    model_path, out_dir = Path(model_path), Path(out_dir)
    if out_dir.exists() and not options.force:
        raise EdgepackError(f"{out_dir}: already exists; choose another -o or pass --force")
    if out_dir.exists() and not out_dir.is_dir():
        raise EdgepackError(f"{out_dir}: exists and is not a directory")

    model = load_model(model_path)
    inputs = describe_inputs(model)
    outputs = describe_outputs(model)
    for name in options.tolerances:
        if name not in {o.name for o in outputs}:
            raise EdgepackError(
                f"--tolerance {name}: the model has no output {name!r} "
                f"(its outputs: {', '.join(o.name for o in outputs)})"
            )
    input_sets = collect_input_sets(inputs, request)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        bundle = _write_bundle(staging, model, model_path, inputs, outputs, input_sets, options)
        _move_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Bundle(out_dir, bundle.manifest, bundle.sha256)


def _write_bundle(
    root: Path,
    model: Any,
    model_path: Path,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    input_sets: list[list[InputValue]],
    options: PackOptions,
) -> Bundle:
    from edgepack.onnx_model import opset_imports
    from edgepack.tensors import write_tensor

    export_settings = _export_settings(model)
    external, inline = _write_predict_net(model, root)

    import onnxruntime as ort

    session = _expected_session(root / PREDICT)
    test_sets = []
    for k, values in enumerate(input_sets):
        set_dir = f"test_data_set_{k}"
        (root / set_dir).mkdir()
        feeds = {v.name: v.array for v in values}
        try:
            results = session.run(None, feeds)
        except Exception as exc:
            raise EdgepackError(
                f"onnxruntime could not run the model on input set {k}: {short(exc)}"
            ) from None
        in_files = []
        for i, v in enumerate(values):
            rel = f"{set_dir}/input_{i}.pb"
            write_tensor(root / rel, v.name, v.array)
            source = {k2: val for k2, val in asdict(v.source).items() if val not in (None, {})}
            in_files.append(
                TensorFile(v.name, rel, v.array.dtype.name, list(v.array.shape), source)
            )
        out_files = []
        for i, (spec, array) in enumerate(zip(outputs, results, strict=True)):
            if not isinstance(array, np.ndarray):
                raise EdgepackError(
                    f"model output {spec.name!r} is not a tensor at run time; edgepack compares "
                    "tensors"
                )
            rel = f"{set_dir}/output_{i}.pb"
            write_tensor(root / rel, spec.name, array)
            out_files.append(TensorFile(spec.name, rel, array.dtype.name, list(array.shape)))
        test_sets.append(TestSet(k, set_dir, in_files, out_files))

    files = [
        FileEntry(rel, sha256_file(root / rel), (root / rel).stat().st_size)
        for rel in sorted(
            str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()
        )
    ]
    source_sha = sha256_file(model_path)
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        name=options.name or model_path.stem,
        edgepack_version=__version__,
        onnxruntime_version=ort.__version__,
        model=ModelInfo(
            file=PREDICT,
            external_data=INIT,
            ir_version=int(model.ir_version),
            opset_imports=opset_imports(model),
            producer=" ".join(p for p in (model.producer_name, model.producer_version) if p),
            external_tensors=external,
            inline_tensors=inline,
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
    )
    text = manifest.dumps()
    atomic_write_text(root / MANIFEST, text)
    return Bundle(root, manifest, sha256_bytes(text.encode()))


def _tolerance_for(spec: TensorSpec, options: PackOptions) -> Tolerance:
    if spec.name in options.tolerances:
        return options.tolerances[spec.name]
    base = default_tolerance(spec.dtype)
    return Tolerance(
        rtol=base.rtol if options.rtol is None else options.rtol,
        atol=base.atol if options.atol is None else options.atol,
    )


def _write_predict_net(model: Any, root: Path) -> tuple[int, int]:
    """Write predict.onnx and init.bin; returns (external, inline) initializer counts.

    Written by hand rather than with onnx.save_model's external-data option: that one measures
    sizes with sys.getsizeof (object overhead included), and we want a fixed layout with aligned
    offsets so runtimes can map large weights straight from the file.
    """
    import onnx
    from onnx import external_data_helper, numpy_helper

    predict = onnx.ModelProto()
    predict.CopyFrom(model)
    external = inline = 0
    offset = 0
    with open(root / INIT, "wb") as blob:
        for tensor in _all_initializers(predict.graph):
            if tensor.data_type == onnx.TensorProto.STRING:
                inline += 1
                continue
            raw = tensor.raw_data if tensor.HasField("raw_data") else None
            if raw is None:
                raw = numpy_helper.from_array(numpy_helper.to_array(tensor)).raw_data
            if len(raw) <= EXTERNAL_THRESHOLD:
                inline += 1
                continue
            # Page-align big tensors (mmap-able), 64-byte-align the rest (SIMD loads).
            align = 4096 if len(raw) >= 65536 else 64
            pad = (-offset) % align
            blob.write(b"\0" * pad)
            offset += pad
            blob.write(raw)
            for fld in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
                tensor.ClearField(fld)
            tensor.raw_data = raw  # set_external_data insists on raw_data being present
            external_data_helper.set_external_data(tensor, INIT, offset, len(raw))
            tensor.ClearField("raw_data")
            tensor.data_location = onnx.TensorProto.EXTERNAL
            offset += len(raw)
            external += 1
    (root / PREDICT).write_bytes(predict.SerializeToString(deterministic=True))
    return external, inline


def _all_initializers(graph: Any) -> list[Any]:
    import onnx

    found = list(graph.initializer)
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                found += _all_initializers(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    found += _all_initializers(g)
    return found


def _expected_session(predict: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # One thread, sequential, deterministic kernels: the expected outputs of one model and input
    # must not depend on the machine's load or core count.
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.use_deterministic_compute = True
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(predict), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise EdgepackError(f"onnxruntime cannot load this model: {short(exc)}") from None


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
