"""The bundle's schema: what manifest.json holds, and the rules every manifest obeys.

This is the definition of a bundle; the runner's contract (device_scripts/runner/README.md) and
docs/bundle-schema.md point here, and tests/host/test_bundle_schema.py checks that document
against these classes. A bundle on disk:

    manifest.json                 `Manifest`, schema_version 2 (1 still reads)
    predict.onnx                  the graph; every initializer over 1 KiB lives in init.bin
    init.bin                      the external-data file predict.onnx points at
    test_data_set_<k>/input_<i>.pb    named TensorProto inputs (ONNX test-data layout)
    test_data_set_<k>/output_<i>.pb   expected outputs, from onnxruntime's CPU provider
    host/nodes.json               what the exporter knew of each node (PyTorch module, FX node);
                                  kept on the host for diagnosis, never pushed to a device

A manifest is read by one function, `Manifest.from_json`, which types every field (through
serialize.from_jsonable, the one deserializer of records) and checks every path it names (plain
relative paths inside the bundle, in the places pack puts them), so no later reader can be led
outside the bundle by a hostile manifest.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from edgepack.errors import EdgepackError, short

SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)  # 2 added host_files and TensorFile.nonfinite; 1 reads as before
MANIFEST = "manifest.json"
PREDICT = "predict.onnx"
INIT = "init.bin"
NODE_MAP = "host/nodes.json"
EXTERNAL_THRESHOLD = 1024  # bytes: "every initializer above 1 KiB"
EXPORT_METADATA_KEY = "edgepack.export"



Dim = int | str | None


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: name, numpy dtype name, shape with symbolic dims as strings."""

    name: str
    dtype: str
    shape: list[Dim]

    def fits(self, shape: tuple[int, ...]) -> bool:
        if len(shape) != len(self.shape):
            return False
        return all(not isinstance(d, int) or d == s for d, s in zip(self.shape, shape, strict=True))

    def shape_text(self) -> str:
        return "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float


def default_tolerance(dtype: str) -> Tolerance:
    """Tolerances loose enough for another CPU's kernels, tight enough to catch a wrong op; per
    element type in edgepack.dtypes (integers, booleans and strings exactly)."""
    from edgepack.dtypes import default_tolerance as by_type

    tol = by_type(dtype)
    return Tolerance(rtol=tol.rtol, atol=tol.atol)


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
class ImagePreprocess:
    """How pack made an input from an image (edgepack/inputs.py), every step in the order it
    ran: what `inspect` shows, so nobody has to guess the filter or the aspect change."""

    image_size: list[int]  # the file's width, height
    size: list[int]  # width, height fed to the model
    resize_filter: str  # nearest, bilinear, bicubic, lanczos; "none" when the size was kept
    keep_aspect: str  # squash, crop (the centre) or pad (black, centred)
    aspect_changed: bool  # squash changed the width:height ratio (by more than 1%)
    color: str  # rgb, bgr, gray or y, converted after the resize
    scale: float
    mean: list[float]
    std: list[float]
    layout: str  # nchw or nhwc
    dtype: str
    steps: list[str]  # in words, in order
    # --color y: host file (.npy, H x W x 2 uint8) of the resized source's Cb and Cr, from
    # which --save-images rebuilds the colour picture of an upscaled Y output
    chroma_file: str | None = None


@dataclass(frozen=True)
class TensorFile:
    name: str
    file: str  # relative to the bundle
    dtype: str
    shape: list[int]
    source: dict[str, Any] | None = None
    nonfinite: int = 0  # NaN and inf values in it: an expected output holds some only by
    # `pack --allow-nonfinite`, and then they must match exactly
    preprocess: ImagePreprocess | None = None  # an input made from an image


@dataclass(frozen=True)
class TestSet:
    index: int
    dir: str
    inputs: list[TensorFile]
    outputs: list[TensorFile]


@dataclass(frozen=True)
class ModelInfo:
    file: str  # what runners load: predict.onnx, or predict.ort (format ort or both)
    external_data: str | None  # init.bin, the ONNX file's weights; None without an ONNX file
    ir_version: int
    opset_imports: dict[str, int]
    producer: str
    external_tensors: int
    inline_tensors: int
    # `pack --format`: onnx, ort (predict.ort alone) or both (predict.ort pushed, predict.onnx and
    # init.bin kept as host files); bundle/ortformat.py says why.
    format: str = "onnx"
    onnx_file: str | None = None  # the ONNX graph wherever it is (pushed or host), if kept
    operators_config: str | None = None  # required_operators.config, a host file (ORT formats)


@dataclass(frozen=True)
class Provenance:
    kind: str  # "edgepack-export" or "onnx"
    file: str
    sha256: str
    export: dict[str, Any] | None = None


@dataclass(frozen=True)
class AccuracyCost:
    """What quantization cost one output, the quantized model against the float one over every
    input set (edgepack.compare's metrics): reported, not judged by tolerances."""

    output: str
    snr_db: float | None  # None when identical (infinite) or undefined
    cosine: float | None
    max_abs_error: float | None
    top1_agreement: float | None = None  # class-score outputs only (compare.class_count)
    top5_agreement: float | None = None


@dataclass(frozen=True)
class Quantization:
    """`pack --quantize`: how the model was quantized, and its second reference: the float
    model's outputs on the same input sets (host files under reference/)."""

    mode: str  # int8 or fp16
    method: str  # the tool and its settings, in words
    calibration: str | None  # int8: where the calibration inputs came from
    calibration_sets: int
    float_sha256: str  # of the float model as pack read it
    reference: list[TestSet]  # set k: the float outputs of test set k's inputs (inputs empty)
    cost: list[AccuracyCost]


@dataclass(frozen=True)
class RuleRun:
    """One rewrite rule and the nodes of one operator it replaced."""

    rule: str  # e.g. "InstanceNormalization->ReduceMean/Sub/Mul/Add/Sqrt/Div"
    op: str  # the operator replaced; "domain:Op" outside the default domain
    nodes: int


@dataclass(frozen=True)
class Rewrite:
    """`pack --ops-allowed` / `--fix-dim`: what was done to the model before packing, checked
    against the model as given on every input set (edgepack/rewrite/)."""

    ops_allowed: str | None  # the provider named, or the operator config file's name
    fixed_dims: list[str]  # each --fix-dim as NAME=SIZE or INPUT=D0xD1x..., in order
    rules: list[RuleRun]  # in the order they first ran
    nodes_before: int
    nodes_after: int
    opset_before: int
    opset_after: int
    max_abs_error: float | None  # rewritten against original, over every output and set


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
    files: list[FileEntry]  # what a device needs: every one of them is pushed
    provenance: Provenance
    expected_outputs: dict[str, Any] = field(default_factory=dict)
    # Files for the host alone (the node map): hashed and verified like the others, never pushed.
    host_files: list[FileEntry] = field(default_factory=list)
    quantization: Quantization | None = None  # `pack --quantize`
    rewrite: Rewrite | None = None  # `pack --ops-allowed` / `--fix-dim`

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def dumps(self) -> str:
        # Sorted keys and a fixed indent: packing twice gives the same bytes.
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, doc: Any) -> Manifest:
        """The one reader of manifests: every field typed, every path checked (see
        `check_manifest`). Raises EdgepackError (exit 2) naming what is wrong."""
        from edgepack.serialize import from_jsonable

        if not isinstance(doc, dict):
            raise EdgepackError(f"malformed manifest (a JSON {type(doc).__name__}, not an object)")
        version = doc.get("schema_version")
        if version not in READABLE_SCHEMAS:
            raise EdgepackError(
                f"bundle manifest schema_version {version!r} is not one this edgepack reads "
                f"({', '.join(map(str, READABLE_SCHEMAS))}); repack the model with this version"
            )
        try:
            manifest = from_jsonable(cls, doc)
        except (TypeError, ValueError, KeyError) as exc:
            raise EdgepackError(f"malformed manifest ({short(exc)})") from None
        check_manifest(manifest)
        return manifest

    def tolerance(self, output: str) -> Tolerance:
        for o in self.outputs:
            if o.name == output:
                return o.tolerance
        raise KeyError(output)



# ---------------------------------------------------------------------------- checking

# One path component as pack writes them (predict.onnx, test_data_set_0, input_0.pb): no
# leading dot (so no `.` or `..`), no separators, no characters a shell or a device's file
# system could read another way.
_COMPONENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def check_path(path: str, what: str) -> None:
    """A manifest path must be plain, relative and inside the bundle: components joined by
    '/', none empty, '.', '..' or hidden, no backslash, no absolute path, no drive letter."""
    problem = None
    if not path:
        problem = "it is empty"
    elif path.startswith("/"):
        problem = "it is absolute"
    elif "\\" in path:
        problem = "it holds a backslash"
    else:
        for part in path.split("/"):
            if part in ("", ".", ".."):
                problem = ("it leaves its directory" if part == ".."
                           else "it has an empty or '.' part")
                break
            if not _COMPONENT.fullmatch(part):
                problem = f"part {part!r} is not a plain file name"
                break
    if problem:
        raise EdgepackError(f"manifest {what} {path!r} is not a plain relative path inside the "
                            f"bundle ({problem})")


def check_manifest(m: Manifest) -> None:
    """Everything a reader relies on: paths inside the bundle and where pack puts them, every
    named file hashed, no file listed twice."""
    for o in m.outputs:
        t = o.tolerance
        if not (0 <= t.rtol < float("inf") and 0 <= t.atol < float("inf")):
            raise EdgepackError(f"manifest tolerance of output {o.name!r} must be finite and "
                                f">= 0 (rtol {t.rtol}, atol {t.atol})")
    if not m.name or any(ord(c) < 32 or c == "\x7f" for c in m.name) or len(m.name) > 255:
        raise EdgepackError(f"manifest name {m.name!r} is empty, too long or holds control "
                            "characters")
    listed: dict[str, FileEntry] = {}
    for where, entries in (("files", m.files), ("host_files", m.host_files)):
        for entry in entries:
            check_path(entry.path, f"{where} entry")
            if entry.path in listed or entry.path == MANIFEST:
                raise EdgepackError(f"manifest lists {entry.path!r} twice (or lists itself)")
            if not _SHA256.fullmatch(entry.sha256) or entry.size < 0:
                raise EdgepackError(f"manifest {where} entry {entry.path!r} has a malformed "
                                    "sha256 or size")
            listed[entry.path] = entry
    pushed = {f.path for f in m.files}
    _check_model_files(m.model, pushed, {f.path for f in m.host_files})
    for position, test_set in enumerate(m.test_sets):
        check_path(test_set.dir, f"test set {position} dir")
        if test_set.index != position:
            raise EdgepackError(f"manifest test set {position} says it is set {test_set.index}")
        for kind, tensors in (("input", test_set.inputs), ("output", test_set.outputs)):
            for i, tensor in enumerate(tensors):
                # Runners read input_<i>.pb from the set's directory and write output_<i>.pb:
                # a manifest naming any other file would be judged against something else.
                want = f"{test_set.dir}/{kind}_{i}.pb"
                if tensor.file != want:
                    raise EdgepackError(f"manifest test set {position} {kind} {i} is "
                                        f"{tensor.file!r}, not {want!r}")
                if tensor.file not in pushed:
                    raise EdgepackError(f"manifest {kind} file {tensor.file!r} is not among the "
                                        "bundle's files")
                chroma = tensor.preprocess.chroma_file if tensor.preprocess else None
                if chroma is not None:
                    check_path(chroma, f"test set {position} {kind} {i} chroma_file")
                    if chroma not in {f.path for f in m.host_files}:
                        raise EdgepackError(f"manifest chroma_file {chroma!r} is not among the "
                                            "bundle's host_files")
    for host in m.host_files:
        if host.path in pushed:
            raise EdgepackError(f"manifest lists {host.path!r} as both a device and a host file")
    if m.quantization is not None:
        _check_quantization(m, {f.path for f in m.host_files})


MODEL_FORMATS = ("onnx", "ort", "both")


def _check_model_files(model: ModelInfo, pushed: set[str], host: set[str]) -> None:
    """The runner loads `file` and picks its format by the extension; an ONNX file's weights
    go where it goes; the ORT formats push no ONNX file (bundle/ortformat.py)."""
    if model.format not in MODEL_FORMATS:
        raise EdgepackError(f"manifest model format {model.format!r} is not one of "
                            f"{', '.join(MODEL_FORMATS)}")
    check_path(model.file, "model file")
    if model.file not in pushed:
        raise EdgepackError(f"manifest model file {model.file!r} is not among the bundle's files")
    suffix = ".onnx" if model.format == "onnx" else ".ort"
    if not model.file.endswith(suffix):
        raise EdgepackError(f"manifest model file {model.file!r} of format {model.format} does "
                            f"not end in {suffix} (runners pick the format by the extension)")
    if model.format == "onnx" and model.onnx_file not in (None, model.file):
        raise EdgepackError(f"manifest onnx_file {model.onnx_file!r} is not the model file")
    onnx_place = {"onnx": pushed, "both": host}.get(model.format)
    for what, path in (("model onnx_file", model.onnx_file),
                       ("model external_data", model.external_data)):
        if onnx_place is None:
            if path is not None:
                raise EdgepackError(f"manifest {what} {path!r}: a bundle of format ort holds "
                                    "no ONNX file")
            continue
        if path is None:
            if model.format == "onnx" and what == "model onnx_file":
                continue  # schema 1 and 2 manifests: the model file is the ONNX file
            raise EdgepackError(f"manifest {what} is missing (format {model.format})")
        check_path(path, what)
        if path not in onnx_place:
            raise EdgepackError(f"manifest {what} {path!r} is not among the bundle's "
                                + ("files" if onnx_place is pushed else "host_files"))
    if model.operators_config is not None:
        check_path(model.operators_config, "model operators_config")
        if model.operators_config not in host:
            raise EdgepackError(f"manifest model operators_config {model.operators_config!r} is "
                                "not among the bundle's host_files")


def _check_quantization(m: Manifest, host: set[str]) -> None:
    q = m.quantization
    assert q is not None
    if q.mode not in ("int8", "fp16"):
        raise EdgepackError(f"manifest quantization mode {q.mode!r} is not int8 or fp16")
    if len(q.reference) != len(m.test_sets):
        raise EdgepackError(f"manifest quantization holds {len(q.reference)} reference set(s) "
                            f"for {len(m.test_sets)} test set(s)")
    names = [o.name for o in m.outputs]
    for position, ref in enumerate(q.reference):
        want_dir = f"reference/{m.test_sets[position].dir}"
        if ref.index != position or ref.dir != want_dir or ref.inputs:
            raise EdgepackError(f"manifest quantization reference set {position} is not "
                                f"{want_dir!r} with outputs only")
        if [t.name for t in ref.outputs] != names:
            raise EdgepackError(f"manifest quantization reference set {position} names outputs "
                                f"other than the model's")
        for i, tensor in enumerate(ref.outputs):
            want = f"{ref.dir}/output_{i}.pb"
            check_path(tensor.file, f"quantization reference {position} output {i}")
            if tensor.file != want or tensor.file not in host:
                raise EdgepackError(f"manifest quantization reference {tensor.file!r} is not "
                                    f"{want!r} among the bundle's host_files")


