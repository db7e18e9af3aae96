"""Built runners in the cache, and finding the one a device needs.

Layout (root: $EDGEPACK_CACHE_DIR, else $XDG_CACHE_HOME/edgepack, else ~/.cache/edgepack):

    runners/<target>/<onnxruntime version>/
        edgepack-runner          the program
        libonnxruntime.so[.1]    the library it was linked against (a real file, its soname)
        runner.json              RunnerBuild: versions, sha256 of each file, the files to push

Everything listed in `RunnerBuild.push_files` is a regular file, so a device gets a copy of the
directory and nothing else; `RunnerBuild.id` names the directory on the device and changes when
any pushed byte does.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgepack.errors import EdgepackError, ExitCode
from edgepack.fileio import cache_root
from edgepack.runner.targets import RUNNER_BINARY, TARGETS, Arch, elf_arch

BUILD_SCHEMA = "edgepack-runner-build/1"
BUILD_FILE = "runner.json"


def runners_root(root: Path | None = None) -> Path:
    return (root or cache_root()) / "runners"


def runner_dir(target: str, ort_version: str, root: Path | None = None) -> Path:
    return runners_root(root) / target / ort_version


def runner_sources() -> Path:
    """The runner's sources: EDGEPACK_RUNNER_SRC, else device_scripts/runner of the checkout
    edgepack runs from, else the copy an installed wheel carries (see setup.py)."""
    env = os.environ.get("EDGEPACK_RUNNER_SRC")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    checkout = here.parents[2] / "device_scripts" / "runner"
    if (checkout / "CMakeLists.txt").is_file():
        return checkout
    return here.parent / "sources"


def sources_sha256(src: Path | None = None) -> str | None:
    """A hash over the files that make the runner (not the fuzz target); None without sources."""
    src = src or runner_sources()
    if not (src / "CMakeLists.txt").is_file():
        return None
    h = hashlib.sha256()
    files = [src / "CMakeLists.txt", *sorted((src / "src").glob("*")),
             *sorted((src / "cmake").glob("*"))]
    for path in files:
        if path.is_file():
            h.update(path.relative_to(src).as_posix().encode() + b"\0")
            h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


@dataclass(frozen=True)
class RunnerFile:
    name: str
    sha256: str
    size: int
    executable: bool


@dataclass(frozen=True)
class RunnerBuild:
    """One built runner directory, as recorded in its runner.json."""

    target: str
    ort_version: str  # of the library in the directory: what the runner runs against
    runner_version: str
    directory: Path
    files: list[RunnerFile]  # everything to push, binary first
    headers_version: str  # onnxruntime version of the headers compiled against
    ort_api_version: int  # ORT_API_VERSION the runner asks the library for
    library_origin: str  # where the library came from
    source_sha256: str | None  # of device_scripts/runner when built
    built_at: str
    commands: list[list[str]] = field(default_factory=list)  # what built it
    requires_glibc: str | None = None  # Linux targets: the newest glibc symbol version used
    compiler: str | None = None  # "gcc", "zig" or "ndk"; None in builds that predate it

    @property
    def id(self) -> str:
        """Stable name for this exact build (a directory name on devices)."""
        h = hashlib.sha256()
        for f in sorted(self.files, key=lambda f: f.name):
            h.update(f"{f.name}\0{f.sha256}\0".encode())
        return f"{self.target}-ort{self.ort_version}-r{self.runner_version}-{h.hexdigest()[:12]}"

    @property
    def binary(self) -> Path:
        return self.directory / RUNNER_BINARY

    @property
    def arch(self) -> Arch | None:
        """What the binary is built for, from its ELF header; None when it is not ELF."""
        return elf_arch(self.binary)

    @property
    def push_files(self) -> list[str]:
        return [f.name for f in self.files]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def is_current(self, sources: str | None = None) -> bool:
        """Built from the sources of this checkout (True when they cannot be found)."""
        current = sources if sources is not None else sources_sha256()
        return current is None or self.source_sha256 == current

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": BUILD_SCHEMA,
            "id": self.id,
            "target": self.target,
            "ort_version": self.ort_version,
            "runner_version": self.runner_version,
            "headers_version": self.headers_version,
            "ort_api_version": self.ort_api_version,
            "library_origin": self.library_origin,
            "source_sha256": self.source_sha256,
            "built_at": self.built_at,
            "binary": RUNNER_BINARY,
            "push_files": self.push_files,
            "files": [
                {"name": f.name, "sha256": f.sha256, "size": f.size, "executable": f.executable}
                for f in self.files
            ],
            "commands": self.commands,
            "requires_glibc": self.requires_glibc,
            "compiler": self.compiler,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any], directory: Path) -> RunnerBuild:
        if doc.get("schema") != BUILD_SCHEMA:
            raise ValueError(f"schema is {doc.get('schema')!r}, expected {BUILD_SCHEMA!r}")
        return cls(
            target=str(doc["target"]),
            ort_version=str(doc["ort_version"]),
            runner_version=str(doc["runner_version"]),
            directory=Path(directory),
            files=[RunnerFile(str(f["name"]), str(f["sha256"]), int(f["size"]),
                              bool(f["executable"])) for f in doc["files"]],
            headers_version=str(doc["headers_version"]),
            ort_api_version=int(doc["ort_api_version"]),
            library_origin=str(doc["library_origin"]),
            source_sha256=doc.get("source_sha256"),
            built_at=str(doc["built_at"]),
            commands=[list(map(str, c)) for c in doc.get("commands", [])],
            requires_glibc=doc.get("requires_glibc"),
            compiler=doc.get("compiler"),
        )


def describe_files(directory: Path, names: list[str]) -> list[RunnerFile]:
    """RunnerFile entries for files in `directory`; each must be a regular file, not a link."""
    from edgepack.fileio import sha256_file

    out = []
    for name in names:
        path = directory / name
        if path.is_symlink() or not path.is_file():
            raise EdgepackError(f"{path} must be a regular file to be pushed", ExitCode.DEVICE)
        st = path.stat()
        out.append(RunnerFile(name, sha256_file(path), st.st_size, bool(st.st_mode & 0o111)))
    return out


def write_build(build: RunnerBuild) -> None:
    from edgepack.fileio import atomic_write_text

    atomic_write_text(build.directory / BUILD_FILE,
                      json.dumps(build.to_json(), indent=2, sort_keys=True) + "\n")


def load_build(directory: Path) -> RunnerBuild:
    path = Path(directory) / BUILD_FILE
    try:
        return RunnerBuild.from_json(json.loads(path.read_text()), Path(directory))
    except FileNotFoundError:
        raise EdgepackError(f"{directory} is not a built runner (no {BUILD_FILE})",
                            ExitCode.DEVICE) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise EdgepackError(f"{path} is unreadable ({exc}); rebuild with "
                            "`edgepack runner build`", ExitCode.DEVICE) from None


def check_build(build: RunnerBuild, hashes: bool = False) -> list[str]:
    """What is wrong with a built runner directory (empty when nothing is): files missing,
    replaced by links, changed in size, or (with hashes) in content."""
    from edgepack.fileio import sha256_file

    problems = []
    for f in build.files:
        path = build.directory / f.name
        if path.is_symlink() or not path.is_file():
            problems.append(f"{f.name} is missing or not a regular file")
        elif path.stat().st_size != f.size:
            problems.append(f"{f.name} changed size")
        elif hashes and sha256_file(path) != f.sha256:
            problems.append(f"{f.name} changed content")
    return problems


def list_builds(root: Path | None = None) -> list[RunnerBuild]:
    """Every readable runner build in the cache, by target then version."""
    builds = []
    base = runners_root(root)
    for path in sorted(base.glob(f"*/*/{BUILD_FILE}")):
        try:
            builds.append(load_build(path.parent))
        except EdgepackError:
            continue
    return builds


def version_key(version: str) -> tuple[int, ...]:
    """A version such as 1.32.0 or 2.31 as a key that sorts the way versions do."""
    return tuple(int(p) if p.isdigit() else -1 for p in version.split("."))


def default_ort_version(target: str) -> str | None:
    """The onnxruntime version a target's runner is built for when none is named: the host's
    Python package for Linux targets (so host and board run the same release); Android runners
    take their AAR's version, so there the newest built one is used."""
    if target in ("host", "linux-aarch64"):
        from edgepack.runner.fetch import host_library

        try:
            return host_library().version
        except EdgepackError:
            return None
    return None


def find_runner(target: str, ort_version: str | None = None,
                root: Path | None = None) -> RunnerBuild | None:
    """The usable built runner for `target`, or None.

    Usable: its runner.json reads, its files are all there, and it was built from this checkout's
    runner sources (a runner built from older sources is rebuilt, not silently used).
    """
    if target not in TARGETS:
        return None
    version = ort_version or default_ort_version(target)
    if version is not None:
        candidates = [runner_dir(target, version, root)]
    else:
        dirs = [p for p in (runners_root(root) / target).glob("*") if p.is_dir()]
        candidates = sorted(dirs, key=lambda p: version_key(p.name), reverse=True)
    sources = sources_sha256()
    for directory in candidates:
        if not (directory / BUILD_FILE).is_file():
            continue
        try:
            build = load_build(directory)
        except EdgepackError:
            continue
        if build.target == target and not check_build(build) and build.is_current(sources):
            return build
    return None


@contextlib.contextmanager
def cache_lock(name: str, root: Path | None = None) -> Iterator[None]:
    """An exclusive lock across processes (two test sessions building the same runner)."""
    locks = (root or cache_root()) / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def install_dir(staging: Path, final: Path) -> None:
    """Move a complete staging directory into place, replacing any previous build."""
    final.parent.mkdir(parents=True, exist_ok=True)
    old = final.with_name(f".old-{final.name}-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)
