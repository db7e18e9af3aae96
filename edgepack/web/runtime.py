"""The JavaScript runtimes the browser runs models with, pinned, checked and cached.

Each runtime is one npm package at a pinned version whose tarball's sha256 is pinned too. It is
fetched once with `npm pack` (npm is the only registry these machines reach), kept under
cache_root()/web/downloads, and extracted member by member, with runner/fetch.py's checks (no
absolute paths, no `..`, no links or devices, a size cap), into cache_root()/web/<name>-<version>/
under a temporary name that is renamed only when complete. Once cached nothing is downloaded
again; a cached tarball whose sha256 is not the pinned one is refused, not trusted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgepack.errors import EdgepackError, ExitCode
from edgepack.fileio import cache_root
from edgepack.runner.fetch import (
    MAX_MEMBER_BYTES,
    _copy_capped,
    check_sha256,
    safe_member_path,
)

Log = Callable[[str], None]

ORT_WEB = "onnxruntime-web"
ONNXJS = "onnxjs"


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    sha256: str  # of the npm tarball

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def tarball_name(self) -> str:
        return f"{self.name}-{self.version}.tgz"


PINS: dict[str, Pin] = {
    ORT_WEB: Pin(ORT_WEB, "1.30.0",
                 "d2228df7e4616bc3348bf504ee888f3bec43789a273f0a63f3e68d203ce3bf71"),
    ONNXJS: Pin(ONNXJS, "0.1.8",
                "85e66ba1e48d411828d4170dad9f6c7a1906c050c8b471bec882315ff8d0cd3b"),
}

# Written last into an extracted tree: a tree without it (a crash mid-extraction cannot leave
# one, as the tree is renamed into place whole, but an older layout could) is not trusted.
_COMPLETE = ".edgepack-complete"


@dataclass(frozen=True)
class WebRuntime:
    name: str  # "onnxruntime-web" or "onnxjs"
    version: str
    root: Path  # the extracted npm package directory (.../package)


def _quiet(_: str) -> None:
    pass


def web_dir() -> Path:
    return cache_root() / "web"


def web_runtime(name: str, log: Log = _quiet) -> WebRuntime:
    """The pinned runtime `name`, from the cache, fetched and extracted first if it is not
    there. EdgepackError(DEVICE) with one line when it cannot be had."""
    pin = PINS.get(name)
    if pin is None:
        raise EdgepackError(f"no web runtime {name!r}: edgepack knows {', '.join(PINS)}",
                            ExitCode.BAD_INPUT)
    dest = web_dir() / f"{pin.name}-{pin.version}"
    if _complete(dest, pin):
        return WebRuntime(pin.name, pin.version, dest / "package")
    tgz = _tarball(pin, log)
    log(f"extracting {pin.tarball_name} into {dest}")
    _extract(tgz, dest, pin)
    return WebRuntime(pin.name, pin.version, dest / "package")


def _complete(dest: Path, pin: Pin) -> bool:
    marker = dest / _COMPLETE
    return marker.is_file() and marker.read_text().strip() == pin.sha256


def fetch_all(log: Log = _quiet) -> list[WebRuntime]:
    """Fetch every pinned runtime ahead of time, so that no run needs the network."""
    return [web_runtime(name, log) for name in PINS]


def _tarball(pin: Pin, log: Log) -> Path:
    downloads = web_dir() / "downloads"
    target = downloads / pin.tarball_name
    if target.is_file():
        check_sha256(target, pin.sha256, f"cached npm package {pin.spec}")
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise EdgepackError(f"cannot fetch {pin.spec} for the browser: npm is not installed "
                            "(apt-get install npm, or run `edgepack` once where it is)",
                            ExitCode.DEVICE)
    downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=downloads, prefix=".npm-") as tmp:
        log(f"fetching {pin.spec} from the npm registry (once)")
        # cwd=tmp: older npm versions ignore --pack-destination and write to the cwd.
        try:
            proc = subprocess.run(
                [npm, "pack", pin.spec, "--silent", "--pack-destination", tmp],
                cwd=tmp, capture_output=True, text=True, timeout=1800,
            )
        except subprocess.TimeoutExpired:
            raise EdgepackError(f"`npm pack {pin.spec}` did not finish in 30 minutes",
                                ExitCode.DEVICE) from None
        tgzs = sorted(Path(tmp).glob("*.tgz"))
        if proc.returncode != 0 or not tgzs:
            detail = " ".join((proc.stderr or proc.stdout).split())[-300:]
            raise EdgepackError(f"`npm pack {pin.spec}` failed ({detail or 'no output'}): the "
                                "browser runtime needs the npm registry once", ExitCode.DEVICE)
        check_sha256(tgzs[0], pin.sha256, f"npm package {pin.spec}")
        os.replace(tgzs[0], target)
    return target


def _extract(tgz: Path, dest: Path, pin: Pin) -> None:
    """Every regular file of the tarball into `dest`, each member checked; whole or not at all."""
    # The pin is checked again here: the tarball may have changed since _tarball looked at it.
    check_sha256(tgz, pin.sha256, f"npm package {pin.spec}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
    try:
        extract_all(tgz, tmp)
        (tmp / _COMPLETE).write_text(pin.sha256 + "\n")
        if dest.exists() and not _complete(dest, pin):
            shutil.rmtree(dest)
        try:
            os.replace(tmp, dest)
        except OSError:
            # Another edgepack finished the same extraction first: theirs is as good as ours.
            if not _complete(dest, pin):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def extract_all(archive: Path, dest: Path, limit: int = MAX_MEMBER_BYTES) -> list[Path]:
    """Extract every regular-file member of a (compressed) tar into `dest` in one pass.

    Each member's path goes through fetch.safe_member_path and its bytes through the same capped
    copy as fetch.extract_tar_member (which reopens the archive per member: too slow for the
    500 members of an npm package). Directories are implied; links, devices and fifos refused.
    """
    written: list[Path] = []
    try:
        with tarfile.open(archive, "r:*") as tf:
            for info in tf:
                if info.isdir():
                    safe_member_path(dest, info.name.rstrip("/") or ".")
                    continue
                target = safe_member_path(dest, info.name)
                if not info.isreg():
                    raise EdgepackError(f"refusing {info.name!r} in {archive}: not a regular "
                                        "file", ExitCode.DEVICE)
                if info.size > limit:
                    raise EdgepackError(f"refusing {info.name!r} in {archive}: {info.size} "
                                        "bytes", ExitCode.DEVICE)
                src = tf.extractfile(info)
                if src is None:
                    continue
                with src:
                    _copy_capped(src, target, limit, info.name)
                written.append(target)
    except tarfile.TarError as exc:
        raise EdgepackError(f"{archive} is not a valid tar archive ({exc})",
                            ExitCode.DEVICE) from None
    return written
