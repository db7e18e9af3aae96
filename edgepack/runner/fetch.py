"""Getting ONNX Runtime's headers and libraries for the runner builds.

- C headers and Android libraries: an official onnxruntime-android AAR. `--ort-aar PATH` (or
  EDGEPACK_ORT_AAR) takes any official AAR. Without one, the AAR of the wanted version comes from
  Maven Central when this machine reaches it; when it does not (CI machines reach only PyPI,
  Debian and npm), from the npm package com.github.asus4.onnxruntime@0.4.9, which carries the
  official AAR 1.29.0, checked against pinned sha256s. The C API is backward compatible, so 1.29
  headers build a runner that runs on a newer library.
- The Linux x86_64 library: the installed onnxruntime Python package's own file, so the host
  runner and Python's onnxruntime are the same build.
- The Linux aarch64 library: the manylinux_2_28_aarch64 wheel of the same version, by
  `pip download`.

Downloads land in the cache (cache.cache_root()/downloads) once. Archives are never extracted
wholesale: each member taken out is checked (no absolute paths, no `..`, no links or devices, a
size cap) and written only inside its destination.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from edgepack.errors import EdgepackError, ExitCode
from edgepack.fileio import sha256_file
from edgepack.runner.targets import elf_arch

Log = Callable[[str], None]

NPM_PACKAGE = "com.github.asus4.onnxruntime@0.4.9"
NPM_TGZ_SHA256 = "e59788788818fdde1b2e522e766a21ba0f7d8391de55737abf81e32cc801785d"
NPM_AAR_MEMBER = "package/Plugins/Android/onnxruntime.aar"
NPM_AAR_SHA256 = "98cddbac92640b4a6af72a03c42e0491851f366d3da66bbaeb5dd66310946cf2"
NPM_AAR_VERSION = "1.29.0"

MAVEN_AAR_URL = (
    "https://repo1.maven.org/maven2/com/microsoft/onnxruntime/onnxruntime-android/"
    "{v}/onnxruntime-android-{v}.aar"
)
MAVEN_TIMEOUT_S = 10.0

# sha256 of AARs whose content we have checked; others are verified against Maven's .sha1.
KNOWN_AAR_SHA256: dict[str, str] = {NPM_AAR_VERSION: NPM_AAR_SHA256}
# sha256 of onnxruntime aarch64 wheels (pip also checks the index's own hash).
KNOWN_AARCH64_WHEEL_SHA256: dict[str, str] = {
    "onnxruntime-1.32.0-cp311-cp311-manylinux_2_28_aarch64.whl":
        "2303372a85299b6757b0e11e1cbf13e410ddf7e10c37f4b37e99d1c90e7daf7c",
}

AAR_SOURCES = ("auto", "maven", "npm")
MAX_MEMBER_BYTES = 1 << 30  # no single file we need is anywhere near 1 GiB

ELF_MACHINES = {62: "x86_64", 183: "aarch64", 40: "arm", 3: "x86"}


def _quiet(_: str) -> None:
    pass


# ------------------------------------------------------------------------------- hashing




def check_sha256(path: Path, expected: str, what: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise EdgepackError(
            f"{what} ({path}) has sha256 {actual}, expected {expected}: the download is corrupt "
            "or not the pinned file; delete it and retry",
            ExitCode.DEVICE,
        )


# ------------------------------------------------------------------------ safe extraction


def safe_member_path(dest: Path, member: str) -> Path:
    """Where archive member `member` goes under `dest`; refuses anything that would escape it."""
    pure = PurePosixPath(member)
    if (not member or "\x00" in member or "\\" in member or pure.is_absolute()
            or ".." in pure.parts or not pure.parts):
        raise EdgepackError(f"refusing archive member {member!r}: its path would leave the "
                            "destination", ExitCode.DEVICE)
    root = Path(dest).resolve()
    # resolve() also follows links already present under dest.
    target = (root / Path(*pure.parts)).resolve()
    if root not in target.parents:
        raise EdgepackError(f"refusing archive member {member!r}: its path would leave the "
                            "destination", ExitCode.DEVICE)
    return target


def _copy_capped(src: BinaryIO, dst_path: Path, limit: int, member: str) -> None:
    dst_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst_path.with_name(f".{dst_path.name}.part-{os.getpid()}")
    written = 0
    try:
        with open(tmp, "wb") as out:
            while chunk := src.read(1 << 20):
                written += len(chunk)
                if written > limit:
                    raise EdgepackError(f"refusing archive member {member!r}: larger than "
                                        f"{limit} bytes", ExitCode.DEVICE)
                out.write(chunk)
        os.replace(tmp, dst_path)
    finally:
        if tmp.exists():
            tmp.unlink()


def extract_zip_members(
    archive: Path, dest: Path, want: Callable[[str], bool], limit: int = MAX_MEMBER_BYTES
) -> list[Path]:
    """Extract the regular-file members of a zip for which `want(name)` is true."""
    written: list[Path] = []
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if info.is_dir() or not want(info.filename):
                    continue
                # Unix type bits, when the archiver set them; zero means a plain file.
                kind = stat.S_IFMT(info.external_attr >> 16)
                if kind and kind != stat.S_IFREG:
                    raise EdgepackError(f"refusing archive member {info.filename!r} of {archive}: "
                                        "not a regular file", ExitCode.DEVICE)
                if info.file_size > limit:
                    raise EdgepackError(f"refusing archive member {info.filename!r} of {archive}:"
                                        f" {info.file_size} bytes", ExitCode.DEVICE)
                target = safe_member_path(dest, info.filename)
                with zf.open(info) as src:
                    _copy_capped(src, target, limit, info.filename)
                written.append(target)
    except zipfile.BadZipFile as exc:
        raise EdgepackError(f"{archive} is not a valid zip archive ({exc})",
                            ExitCode.BAD_INPUT) from None
    return written


def extract_tar_member(archive: Path, member: str, target: Path,
                       limit: int = MAX_MEMBER_BYTES) -> Path:
    """Extract one regular-file member of a (compressed) tar to the file `target`.

    The caller names both the member and where it goes, so no path from the archive decides
    where bytes land; links, devices and oversized members are refused.
    """
    try:
        with tarfile.open(archive, "r:*") as tf:
            for info in tf:
                if info.name != member:
                    continue
                if not info.isreg():
                    raise EdgepackError(f"refusing {member!r} in {archive}: not a regular file",
                                        ExitCode.DEVICE)
                if info.size > limit:
                    raise EdgepackError(f"refusing {member!r} in {archive}: {info.size} bytes",
                                        ExitCode.DEVICE)
                src = tf.extractfile(info)
                if src is None:
                    break
                with src:
                    _copy_capped(src, target, limit, member)
                return target
    except tarfile.TarError as exc:
        raise EdgepackError(f"{archive} is not a valid tar archive ({exc})",
                            ExitCode.DEVICE) from None
    raise EdgepackError(f"{archive} holds no {member}", ExitCode.DEVICE)


# ------------------------------------------------------------------------------ the AAR


@dataclass(frozen=True)
class OrtAar:
    path: Path
    version: str  # onnxruntime version of the AAR's headers and libraries
    source: str  # "--ort-aar", "maven" or "npm"
    sha256: str


@dataclass(frozen=True)
class OrtHeaders:
    include_dir: Path
    api_version: int  # ORT_API_VERSION of onnxruntime_c_api.h
    ort_version: str  # of the AAR they came from


def downloads_dir(cache_root: Path) -> Path:
    return Path(cache_root) / "downloads"


def resolve_aar(
    cache_root: Path,
    *,
    version: str | None,
    explicit: Path | None = None,
    source: str | None = None,
    log: Log = _quiet,
) -> OrtAar:
    """Find or fetch an onnxruntime-android AAR.

    Order: an explicit path (--ort-aar, EDGEPACK_ORT_AAR); the cached AAR of `version`; Maven
    Central for `version` if reachable; the cached npm AAR; the npm package. `source` (or
    EDGEPACK_AAR_SOURCE) forces "maven" or "npm".
    """
    explicit = explicit or (Path(os.environ["EDGEPACK_ORT_AAR"])
                            if os.environ.get("EDGEPACK_ORT_AAR") else None)
    if explicit is not None:
        return inspect_aar(Path(explicit), source="--ort-aar")
    source = source or os.environ.get("EDGEPACK_AAR_SOURCE") or "auto"
    if source not in AAR_SOURCES:
        raise EdgepackError(f"EDGEPACK_AAR_SOURCE must be one of {', '.join(AAR_SOURCES)}, "
                            f"not {source!r}", ExitCode.BAD_INPUT)
    aar_dir = downloads_dir(cache_root) / "aar"
    maven_reason = None
    if source in ("auto", "maven") and version:
        cached = aar_dir / f"onnxruntime-android-{version}.maven.aar"
        if cached.is_file():
            return OrtAar(cached, version, "maven", sha256_file(cached))
        try:
            return _fetch_maven(aar_dir, version, log)
        except _Unreachable as exc:
            maven_reason = str(exc)
            if source == "maven":
                raise EdgepackError(f"cannot fetch the onnxruntime-android {version} AAR from "
                                    f"Maven Central: {maven_reason}", ExitCode.DEVICE) from None
            log(f"no AAR from Maven Central ({maven_reason}); using the ONNX Runtime "
                f"{NPM_AAR_VERSION} AAR from npm ({NPM_PACKAGE})")
    return _fetch_npm(aar_dir, log, maven_reason)


def inspect_aar(path: Path, source: str) -> OrtAar:
    """Check that `path` is an onnxruntime AAR and tell its version."""
    if not path.is_file():
        raise EdgepackError(f"--ort-aar {path}: no such file", ExitCode.BAD_INPUT)
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if "headers/onnxruntime_c_api.h" not in names:
                raise EdgepackError(f"{path} is not an onnxruntime-android AAR (it has no "
                                    "headers/onnxruntime_c_api.h)", ExitCode.BAD_INPUT)
            header = zf.read("headers/onnxruntime_c_api.h").decode("utf-8", "replace")
            api = _api_version(header, path)
            version = _version_from_name(path.name, api)
            if version is None:
                libs = sorted(n for n in names if n.endswith("/libonnxruntime.so"))
                if libs:
                    with zf.open(libs[0]) as fh:
                        version = _version_in_binary(fh, api)
    except zipfile.BadZipFile:
        raise EdgepackError(f"{path} is not an AAR (not a zip archive)",
                            ExitCode.BAD_INPUT) from None
    return OrtAar(path, version or f"1.{api}.0", source, sha256_file(path))


def _api_version(header: str, where: Path | str) -> int:
    m = re.search(r"^#define\s+ORT_API_VERSION\s+(\d+)", header, re.M)
    if not m:
        raise EdgepackError(f"{where}: onnxruntime_c_api.h defines no ORT_API_VERSION",
                            ExitCode.BAD_INPUT)
    return int(m.group(1))


def _version_from_name(name: str, api: int) -> str | None:
    m = re.search(r"(\d+\.\d+\.\d+)", name)
    if m and m.group(1).split(".")[1] == str(api):
        return m.group(1)
    return None


def _version_in_binary(fh: BinaryIO, api: int) -> str | None:
    # The library carries its version as a NUL-terminated string; its minor equals the API level.
    pattern = re.compile(rb"\x00(1\.%d\.\d{1,3})\x00" % api)
    tail = b""
    while chunk := fh.read(1 << 22):
        m = pattern.search(tail + chunk)
        if m:
            return m.group(1).decode()
        tail = chunk[-32:]
    return None


class _Unreachable(Exception):
    pass


def _fetch_maven(aar_dir: Path, version: str, log: Log) -> OrtAar:
    import urllib.error
    import urllib.request

    url = MAVEN_AAR_URL.format(v=version)
    target = aar_dir / f"onnxruntime-android-{version}.maven.aar"
    aar_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part-{os.getpid()}")
    try:
        with urllib.request.urlopen(url + ".sha1", timeout=MAVEN_TIMEOUT_S) as resp:
            expected_sha1 = resp.read(200).decode("ascii", "replace").split()[0].strip()
        log(f"downloading {url}")
        sha1 = hashlib.sha1()
        with urllib.request.urlopen(url, timeout=MAVEN_TIMEOUT_S) as resp, open(tmp, "wb") as out:
            while chunk := resp.read(1 << 20):
                sha1.update(chunk)
                out.write(chunk)
    except urllib.error.HTTPError as exc:
        tmp.unlink(missing_ok=True)
        raise _Unreachable(f"HTTP {exc.code} for {url}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        tmp.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise _Unreachable(f"{reason}") from None
    if sha1.hexdigest() != expected_sha1:
        tmp.unlink(missing_ok=True)
        raise EdgepackError(f"{url}: sha1 {sha1.hexdigest()} differs from Maven's published "
                            f"{expected_sha1}", ExitCode.DEVICE)
    if version in KNOWN_AAR_SHA256:
        check_sha256(tmp, KNOWN_AAR_SHA256[version], f"onnxruntime-android {version} AAR")
    os.replace(tmp, target)
    return OrtAar(target, version, "maven", sha256_file(target))


def _fetch_npm(aar_dir: Path, log: Log, maven_reason: str | None) -> OrtAar:
    target = aar_dir / f"onnxruntime-android-{NPM_AAR_VERSION}.npm.aar"
    if target.is_file():
        check_sha256(target, NPM_AAR_SHA256, f"cached AAR from {NPM_PACKAGE}")
        return OrtAar(target, NPM_AAR_VERSION, "npm", NPM_AAR_SHA256)
    npm = shutil.which("npm")
    if npm is None:
        hint = f" (Maven Central: {maven_reason})" if maven_reason else ""
        raise EdgepackError(
            "no onnxruntime-android AAR: npm is not installed and no AAR was given" + hint
            + "; install npm, or download the official AAR and pass --ort-aar PATH",
            ExitCode.DEVICE,
        )
    aar_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=aar_dir, prefix=".npm-") as tmp:
        log(f"fetching {NPM_PACKAGE} from the npm registry (150 MB, once)")
        # cwd=tmp: older npm versions ignore --pack-destination and write to the cwd.
        proc = subprocess.run(
            [npm, "pack", NPM_PACKAGE, "--silent", "--pack-destination", tmp],
            cwd=tmp, capture_output=True, text=True, timeout=1800,
        )
        tgzs = sorted(Path(tmp).glob("*.tgz"))
        if proc.returncode != 0 or not tgzs:
            detail = " ".join((proc.stderr or proc.stdout).split())[-300:]
            raise EdgepackError(
                f"`npm pack {NPM_PACKAGE}` failed ({detail or 'no output'}); with no network, "
                "download the official onnxruntime-android AAR elsewhere and pass --ort-aar PATH",
                ExitCode.DEVICE,
            )
        tgz = tgzs[0]
        check_sha256(tgz, NPM_TGZ_SHA256, f"npm package {NPM_PACKAGE}")
        part = Path(tmp) / "onnxruntime.aar"
        extract_tar_member(tgz, NPM_AAR_MEMBER, part)
        check_sha256(part, NPM_AAR_SHA256, f"the AAR inside {NPM_PACKAGE}")
        os.replace(part, target)
    return OrtAar(target, NPM_AAR_VERSION, "npm", NPM_AAR_SHA256)


def extract_headers(aar: OrtAar, cache_root: Path) -> OrtHeaders:
    """The AAR's headers/ in the cache, extracted once per AAR content."""
    dest = Path(cache_root) / "ort" / f"aar-{aar.version}-{aar.sha256[:12]}"
    include = dest / "headers"
    header = include / "onnxruntime_c_api.h"
    if not header.is_file():
        extract_zip_members(
            aar.path, dest,
            lambda n: n.startswith("headers/") and n.endswith((".h", ".inc")),
        )
    if not header.is_file():
        raise EdgepackError(f"{aar.path} has no headers/onnxruntime_c_api.h", ExitCode.BAD_INPUT)
    api = _api_version(header.read_text("utf-8", "replace"), header)
    return OrtHeaders(include, api, aar.version)


def extract_android_library(aar: OrtAar, abi: str, cache_root: Path) -> Path:
    """The AAR's jni/<abi>/libonnxruntime.so, extracted once into the cache."""
    dest = Path(cache_root) / "ort" / f"aar-{aar.version}-{aar.sha256[:12]}"
    member = f"jni/{abi}/libonnxruntime.so"
    lib = dest / member
    if not lib.is_file():
        extract_zip_members(aar.path, dest, lambda n: n == member)
    if not lib.is_file():
        raise EdgepackError(f"{aar.path} has no {member}: not an AAR with the {abi} ABI",
                            ExitCode.BAD_INPUT)
    return lib


# ------------------------------------------------------------------------ Linux libraries


@dataclass(frozen=True)
class OrtLibrary:
    path: Path  # libonnxruntime.so.<version>
    version: str
    machine: str  # ELF machine: x86_64, aarch64


def elf_machine(path: Path) -> str | None:
    """The ELF machine of a file by its `uname -m` name (x86_64, aarch64), or None."""
    arch = elf_arch(path)
    if arch is None:
        return None
    return ELF_MACHINES.get(arch.machine, f"elf-machine-{arch.machine}")


def host_library() -> OrtLibrary:
    """The onnxruntime Python package's own shared library (without importing onnxruntime)."""
    import importlib.util

    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        raise EdgepackError("the onnxruntime Python package is not installed: "
                            "`pip install onnxruntime` builds the host runner against it",
                            ExitCode.BAD_INPUT)
    capi = Path(next(iter(spec.submodule_search_locations))) / "capi"
    libs = sorted(p for p in capi.glob("libonnxruntime.so.*")
                  if re.fullmatch(r"libonnxruntime\.so\.\d+\.\d+\.\d+", p.name))
    if not libs:
        raise EdgepackError(f"{capi} holds no libonnxruntime.so.<version>: this onnxruntime "
                            "package does not ship the C library", ExitCode.BAD_INPUT)
    lib = libs[-1]
    version = lib.name.removeprefix("libonnxruntime.so.")
    return OrtLibrary(lib, version, elf_machine(lib) or "unknown")


def aarch64_library(version: str, cache_root: Path, log: Log = _quiet) -> OrtLibrary:
    """libonnxruntime.so.<version> from the manylinux_2_28_aarch64 wheel, via pip download."""
    dest = Path(cache_root) / "ort" / f"linux-aarch64-{version}"
    lib = dest / f"libonnxruntime.so.{version}"
    if lib.is_file() and elf_machine(lib) == "aarch64":
        return OrtLibrary(lib, version, "aarch64")
    wheels = downloads_dir(cache_root) / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    pyver = f"{sys.version_info.major}{sys.version_info.minor}"
    pattern = f"onnxruntime-{version}-cp{pyver}-*manylinux*aarch64.whl"
    found = sorted(wheels.glob(pattern))
    if not found:
        log(f"downloading the onnxruntime {version} manylinux_2_28_aarch64 wheel from PyPI")
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--platform", "manylinux_2_28_aarch64", "--python-version", pyver,
            f"onnxruntime=={version}", "-d", str(wheels), "--quiet",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        found = sorted(wheels.glob(pattern))
        if proc.returncode != 0 or not found:
            detail = " ".join((proc.stderr or proc.stdout).split())[-300:]
            raise EdgepackError(f"pip could not download the onnxruntime {version} aarch64 "
                                f"wheel ({detail or 'no output'})", ExitCode.DEVICE)
    wheel = found[-1]
    if wheel.name in KNOWN_AARCH64_WHEEL_SHA256:
        check_sha256(wheel, KNOWN_AARCH64_WHEEL_SHA256[wheel.name], "onnxruntime aarch64 wheel")
    member = f"onnxruntime/capi/libonnxruntime.so.{version}"
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".x-") as tmp:
        extract_zip_members(wheel, Path(tmp), lambda n: n == member)
        got = Path(tmp) / member
        if not got.is_file():
            raise EdgepackError(f"{wheel.name} holds no {member}", ExitCode.DEVICE)
        if elf_machine(got) != "aarch64":
            raise EdgepackError(f"{member} in {wheel.name} is not an aarch64 library",
                                ExitCode.DEVICE)
        os.replace(got, lib)
    return OrtLibrary(lib, version, "aarch64")


def host_library_version() -> str | None:
    """Version of the installed onnxruntime package's library, or None without the package."""
    try:
        return host_library().version
    except EdgepackError:
        return None
