"""A bundle on disk: loading it, and proving its files are the ones its manifest hashed.

Loading reads the manifest through `Manifest.from_json` (every path checked there), refuses
symbolic links anywhere below the bundle's root, and with `verify` checks every file's size
and sha256, skipping files whose size, mtime and inode are as they were when last verified.
"""

from __future__ import annotations

import contextlib
import json
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgepack.bundle.schema import MANIFEST, Manifest
from edgepack.errors import EdgepackError, short
from edgepack.fileio import atomic_write_text, cache_root, sha256_bytes, sha256_file


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
        manifest = Manifest.from_json(json.loads(raw))
    except EdgepackError as exc:
        raise EdgepackError(f"{manifest_path}: {exc.message}", exc.exit_code) from None
    except ValueError as exc:  # not JSON, or not UTF-8
        raise EdgepackError(f"{manifest_path}: malformed manifest ({short(exc)})") from None
    for entry in [*manifest.files, *manifest.host_files]:
        _check_on_disk(path, entry.path, must_exist=verify)
    for test_set in manifest.test_sets:
        _check_on_disk(path, test_set.dir, must_exist=verify)
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
    for entry in [*manifest.files, *manifest.host_files]:
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


def _check_on_disk(root: Path, rel: str, *, must_exist: bool) -> Path:
    """The file a manifest path names, refusing symlinks anywhere below the bundle's root: a
    link could lead a reader (or a push) anywhere on this machine."""
    current = root
    parts = rel.split("/")
    for n, part in enumerate(parts):
        current = current / part
        try:
            st = current.lstat()
        except FileNotFoundError:
            if must_exist:
                raise EdgepackError(f"{root}: bundle file {rel} is missing") from None
            return current
        if stat.S_ISLNK(st.st_mode):
            raise EdgepackError(f"{root}: bundle path {'/'.join(parts[:n + 1])} is a symbolic "
                                "link; a bundle holds plain files only")
        if n < len(parts) - 1 and not stat.S_ISDIR(st.st_mode):
            raise EdgepackError(f"{root}: bundle path {'/'.join(parts[:n + 1])} is not a "
                                "directory")
    return current


