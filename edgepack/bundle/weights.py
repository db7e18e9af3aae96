"""Weights on their way into init.bin: checked where they lie, copied in chunks, hashed as copied.

A model's weights may be larger than memory and larger than protobuf's 2 GiB limit, so the
packer never loads them: it reads the graph alone (`onnx_model.load_model(..., load_weights=
False)`, which calls `check_external_data`), then copies each tensor from its source file into
init.bin one chunk at a time, hashing the bytes as it writes them so init.bin is never read back.
Weights stored inside the model file (raw_data) are written as they are.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from edgepack.bundle.schema import EXTERNAL_THRESHOLD
from edgepack.errors import EdgepackError

if TYPE_CHECKING:
    import onnx

# Big enough that the per-call cost vanishes next to the copy, small enough to be no memory.
CHUNK = 8 << 20


@dataclass(frozen=True)
class ExternalRef:
    """Where a tensor's bytes lie, checked: a regular file inside the model's directory that
    holds offset + length bytes."""

    tensor: str
    file: Path
    offset: int
    length: int


@dataclass(frozen=True)
class WrittenWeights:
    external: int  # tensors in init.bin
    inline: int  # tensors left in predict.onnx
    size: int  # of init.bin
    sha256: str  # of init.bin, computed while writing it
    stamp: tuple[int, int, int]  # (size, mtime_ns, inode) of init.bin when written

    def sha256_if_unchanged(self, path: Path) -> str | None:
        """The hash computed while writing, if `path` is still the file written then."""
        st = path.stat()
        return self.sha256 if (st.st_size, st.st_mtime_ns, st.st_ino) == self.stamp else None


# ---------------------------------------------------------------------------- checking sources


def check_external_data(model: onnx.ModelProto, model_path: Path) -> None:
    """Every external data reference of the model, checked before anything reads it: a file
    that is missing, too short, or outside the model's directory is named with its tensor."""
    for tensor, _ in _tensors(model.graph):
        if is_external(tensor):
            external_ref(tensor, model_path)


def is_external(tensor: onnx.TensorProto) -> bool:
    import onnx

    return tensor.data_location == onnx.TensorProto.EXTERNAL


def external_ref(tensor: onnx.TensorProto, model_path: Path) -> ExternalRef:
    """The checked location of an external tensor's bytes, relative to the model's directory."""
    model_path = Path(model_path)
    entries = {e.key: e.value for e in tensor.external_data}
    where = f"{model_path}: tensor {tensor.name!r}"
    location = entries.get("location", "")
    if not location:
        raise EdgepackError(f"{where} is stored as external data but names no file")
    base = model_path.parent.resolve()
    file = base / location
    # resolve() follows links too: a link beside the model that points elsewhere is refused.
    if Path(location).is_absolute() or not file.resolve().is_relative_to(base):
        raise EdgepackError(
            f"{where}: its external data file {location!r} lies outside the model's directory "
            f"{base}; keep the data files beside the model"
        )
    try:
        offset = int(entries.get("offset", "0"))
        length = int(entries["length"]) if "length" in entries else None
    except ValueError:
        raise EdgepackError(
            f"{where}: its external data offset or length is not a number "
            f"({entries.get('offset')!r}, {entries.get('length')!r})"
        ) from None
    if offset < 0 or (length is not None and length < 0):
        raise EdgepackError(f"{where}: its external data offset or length is negative")
    if not file.exists():
        raise EdgepackError(
            f"{where}: its external data file {location} is missing; keep the data files named "
            "in the model beside it"
        )
    if not file.is_file():
        raise EdgepackError(f"{where}: its external data file {location} is not a regular file")
    size = file.stat().st_size
    if length is None:  # ONNX's rule: the data runs to the end of the file
        length = max(size - offset, 0)
    if offset + length > size:
        raise EdgepackError(
            f"{where}: its external data file {location} is truncated: the tensor needs bytes "
            f"{offset}..{offset + length} and the file holds {size}"
        )
    needed = _data_bytes(tensor)
    if needed is not None and needed != length:
        raise EdgepackError(
            f"{where}: its shape {list(tensor.dims)} needs {needed} bytes, its external data "
            f"in {location} holds {length}; the data file is truncated or not this model's"
        )
    return ExternalRef(tensor.name, file, offset, length)


def _data_bytes(tensor: onnx.TensorProto) -> int | None:
    """Bytes the tensor's shape and type need, or None for a type this cannot tell."""
    import math

    import onnx
    from onnx import helper

    count = math.prod(tensor.dims)
    sub_byte = {getattr(onnx.TensorProto, n, None): bits for n, bits in (
        ("INT4", 4), ("UINT4", 4), ("FLOAT4E2M1", 4), ("INT2", 2), ("UINT2", 2))}
    sub_byte.pop(None, None)
    if tensor.data_type in sub_byte:
        return (count * sub_byte[tensor.data_type] + 7) // 8
    try:
        itemsize = helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except Exception:  # noqa: BLE001 - types numpy cannot name: no check rather than a false one
        return None
    if tensor.data_type == onnx.TensorProto.STRING:
        return None
    return count * itemsize


def rename_data_file(model: onnx.ModelProto, old: str, new: str) -> int:
    """Point every tensor stored in external data file `old` at `new` (the file renamed beside
    the model); returns how many were."""
    moved = 0
    for tensor, _ in _tensors(model.graph):
        for entry in tensor.external_data:
            if entry.key == "location" and entry.value == old:
                entry.value = new
                moved += 1
    return moved


# ---------------------------------------------------------------------------- copying


def copy_chunks(src: BinaryIO, dst: BinaryIO, length: int, hasher: Any,
                chunk: int | None = None) -> None:
    """Copy `length` bytes from src's position to dst's, reading `chunk` bytes (CHUNK unless
    given) at a time into one buffer to feed `hasher`: memory stays one chunk, however large the
    tensor.

    Between two plain files the bytes are copied by the kernel (copy_file_range), from the page
    cache the hashing read just filled: on the project's (loaded, 2-core) machine, 1 GiB read,
    hashed and copied so took 4 s, written back from Python 10 s."""
    chunk = chunk or CHUNK
    buf = memoryview(bytearray(min(chunk, length)))
    fds = _plain_files(src, dst)
    position = src.tell() if fds else 0
    left = length
    while left:
        n = src.readinto(buf[:min(chunk, left)])
        if not n:
            raise EOFError(f"{left} of {length} bytes missing")
        hasher.update(buf[:n])
        done = 0
        if fds:
            try:
                while done < n:
                    copied = os.copy_file_range(fds[0], fds[1], n - done, position + done)
                    if not copied:
                        break
                    done += copied
            except OSError:  # a filesystem or kernel without it: write from the buffer
                fds = None
        _write_all(dst, buf[done:n])
        position += n
        left -= n


def _write_all(dst: BinaryIO, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:  # an unbuffered file may take less than it was given
        view = view[dst.write(view) or 0:]


def _plain_files(src: BinaryIO, dst: BinaryIO) -> tuple[int, int] | None:
    """The descriptors of src and dst when the kernel can copy between them, else None."""
    if not hasattr(os, "copy_file_range"):
        return None
    try:
        fds = src.fileno(), dst.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return None
    dst.flush()  # the kernel writes at the descriptor's position: nothing may wait in a buffer
    return fds


def write_weights(model: onnx.ModelProto, model_path: Path, blob: Path,
                  location: str) -> WrittenWeights:
    """Move every initializer over EXTERNAL_THRESHOLD bytes into `blob` (named `location` in the
    model), from the model's own raw_data or streamed from its external data file; smaller ones
    and tensors in node attributes are made inline. Rewrites `model` in place.

    The layout is fixed: big tensors page-aligned (so runtimes map them straight from the file),
    the rest 64-byte aligned (SIMD loads)."""
    import onnx
    from onnx import numpy_helper

    hasher = hashlib.sha256()
    external = inline = offset = 0
    # Unbuffered: copy_chunks has the kernel write at the descriptor's position.
    with open(blob, "wb", buffering=0) as out, ExitStack() as stack:
        sources: dict[Path, BinaryIO] = {}

        def source(ref: ExternalRef) -> BinaryIO:
            if ref.file not in sources:
                sources[ref.file] = stack.enter_context(open(ref.file, "rb"))
            fh = sources[ref.file]
            fh.seek(ref.offset)
            return fh

        for tensor, is_initializer in _tensors(model.graph):
            if tensor.data_type == onnx.TensorProto.STRING:
                inline += is_initializer
                continue
            ref = external_ref(tensor, model_path) if is_external(tensor) else None
            if ref is None:
                if not is_initializer:
                    continue
                raw = (tensor.raw_data if tensor.HasField("raw_data")
                       else numpy_helper.from_array(numpy_helper.to_array(tensor)).raw_data)
                size = len(raw)
            else:
                raw, size = None, ref.length
            if size <= EXTERNAL_THRESHOLD or not is_initializer:
                if ref is not None:
                    _make_inline(tensor, _read(source(ref), ref))
                inline += is_initializer
                continue
            align = 4096 if size >= 65536 else 64
            pad = b"\0" * ((-offset) % align)
            _write_all(out, pad)
            hasher.update(pad)
            offset += len(pad)
            if raw is None:
                assert ref is not None
                try:
                    copy_chunks(source(ref), out, size, hasher)
                except EOFError as exc:  # the file shrank after it was checked
                    raise EdgepackError(
                        f"{model_path}: tensor {tensor.name!r}: its external data file "
                        f"{ref.file.name} is truncated ({exc})"
                    ) from None
            else:
                _write_all(out, raw)
                hasher.update(raw)
            _point_at(tensor, location, offset, size)
            offset += size
            external += 1
    st = blob.stat()
    return WrittenWeights(external, inline, st.st_size, hasher.hexdigest(),
                          (st.st_size, st.st_mtime_ns, st.st_ino))


def _read(fh: BinaryIO, ref: ExternalRef) -> bytes:
    data = fh.read(ref.length)
    if len(data) != ref.length:
        raise EdgepackError(f"tensor {ref.tensor!r}: its external data file {ref.file} is "
                            "truncated")
    return data


def _make_inline(tensor: onnx.TensorProto, raw: bytes) -> None:
    import onnx

    del tensor.external_data[:]
    tensor.data_location = onnx.TensorProto.DEFAULT
    tensor.raw_data = raw


def _point_at(tensor: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    import onnx

    for fld in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data",
                "raw_data"):
        tensor.ClearField(fld)
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)),
                       ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    tensor.data_location = onnx.TensorProto.EXTERNAL


def _tensors(graph: onnx.GraphProto) -> Iterator[tuple[onnx.TensorProto, bool]]:
    """Every tensor of a graph and its subgraphs, with whether it is an initializer (the rest
    sit in node attributes: Constant values and the like). Initializers come in the order the
    packer has always laid them out: the graph's, then each subgraph's depth first."""
    import onnx

    for tensor in graph.initializer:
        yield tensor, True
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t, False
            elif attr.type == onnx.AttributeProto.TENSORS:
                for t in attr.tensors:
                    yield t, False
            elif attr.type == onnx.AttributeProto.GRAPH:
                yield from _tensors(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _tensors(g)
