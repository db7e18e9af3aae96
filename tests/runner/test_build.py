"""Build targets: the cmake commands per target (Android ones cannot be run here: no NDK), the
runner directory's layout, runner.json, and finding builds in the cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from edgepack.errors import EdgepackError, ExitCode
from edgepack.runner import build as build_mod
from edgepack.runner import cache
from edgepack.runner.fetch import OrtHeaders
from edgepack.runner.targets import (
    TARGETS,
    cmake_invocation,
    get_target,
    target_for_android_abi,
    target_for_linux_machine,
)
from tests.conftest import run_cli, unavailable
from tests.runner.conftest import RUNNER_SRC


@pytest.fixture
def fake_ndk(tmp_path) -> Path:
    ndk = tmp_path / "android-ndk-r26d"
    toolchain = ndk / "build" / "cmake" / "android.toolchain.cmake"
    toolchain.parent.mkdir(parents=True)
    toolchain.write_text("# stand-in\n")
    return ndk


@pytest.mark.parametrize("abi", ["arm64-v8a", "armeabi-v7a", "x86_64"])
def test_android_cmake_invocation(fake_ndk, tmp_path, abi):
    target = get_target(f"android-{abi}")
    inv = cmake_invocation(target, source_dir=RUNNER_SRC, build_dir=tmp_path / "b",
                           include_dir=tmp_path / "headers",
                           library=tmp_path / f"jni/{abi}/libonnxruntime.so", ndk=fake_ndk)
    assert inv.configure[:5] == ["cmake", "-S", str(RUNNER_SRC), "-B", str(tmp_path / "b")]
    assert set(inv.configure[5:]) == {
        "-DCMAKE_BUILD_TYPE=Release",
        f"-DEDGEPACK_TARGET=android-{abi}",
        f"-DORT_INCLUDE_DIR={tmp_path / 'headers'}",
        f"-DORT_LIBRARY={tmp_path / f'jni/{abi}/libonnxruntime.so'}",
        f"-DCMAKE_TOOLCHAIN_FILE={fake_ndk / 'build/cmake/android.toolchain.cmake'}",
        f"-DANDROID_ABI={abi}",
        "-DANDROID_PLATFORM=android-24",
        "-DANDROID_STL=none",
    }
    assert inv.build == ["cmake", "--build", str(tmp_path / "b"), "--target", "edgepack-runner"]
    # What a human copies: quoted, one line per command.
    lines = inv.shell_lines()
    assert lines[0].startswith("cmake -S ") and "-DANDROID_ABI=" + abi in lines[0]


def test_android_platform_and_paths_with_spaces_are_quoted(fake_ndk, tmp_path):
    inv = cmake_invocation(get_target("android-arm64-v8a"), source_dir=Path("/src dir"),
                           build_dir=Path("/b"), include_dir=Path("/h"),
                           library=Path("/l/libonnxruntime.so"), ndk=fake_ndk,
                           android_platform="android-29", jobs=4)
    assert "-DANDROID_PLATFORM=android-29" in inv.configure
    assert inv.build[-2:] == ["--parallel", "4"]
    assert "'/src dir'" in inv.shell_lines()[0]


def test_linux_cmake_invocations(tmp_path):
    host = cmake_invocation(get_target("host"), source_dir=RUNNER_SRC, build_dir=tmp_path,
                            include_dir=tmp_path, library=tmp_path / "libonnxruntime.so")
    assert "-DCMAKE_C_COMPILER=gcc" in host.configure
    assert not any("TOOLCHAIN" in a for a in host.configure)
    arm = cmake_invocation(get_target("linux-aarch64"), source_dir=RUNNER_SRC, build_dir=tmp_path,
                           include_dir=tmp_path, library=tmp_path / "libonnxruntime.so")
    toolchain = RUNNER_SRC / "cmake" / "aarch64-linux-gnu.cmake"
    assert f"-DCMAKE_TOOLCHAIN_FILE={toolchain}" in arm.configure and toolchain.is_file()


def test_zig_invocations_and_wrapper(tmp_path):
    from edgepack.runner.targets import ZIG_GLIBC, zig_wrapper

    wrapper = tmp_path / "zig cc"
    arm = cmake_invocation(get_target("linux-aarch64"), source_dir=RUNNER_SRC, build_dir=tmp_path,
                           include_dir=tmp_path, library=tmp_path / "l.so", zig_cc=wrapper)
    assert f"-DCMAKE_C_COMPILER={wrapper}" in arm.configure
    assert {"-DCMAKE_SYSTEM_NAME=Linux", "-DCMAKE_SYSTEM_PROCESSOR=aarch64"} <= set(arm.configure)
    assert not any("TOOLCHAIN" in a for a in arm.configure)
    host = cmake_invocation(get_target("host"), source_dir=RUNNER_SRC, build_dir=tmp_path,
                            include_dir=tmp_path, library=tmp_path / "l.so", zig_cc=wrapper)
    assert not any("SYSTEM_NAME" in a for a in host.configure)
    # The wrapper is a real sh script: run it with a stand-in zig that prints its arguments.
    fake_zig = tmp_path / "bin dir" / "zig"
    fake_zig.parent.mkdir()
    fake_zig.write_text('#!/bin/sh\necho "$ZIG_GLOBAL_CACHE_DIR|$*"\n')
    fake_zig.chmod(0o755)
    wrapper.write_text(zig_wrapper(fake_zig, get_target("linux-aarch64"), tmp_path / "z c"))
    wrapper.chmod(0o755)
    out = subprocess.run([str(wrapper), "-c", "a b.c"], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == f"{tmp_path / 'z c'}|cc -target aarch64-linux-gnu.{ZIG_GLIBC} -c a b.c"


def test_compiler_choice(monkeypatch):
    assert build_mod.resolve_compiler(get_target("linux-aarch64"), None) == "gcc"
    assert build_mod.resolve_compiler(get_target("host"), "zig") == "zig"
    assert build_mod.resolve_compiler(get_target("android-arm64-v8a"), None) == "ndk"
    for target, compiler in (("android-arm64-v8a", "zig"), ("host", "clang")):
        with pytest.raises(EdgepackError) as info:
            build_mod.resolve_compiler(get_target(target), compiler)
        assert info.value.exit_code == ExitCode.BAD_INPUT
    import builtins

    real_import = builtins.__import__

    def no_ziglang(name, *args, **kwargs):
        if name == "ziglang":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ziglang)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(EdgepackError) as info:
        build_mod.find_zig()
    assert info.value.exit_code == ExitCode.BAD_INPUT
    assert "pip install ziglang" in info.value.message


def test_android_without_ndk_is_bad_input(monkeypatch, tmp_path):
    for var in ("ANDROID_NDK_HOME", "ANDROID_NDK_ROOT", "ANDROID_NDK"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(EdgepackError) as info:
        build_mod.resolve_ndk(None)
    assert info.value.exit_code == ExitCode.BAD_INPUT and "--ndk" in info.value.message
    with pytest.raises(EdgepackError) as info:
        build_mod.resolve_ndk(tmp_path)
    assert info.value.exit_code == ExitCode.BAD_INPUT and "not an Android NDK" in info.value.message
    with pytest.raises(EdgepackError):
        cmake_invocation(get_target("android-x86_64"), source_dir=RUNNER_SRC, build_dir=tmp_path,
                         include_dir=tmp_path, library=tmp_path)


def test_ndk_from_environment(monkeypatch, fake_ndk):
    monkeypatch.setenv("ANDROID_NDK_HOME", str(fake_ndk))
    assert build_mod.resolve_ndk(None) == fake_ndk


def test_cmake_refuses_android_target_without_the_toolchain(tmp_path):
    """The CMakeLists guard: an Android target configured without the NDK toolchain stops with a
    message instead of building a Linux binary by mistake."""
    if shutil.which("cmake") is None:
        unavailable("cmake not installed")
    headers = tmp_path / "h"
    headers.mkdir()
    (headers / "onnxruntime_c_api.h").write_text("")
    lib = tmp_path / "libonnxruntime.so"
    lib.write_bytes(b"")
    proc = subprocess.run(
        ["cmake", "-S", str(RUNNER_SRC), "-B", str(tmp_path / "b"),
         "-DEDGEPACK_TARGET=android-arm64-v8a", f"-DORT_INCLUDE_DIR={headers}",
         f"-DORT_LIBRARY={lib}"], capture_output=True, text=True)
    assert proc.returncode != 0 and "android.toolchain.cmake" in proc.stderr
    proc = subprocess.run(
        ["cmake", "-S", str(RUNNER_SRC), "-B", str(tmp_path / "c"), "-DEDGEPACK_TARGET=pdp11",
         f"-DORT_INCLUDE_DIR={headers}", f"-DORT_LIBRARY={lib}"], capture_output=True, text=True)
    assert proc.returncode != 0 and "EDGEPACK_TARGET must be one of" in proc.stderr


def _fake_plan(tmp_path: Path, target_name: str, fake_ndk: Path) -> build_mod.BuildPlan:
    target = get_target(target_name)
    work = tmp_path / "work"
    (work / "lib").mkdir(parents=True)
    (work / "lib" / target.library_name).write_bytes(b"\x7fELF fake onnxruntime")
    headers = OrtHeaders(tmp_path / "headers", 29, "1.29.0")
    inv = cmake_invocation(target, source_dir=RUNNER_SRC, build_dir=work / "cmake",
                           include_dir=headers.include_dir, library=work / "lib" / "x.so",
                           ndk=fake_ndk)
    return build_mod.BuildPlan(target, "1.29.0", work / "lib" / target.library_name, "test",
                               headers, work, tmp_path / "root" / "runners" / target.name /
                               "1.29.0", inv, RUNNER_SRC,
                               "ndk" if target.is_android else "gcc")


@pytest.mark.parametrize("target_name", ["android-arm64-v8a", "android-armeabi-v7a",
                                         "android-x86_64", "linux-aarch64"])
def test_runner_directory_layout(tmp_path, fake_ndk, target_name):
    """What an NDK build would leave: the runner and the library under its soname, both regular
    files, listed in runner.json as the files to push."""
    plan = _fake_plan(tmp_path, target_name, fake_ndk)
    binary = tmp_path / "edgepack-runner.built"
    binary.write_bytes(b"\x7fELF fake runner")
    staging = tmp_path / "staging"
    built = build_mod.assemble(plan, binary, staging)
    lib = "libonnxruntime.so" if target_name.startswith("android") else "libonnxruntime.so.1"
    assert sorted(p.name for p in staging.iterdir()) == sorted(["edgepack-runner", lib,
                                                                "runner.json"])
    assert built.push_files == ["edgepack-runner", lib]
    for name in built.push_files:
        path = staging / name
        assert path.is_file() and not path.is_symlink()
    assert (staging / "edgepack-runner").stat().st_mode & 0o111
    doc = json.loads((staging / "runner.json").read_text())
    assert doc["push_files"] == built.push_files and doc["target"] == target_name
    assert doc["id"] == built.id and doc["id"].startswith(f"{target_name}-ort1.29.0-r0.1.0-")
    assert doc["requires_glibc"] is None  # a fake binary references no glibc versions
    assert cache.load_build(staging) == built

    cache.install_dir(staging, plan.final_dir)
    found = cache.find_runner(target_name, "1.29.0", root=tmp_path / "root")
    assert found is not None and found.id == built.id
    assert [b.id for b in cache.list_builds(tmp_path / "root")] == [built.id]


def test_id_changes_with_content_and_stale_or_broken_builds_are_not_used(tmp_path, fake_ndk,
                                                                          monkeypatch):
    plan = _fake_plan(tmp_path, "android-arm64-v8a", fake_ndk)
    binary = tmp_path / "bin"
    binary.write_bytes(b"one")
    first = build_mod.assemble(plan, binary, tmp_path / "a")
    again = build_mod.assemble(plan, binary, tmp_path / "b")
    assert first.id == again.id  # stable: a name devices can keep
    binary.write_bytes(b"two")
    assert build_mod.assemble(plan, binary, tmp_path / "c").id != first.id

    root = tmp_path / "root"
    cache.install_dir(tmp_path / "a", plan.final_dir)
    assert cache.find_runner("android-arm64-v8a", root=root) is not None
    # Sources changed since the build: not current.
    src = tmp_path / "src"
    shutil.copytree(RUNNER_SRC, src, ignore=shutil.ignore_patterns("build*"))
    (src / "src" / "main.c").write_text((src / "src" / "main.c").read_text() + "\n/* edit */\n")
    monkeypatch.setenv("EDGEPACK_RUNNER_SRC", str(src))
    assert cache.find_runner("android-arm64-v8a", root=root) is None
    monkeypatch.delenv("EDGEPACK_RUNNER_SRC")
    # A pushed file replaced by a link: broken, and check_build says why.
    lib = plan.final_dir / "libonnxruntime.so"
    lib.unlink()
    lib.symlink_to(plan.staged_library)
    assert cache.find_runner("android-arm64-v8a", root=root) is None
    assert cache.check_build(cache.load_build(plan.final_dir)) == [
        "libonnxruntime.so is missing or not a regular file"]


def test_corrupt_runner_json(tmp_path):
    d = tmp_path / "runners" / "host" / "1.0.0"
    d.mkdir(parents=True)
    (d / "runner.json").write_text("{not json")
    with pytest.raises(EdgepackError) as info:
        cache.load_build(d)
    assert info.value.exit_code == ExitCode.DEVICE
    assert cache.list_builds(tmp_path) == []
    assert cache.find_runner("host", "1.0.0", root=tmp_path) is None


def test_cache_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEPACK_CACHE_DIR", str(tmp_path / "c"))
    assert cache.runner_dir("host", "1.32.0") == tmp_path / "c" / "runners" / "host" / "1.32.0"
    monkeypatch.delenv("EDGEPACK_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache.cache_root() == tmp_path / "x" / "edgepack"


def test_targets_for_devices():
    assert target_for_android_abi("arm64-v8a\n").name == "android-arm64-v8a"
    assert target_for_android_abi("armeabi-v7a").name == "android-armeabi-v7a"
    assert target_for_android_abi("mips") is None
    assert target_for_linux_machine("aarch64").name == "linux-aarch64"
    assert target_for_linux_machine("x86_64").name == "host"
    assert target_for_linux_machine("riscv64") is None
    with pytest.raises(EdgepackError) as info:
        get_target("windows")
    assert info.value.exit_code == ExitCode.BAD_INPUT
    assert all(name in info.value.message for name in TARGETS)


def test_host_build_is_self_contained(host_runner):
    """The host runner's directory holds its own copy of the wheel's library (not a link into
    site-packages) and finds it through $ORIGIN."""
    from edgepack.fileio import sha256_file
    from edgepack.runner.fetch import host_library

    lib = host_runner.directory / "libonnxruntime.so.1"
    assert lib.is_file() and not lib.is_symlink()
    assert sha256_file(lib) == sha256_file(host_library().path)  # the very same build as Python's
    assert not cache.check_build(host_runner, hashes=True)
    assert host_runner.requires_glibc is not None
    if shutil.which("readelf"):
        dyn = subprocess.run(["readelf", "-d", str(host_runner.binary)], capture_output=True,
                             text=True).stdout
        assert "[libonnxruntime.so.1]" in dyn and "[$ORIGIN]" in dyn
    # No link was ever made inside site-packages.
    capi = host_library().path.parent
    assert not (capi / "libonnxruntime.so").exists() and not (capi / "libonnxruntime.so.1").exists()


def test_rebuild_reuses_and_force_rebuilds_identically(host_runner):
    again = build_mod.build_runner("host")
    assert again.id == host_runner.id and again.built_at == host_runner.built_at
    rebuilt = build_mod.build_runner("host", force=True)
    assert rebuilt.id == host_runner.id  # the build is reproducible


def test_a_build_tree_left_by_another_checkout_is_replaced(host_runner, tmp_path, monkeypatch):
    """The cache outlives checkouts (two clones, a moved one, CI reusing a machine's cache): cmake
    refuses a build tree configured from another source directory, so the build must not reuse
    it. This failed CI once, with a tree made from /work/main and a clone at /check/work/main."""
    other = tmp_path / "other clone" / "runner"
    shutil.copytree(RUNNER_SRC, other)
    monkeypatch.setenv("EDGEPACK_RUNNER_SRC", str(other))
    from_other = build_mod.plan_build("host")
    build_mod.execute(from_other)
    assert build_mod._cached_source_dir(from_other.build_tree) == other
    monkeypatch.delenv("EDGEPACK_RUNNER_SRC")
    plan = build_mod.plan_build("host")
    assert plan.build_tree == from_other.build_tree
    built = build_mod.execute(plan)
    assert build_mod._cached_source_dir(plan.build_tree) == RUNNER_SRC.resolve()
    assert built.id == host_runner.id


def test_android_code_path_compiles_against_the_aar_headers(host_runner):
    """No NDK here, but the __ANDROID__ branch (NNAPI) can at least be compiled for syntax and
    types against the AAR's own nnapi_provider_factory.h."""
    cc = shutil.which("clang") or shutil.which("gcc")
    include = next(a.split("=", 1)[1] for a in host_runner.commands[0]
                   if a.startswith("-DORT_INCLUDE_DIR="))
    if cc is None or not Path(include, "nnapi_provider_factory.h").is_file():
        unavailable("no compiler or no AAR headers")
    src = RUNNER_SRC / "src"
    proc = subprocess.run([cc, "-std=c11", "-fsyntax-only", "-Wall", "-Wextra", "-Werror",
                           "-D__ANDROID__", f"-I{src}", f"-I{include}", str(src / "main.c")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def _cross_gcc_without_its_c_library(where: Path) -> Path:
    """Debian's aarch64 cross gcc as `apt-get install --no-install-recommends
    gcc-aarch64-linux-gnu` leaves it on a fresh machine: the real driver, compiler and binutils,
    and no libc6-dev-arm64-cross. The driver finds its files relative to where it lies, so a
    copy of it beside links to the rest is that install; returns its bin directory."""
    gcc = shutil.which("aarch64-linux-gnu-gcc")
    if gcc is None:
        unavailable("aarch64-linux-gnu-gcc is not installed "
                    "(apt-get install gcc-aarch64-linux-gnu)")
    driver = Path(gcc).resolve()
    prefix = driver.parent.parent  # /usr
    libgcc = subprocess.run([gcc, "-print-libgcc-file-name"], capture_output=True, text=True,
                            check=True).stdout.strip()
    version_dir = Path(libgcc).parent  # /usr/lib/gcc-cross/aarch64-linux-gnu/12: cc1, crtbegin.o
    (where / "bin").mkdir(parents=True)
    shutil.copy2(driver, where / "bin" / "aarch64-linux-gnu-gcc")
    mirror = where / version_dir.relative_to(prefix)
    mirror.mkdir(parents=True)
    for entry in version_dir.iterdir():  # real directories: `..` from here must stay in `where`
        (mirror / entry.name).symlink_to(entry)
    (where / "aarch64-linux-gnu").mkdir()
    (where / "aarch64-linux-gnu" / "bin").symlink_to(prefix / "aarch64-linux-gnu" / "bin")
    return where / "bin"


def test_a_cross_gcc_without_its_c_library_is_named_before_cmake(tmp_path, monkeypatch):
    """On a fresh machine setup.sh once installed the cross gcc without libc6-dev-arm64-cross:
    cmake's compiler check then failed with 'collect2: error: ld returned 1 exit status', which
    names no package. The build now links a program itself first and says what to install."""
    # The real toolchain links (CI installs libc6-dev-arm64-cross through setup.sh).
    build_mod.check_toolchain(get_target("linux-aarch64"), "gcc")
    bare = _cross_gcc_without_its_c_library(tmp_path / "cross")
    monkeypatch.setenv("PATH", f"{bare}:{os.environ['PATH']}")
    monkeypatch.setenv("EDGEPACK_CACHE_DIR", str(tmp_path / "cache"))
    r = run_cli("runner", "build", "--target", "linux-aarch64", "--force")
    assert r.code == ExitCode.BAD_INPUT, r.stderr
    assert "apt-get install libc6-dev-arm64-cross" in r.stderr
    assert "cannot find" in r.stderr and "collect2" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "cache" / "runners").exists()


def test_a_missing_compiler_names_its_package_and_its_c_library(tmp_path, monkeypatch):
    if shutil.which("cmake") is None:
        unavailable("cmake not installed")
    only_cmake = tmp_path / "bin"
    only_cmake.mkdir()
    (only_cmake / "cmake").symlink_to(shutil.which("cmake"))
    monkeypatch.setenv("PATH", str(only_cmake))
    monkeypatch.setenv("EDGEPACK_CACHE_DIR", str(tmp_path / "cache"))
    r = run_cli("runner", "build", "--target", "linux-aarch64", "--force")
    assert r.code == ExitCode.BAD_INPUT
    assert "apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross" in r.stderr, r.stderr
    r = run_cli("runner", "build", "--target", "host", "--force")
    assert r.code == ExitCode.BAD_INPUT
    assert "apt-get install gcc libc6-dev" in r.stderr, r.stderr
