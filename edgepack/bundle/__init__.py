"""The bundle: a directory that carries a model to a device and the proof of what it must compute.

Three parts, read in this order: `schema` (what a manifest holds and the rules it obeys: the
definition of a bundle), `verify` (a bundle on disk: loading and checking it), `packer` (making
one from an ONNX model: `pack`). The names below are the package's API.
"""

from typing import Any

from edgepack.bundle.schema import (
    EXPORT_METADATA_KEY,
    EXTERNAL_THRESHOLD,
    INIT,
    MANIFEST,
    NODE_MAP,
    PREDICT,
    READABLE_SCHEMAS,
    SCHEMA_VERSION,
    FileEntry,
    Manifest,
    ModelInfo,
    OutputSpec,
    Provenance,
    TensorFile,
    TensorSpec,
    TestSet,
    Tolerance,
    check_manifest,
    check_path,
    default_tolerance,
)
from edgepack.bundle.verify import Bundle, load_bundle

_PACKER = ("PackOptions", "lift_constants", "pack", "strip_debug_info")


def __getattr__(name: str) -> Any:
    # The packer (onnxruntime, the graph rewrites) loads when asked for: what only reads
    # bundles (compare, the history, reports) stands on the schema alone.
    if name in _PACKER:
        from edgepack.bundle import packer

        return getattr(packer, name)
    raise AttributeError(f"module 'edgepack.bundle' has no attribute {name!r}")

__all__ = [
    "EXPORT_METADATA_KEY", "EXTERNAL_THRESHOLD", "INIT", "MANIFEST", "NODE_MAP", "PREDICT",
    "READABLE_SCHEMAS", "SCHEMA_VERSION", "Bundle", "FileEntry", "Manifest", "ModelInfo",
    "OutputSpec", "PackOptions", "Provenance", "TensorFile", "TensorSpec", "TestSet", "Tolerance",
    "check_manifest", "check_path", "default_tolerance", "lift_constants", "load_bundle", "pack",
    "strip_debug_info",
]
