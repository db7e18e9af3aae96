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
    nonfinite: int = 0  # NaN and inf values in it: an expected output holds some only by
    # `pack --allow-nonfinite`, and then they must match exactly


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
    files: list[FileEntry]  # what a device needs: every one of them is pushed
    provenance: Provenance
    expected_outputs: dict[str, Any] = field(default_factory=dict)
    # Files for the host alone (the node map): hashed and verified like the others, never pushed.
    host_files: list[FileEntry] = field(default_factory=list)

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
    for what, path in (("model file", m.model.file),
                       ("model external_data", m.model.external_data)):
        check_path(path, what)
        if path not in pushed:
            raise EdgepackError(f"manifest {what} {path!r} is not among the bundle's files")
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
    for host in m.host_files:
        if host.path in pushed:
            raise EdgepackError(f"manifest lists {host.path!r} as both a device and a host file")


