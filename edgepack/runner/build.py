"""Building edgepack-runner for a target into the cache (`edgepack runner build`).

A build is planned (fetch the headers and the library, write down the cmake commands) and then
executed under a lock: cmake configures and builds in <cache>/build/<target>/<version>/, and the
runner directory is assembled beside its final place and moved in whole, so a reader never sees
a half-built runner.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from edgepack.errors import EdgepackError, ExitCode
from edgepack.fileio import sha256_file
from edgepack.runner import cache, fetch
from edgepack.runner.targets import (
    COMPILERS,
    DEFAULT_ANDROID_PLATFORM,
    RUNNER_BINARY,
    RUNNER_VERSION,
    CMakeInvocation,
    Target,
    android_toolchain_file,
    cmake_invocation,
    compilers_needed,
    get_target,
    zig_wrapper,
)

Log = Callable[[str], None]

BUILD_TIMEOUT_S = 900.0


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class BuildPlan:
    """Everything a build needs, decided before anything is compiled."""

    target: Target
    ort_version: str
    library: Path  # the onnxruntime library to link and ship
    library_origin: str
    headers: fetch.OrtHeaders
    work_dir: Path  # <cache>/build/<target>/<version>: cmake's build tree and the staged library
    final_dir: Path
    invocation: CMakeInvocation
    source_dir: Path
    compiler: str  # "gcc", "zig", or "ndk" for Android
    zig: Path | None = None

    @property
    def build_tree(self) -> Path:
        return build_tree(self.work_dir, self.compiler)

    @property
    def zig_cc(self) -> Path:
        return zig_cc_path(self.work_dir)

    @property
    def staged_library(self) -> Path:
        return self.work_dir / "lib" / self.target.library_name


def resolve_ndk(ndk: Path | None) -> Path:
    for candidate in (ndk, os.environ.get("ANDROID_NDK_HOME"), os.environ.get("ANDROID_NDK_ROOT"),
                      os.environ.get("ANDROID_NDK")):
        if candidate:
            path = Path(candidate).expanduser()
            if not android_toolchain_file(path).is_file():
                raise EdgepackError(
                    f"{path} is not an Android NDK (no build/cmake/android.toolchain.cmake)",
                    ExitCode.BAD_INPUT,
                )
            return path
    raise EdgepackError(
        "building an Android runner needs the Android NDK: pass --ndk PATH or set "
        "ANDROID_NDK_HOME (r23 or newer)",
        ExitCode.BAD_INPUT,
    )


def build_tree(work_dir: Path, compiler: str) -> Path:
    # One tree per compiler: cmake keeps the compiler it first found in its cache.
    return work_dir / ("cmake-zig" if compiler == "zig" else "cmake")


def zig_cc_path(work_dir: Path) -> Path:
    return work_dir / "zig-cc"  # the compiler wrapper cmake is given (targets.zig_wrapper)


def find_zig() -> Path:
    """zig from the ziglang package on PyPI (`pip install ziglang`), else one on PATH."""
    try:
        import ziglang  # type: ignore[import-not-found]

        bundled = Path(ziglang.__file__).parent / "zig"
        if bundled.is_file():
            return bundled
    except ImportError:
        pass
    found = shutil.which("zig")
    if found:
        return Path(found)
    raise EdgepackError("--compiler zig needs zig: pip install ziglang (or put zig on PATH)",
                        ExitCode.BAD_INPUT)


def resolve_compiler(target: Target, compiler: str | None) -> str:
    if target.is_android:
        if compiler not in (None, "ndk"):
            raise EdgepackError(f"{target.name} is built with the Android NDK's clang; "
                                "--compiler applies to the Linux targets", ExitCode.BAD_INPUT)
        return "ndk"
    if compiler is None:
        return "gcc"
    if compiler not in COMPILERS:
        raise EdgepackError(f"unknown --compiler {compiler!r}: choose {' or '.join(COMPILERS)}",
                            ExitCode.BAD_INPUT)
    return compiler


# Debian's packages for what a gcc build runs. A compiler's package alone is not enough: its C
# library (crt1.o, libc.so) is only a Recommends of gcc and of the cross gcc, which
# `apt-get install --no-install-recommends` leaves out.
_TOOL_PACKAGES = {"cmake": "cmake", "gcc": "gcc", "aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu"}
_GCC = {"host": "gcc", "linux-aarch64": "aarch64-linux-gnu-gcc"}  # as targets.cmake_invocation
_LIBC_PACKAGES = {"host": "libc6-dev", "linux-aarch64": "libc6-dev-arm64-cross"}
_PROBE_C = "int main(void) { return 0; }\n"


def check_toolchain(target: Target, compiler: str) -> None:
    """What a build runs is on PATH, and gcc links a program for the target: without its C
    library, cmake's compiler check fails with an ld error that names no package, so the
    check is made here first and says what to install."""
    missing = [tool for tool in compilers_needed(target, compiler) if shutil.which(tool) is None]
    gcc = _GCC.get(target.name) if compiler == "gcc" else None
    if missing:
        packages = [_TOOL_PACKAGES.get(tool, tool) for tool in missing]
        if gcc in missing:
            packages.append(_LIBC_PACKAGES[target.name])
        raise EdgepackError(
            f"building {target.name} needs {', '.join(missing)} on PATH: "
            f"apt-get install {' '.join(packages)}",
            ExitCode.BAD_INPUT,
        )
    if gcc is None:
        return
    with tempfile.TemporaryDirectory(prefix="edgepack-cc-") as tmp:
        source = Path(tmp) / "probe.c"
        source.write_text(_PROBE_C)
        try:
            proc = subprocess.run([gcc, str(source), "-o", str(Path(tmp) / "probe")],
                                  capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EdgepackError(f"{gcc} does not run: {exc}", ExitCode.BAD_INPUT) from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
        reason = next((ln.split(": ", 1)[-1] for ln in lines if "cannot find" in ln),
                      lines[-1] if lines else f"exit code {proc.returncode}")
        raise EdgepackError(
            f"{gcc} cannot link a program for {target.name} ({reason}): its C library is "
            f"missing: apt-get install {_LIBC_PACKAGES[target.name]}",
            ExitCode.BAD_INPUT,
        )


def _minor(version: str) -> int:
    try:
        return int(version.split(".")[1])
    except (IndexError, ValueError):
        return -1


def plan_build(
    target_name: str,
    *,
    ort_aar: Path | None = None,
    ndk: Path | None = None,
    android_platform: str = DEFAULT_ANDROID_PLATFORM,
    root: Path | None = None,
    log: Log = _quiet,
    compiler: str | None = None,
) -> BuildPlan:
    target = get_target(target_name)
    compiler = resolve_compiler(target, compiler)
    root = root or cache.cache_root()
    source_dir = cache.runner_sources()
    if not (source_dir / "CMakeLists.txt").is_file():
        raise EdgepackError(f"the runner's sources are not at {source_dir}: reinstall edgepack "
                            "from a wheel or a checkout, or set EDGEPACK_RUNNER_SRC to a "
                            "device_scripts/runner directory", ExitCode.BAD_INPUT)
    ndk_path = resolve_ndk(ndk) if target.is_android else None
    zig = find_zig() if compiler == "zig" else None
    check_toolchain(target, compiler)

    if target.library_source == "aar":
        aar = fetch.resolve_aar(root, version=fetch.host_library_version(), explicit=ort_aar,
                                log=log)
        library = fetch.extract_android_library(aar, target.android_abi or "", root)
        version = aar.version
        origin = f"onnxruntime-android {aar.version} AAR ({aar.source}: {aar.path.name})"
        headers = fetch.extract_headers(aar, root)
    else:
        if target.library_source == "wheel":
            lib = fetch.host_library()
            origin = f"onnxruntime Python package ({lib.path})"
        else:
            version = fetch.host_library_version()
            if version is None:
                raise EdgepackError("the linux-aarch64 runner is built for the host's onnxruntime "
                                    "version, but the onnxruntime package is not installed",
                                    ExitCode.BAD_INPUT)
            lib = fetch.aarch64_library(version, root, log)
            origin = f"onnxruntime {version} manylinux_2_28_aarch64 wheel (PyPI)"
        library, version = lib.path, lib.version
        aar = fetch.resolve_aar(root, version=version, explicit=ort_aar, log=log)
        headers = fetch.extract_headers(aar, root)
        if headers.api_version > _minor(version):
            raise EdgepackError(
                f"the headers of onnxruntime {headers.ort_version} (C API {headers.api_version}) "
                f"are newer than the library {version}: pass an AAR of {version} or older",
                ExitCode.BAD_INPUT,
            )

    work_dir = root / "build" / target.name / version
    link_name = "libonnxruntime.so"
    invocation = cmake_invocation(
        target,
        source_dir=source_dir,
        build_dir=build_tree(work_dir, compiler),
        include_dir=headers.include_dir,
        library=work_dir / "lib" / link_name,
        ndk=ndk_path,
        android_platform=android_platform,
        jobs=os.cpu_count() or 1,
        zig_cc=zig_cc_path(work_dir) if zig else None,
    )
    return BuildPlan(target, version, library, origin, headers, work_dir,
                     cache.runner_dir(target.name, version, root), invocation, source_dir,
                     compiler, zig)


def _run(cmd: list[str], what: str) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise EdgepackError(f"{what} timed out after {BUILD_TIMEOUT_S:.0f} s",
                            ExitCode.DEVICE) from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stdout + "\n" + proc.stderr).splitlines() if ln.strip()]
        errors = [ln for ln in lines if "error" in ln.lower()] or lines
        raise EdgepackError(f"{what} failed: {' | '.join(errors[-4:])}", ExitCode.DEVICE)


def stage_library(plan: BuildPlan) -> None:
    """Copy the library into the work dir under its soname, plus a libonnxruntime.so link for the
    linker; the wheel's own directory (site-packages) is never touched."""
    lib_dir = plan.work_dir / "lib"
    lib_dir.mkdir(parents=True, exist_ok=True)
    staged = plan.staged_library
    if not staged.is_file() or sha256_file(staged) != sha256_file(plan.library):
        tmp = staged.with_name(f".{staged.name}.tmp-{os.getpid()}")
        shutil.copyfile(plan.library, tmp)
        os.replace(tmp, staged)
    link = lib_dir / "libonnxruntime.so"
    if staged.name != link.name:
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(staged.name)


def assemble(plan: BuildPlan, binary: Path, staging: Path) -> cache.RunnerBuild:
    """Lay out a runner directory in `staging`: the binary, the library as a real file under its
    soname, and runner.json."""
    staging.mkdir(parents=True, exist_ok=True)
    os.chmod(staging, 0o755)  # mkdtemp makes it private; the cache is readable like any other
    shutil.copyfile(binary, staging / RUNNER_BINARY)
    os.chmod(staging / RUNNER_BINARY, 0o755)
    shutil.copyfile(plan.staged_library, staging / plan.target.library_name)
    os.chmod(staging / plan.target.library_name, 0o644)
    names = [RUNNER_BINARY, plan.target.library_name]
    build = cache.RunnerBuild(
        target=plan.target.name,
        ort_version=plan.ort_version,
        runner_version=RUNNER_VERSION,
        directory=staging,
        files=cache.describe_files(staging, names),
        headers_version=plan.headers.ort_version,
        ort_api_version=plan.headers.api_version,
        library_origin=plan.library_origin,
        source_sha256=cache.sources_sha256(),
        built_at=datetime.now(UTC).isoformat(timespec="seconds"),
        commands=[plan.invocation.configure, plan.invocation.build],
        compiler=plan.compiler,
        requires_glibc=None if plan.target.is_android else glibc_needed(
            [staging / n for n in names]),
    )
    cache.write_build(build)
    return build


def glibc_needed(paths: list[Path]) -> str | None:
    """The newest GLIBC_x.y symbol version the files reference: the oldest glibc a board may
    have. Version names sit in .dynstr as plain strings, so a byte scan finds them."""
    import re

    found: set[tuple[int, int]] = set()
    for path in paths:
        data = path.read_bytes()
        found.update((int(a), int(b)) for a, b in re.findall(rb"GLIBC_(\d+)\.(\d+)", data))
    if not found:
        return None
    major, minor = max(found)
    return f"{major}.{minor}"


def _cached_source_dir(build_tree: Path) -> Path | None:
    """The source directory a cmake build tree was configured from (CMakeCache.txt)."""
    try:
        text = (build_tree / "CMakeCache.txt").read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("CMAKE_HOME_DIRECTORY:"):
            return Path(line.split("=", 1)[1])
    return None


def prepare_build_tree(plan: BuildPlan, force: bool) -> None:
    """cmake refuses a build tree configured from another source directory (a second checkout, a
    moved one, a CI machine whose cache outlived its clone), and a forced build must not inherit
    anything: either way the tree is thrown away. It is only ever a cache."""
    tree = plan.build_tree
    if not tree.exists():
        return
    previous = _cached_source_dir(tree)
    stale = previous is not None and previous.resolve() != plan.source_dir.resolve()
    if force or stale:
        shutil.rmtree(tree)


def execute(plan: BuildPlan, log: Log = _quiet, *, force: bool = False) -> cache.RunnerBuild:
    root = plan.final_dir.parents[2]
    with cache.cache_lock(f"build-{plan.target.name}", root):
        prepare_build_tree(plan, force)
        stage_library(plan)
        if plan.zig is not None:
            from edgepack.fileio import atomic_write_text

            atomic_write_text(plan.zig_cc, zig_wrapper(plan.zig, plan.target, root / "zig"))
            os.chmod(plan.zig_cc, 0o755)
        log(f"building edgepack-runner for {plan.target.name} against onnxruntime "
            f"{plan.ort_version} (headers {plan.headers.ort_version})")
        _run(plan.invocation.configure, "cmake configure")
        _run(plan.invocation.build, "cmake build")
        binary = plan.build_tree / RUNNER_BINARY
        if not binary.is_file():
            raise EdgepackError(f"cmake finished but {binary} is missing", ExitCode.DEVICE)
        plan.final_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=plan.final_dir.parent, prefix=".staging-"))
        try:
            assemble(plan, binary, staging)
            cache.install_dir(staging, plan.final_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    build = cache.load_build(plan.final_dir)
    if plan.target.name == "host":
        _smoke_test(build)
    return build


def _smoke_test(build: cache.RunnerBuild) -> None:
    """The host runner must load its library and speak the expected version."""
    from edgepack.runner.local import probe

    info = probe(build)
    if info.onnxruntime_version != build.ort_version:
        raise EdgepackError(f"the built runner reports onnxruntime {info.onnxruntime_version}, "
                            f"expected {build.ort_version}", ExitCode.DEVICE)


def build_runner(
    target_name: str,
    *,
    ort_aar: Path | None = None,
    ndk: Path | None = None,
    android_platform: str = DEFAULT_ANDROID_PLATFORM,
    force: bool = False,
    root: Path | None = None,
    log: Log = _quiet,
    compiler: str | None = None,
) -> cache.RunnerBuild:
    """Build (or reuse, unless `force`) the runner for a target; returns the cached build.
    Without `compiler` any built runner is reused, and a new one is built with gcc."""
    target = get_target(target_name)
    resolve_compiler(target, compiler)
    if not force:
        existing = _reusable(target, ort_aar, root)
        if existing is not None and compiler in (None, existing.compiler):
            return existing
    plan = plan_build(target_name, ort_aar=ort_aar, ndk=ndk, android_platform=android_platform,
                      root=root, log=log, compiler=compiler)
    if not force:
        existing = cache.find_runner(plan.target.name, plan.ort_version, root)
        if (existing is not None and existing.headers_version == plan.headers.ort_version
                and compiler in (None, existing.compiler)):
            return existing
    return execute(plan, log, force=force)


def _reusable(target: Target, ort_aar: Path | None, root: Path | None
              ) -> cache.RunnerBuild | None:
    """A built runner that can be reused without fetching anything: Linux runners are keyed by
    the host's onnxruntime version; an Android runner without --ort-aar is the newest built."""
    if target.is_android:
        return None if ort_aar is not None else cache.find_runner(target.name, None, root)
    existing = cache.find_runner(target.name, fetch.host_library_version(), root)
    if existing is not None and ort_aar is not None:
        if fetch.inspect_aar(Path(ort_aar), "--ort-aar").version != existing.headers_version:
            return None
    return existing


def ensure_runner(target_name: str, root: Path | None = None, log: Log = _quiet
                  ) -> cache.RunnerBuild:
    """The current runner for a target, building it first when needed."""
    existing = cache.find_runner(target_name, root=root)
    if existing is not None:
        return existing
    return build_runner(target_name, root=root, log=log)
