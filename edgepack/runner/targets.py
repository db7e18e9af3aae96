"""Where edgepack-runner can be built for, and the exact cmake commands that build it.

The commands are argument lists (never shell strings); `shell_command` renders one for a human to
copy, quoted with shlex.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from edgepack.errors import EdgepackError, ExitCode

RUNNER_BINARY = "edgepack-runner"
RUNNER_VERSION = "0.1.0"  # keep equal to EDGEPACK_RUNNER_VERSION in device_scripts/runner
DEFAULT_ANDROID_PLATFORM = "android-24"  # Android 7.0: DT_RUNPATH with $ORIGIN works from here


@dataclass(frozen=True)
class Target:
    """One build target of the runner."""

    name: str
    os: str  # "linux" or "android"
    machine: str  # `uname -m` of devices that run it
    android_abi: str | None  # ANDROID_ABI, and the AAR's jni/<abi>/ directory
    # The onnxruntime library's file name in the runner directory: its soname, which the runner's
    # DT_NEEDED names and $ORIGIN finds.
    library_name: str
    library_source: str  # "wheel" (the host's Python package), "wheel-aarch64" or "aar"
    description: str

    @property
    def is_android(self) -> bool:
        return self.os == "android"


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("host", "linux", "x86_64", None, "libonnxruntime.so.1", "wheel",
               "this Linux x86_64 machine, against the onnxruntime Python package's library"),
        Target("android-arm64-v8a", "android", "aarch64", "arm64-v8a", "libonnxruntime.so",
               "aar", "Android arm64 phones and boards"),
        Target("android-armeabi-v7a", "android", "armv7l", "armeabi-v7a", "libonnxruntime.so",
               "aar", "32-bit Android ARM"),
        Target("android-x86_64", "android", "x86_64", "x86_64", "libonnxruntime.so", "aar",
               "Android x86_64 emulators"),
        Target("linux-aarch64", "linux", "aarch64", None, "libonnxruntime.so.1", "wheel-aarch64",
               "Linux aarch64 boards (Jetson, Raspberry Pi, Rockchip), glibc >= 2.34"),
    )
}


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise EdgepackError(
            f"unknown runner target {name!r}: choose one of {', '.join(TARGETS)}",
            ExitCode.BAD_INPUT,
        ) from None


def target_for_android_abi(abi: str) -> Target | None:
    """The runner for an Android device, from `getprop ro.product.cpu.abi`."""
    return next((t for t in TARGETS.values() if t.android_abi == abi.strip()), None)


def target_for_linux_machine(machine: str) -> Target | None:
    """The runner for a Linux device, from `uname -m`."""
    machine = machine.strip()
    if machine == "x86_64":
        return TARGETS["host"]
    if machine in ("aarch64", "arm64"):
        return TARGETS["linux-aarch64"]
    return None


@dataclass(frozen=True)
class CMakeInvocation:
    """The configure and build commands for one target; run in order."""

    configure: list[str]
    build: list[str]

    def shell_lines(self) -> list[str]:
        return [shell_command(self.configure), shell_command(self.build)]


def shell_command(argv: list[str]) -> str:
    return shlex.join(argv)


def android_toolchain_file(ndk: Path) -> Path:
    return Path(ndk) / "build" / "cmake" / "android.toolchain.cmake"


def cmake_invocation(
    target: Target,
    *,
    source_dir: Path,
    build_dir: Path,
    include_dir: Path,
    library: Path,
    ndk: Path | None = None,
    android_platform: str = DEFAULT_ANDROID_PLATFORM,
    cmake: str = "cmake",
    jobs: int | None = None,
) -> CMakeInvocation:
    """The cmake commands that build the runner for `target`.

    `library` is the onnxruntime shared library to link; the runner records its soname, so the
    same file (renamed to `target.library_name`) must sit beside the runner on the device.
    """
    configure = [
        cmake, "-S", str(source_dir), "-B", str(build_dir),
        "-DCMAKE_BUILD_TYPE=Release",
        f"-DEDGEPACK_TARGET={target.name}",
        f"-DORT_INCLUDE_DIR={include_dir}",
        f"-DORT_LIBRARY={library}",
    ]
    if target.is_android:
        if ndk is None:
            raise EdgepackError(
                f"building {target.name} needs the Android NDK: pass --ndk PATH or set "
                "ANDROID_NDK_HOME",
                ExitCode.BAD_INPUT,
            )
        configure += [
            f"-DCMAKE_TOOLCHAIN_FILE={android_toolchain_file(ndk)}",
            f"-DANDROID_ABI={target.android_abi}",
            f"-DANDROID_PLATFORM={android_platform}",
            # The runner is C: no C++ runtime to link, so nothing beyond libonnxruntime.so (which
            # carries its own) has to be pushed.
            "-DANDROID_STL=none",
        ]
    elif target.name == "linux-aarch64":
        configure.append(
            f"-DCMAKE_TOOLCHAIN_FILE={Path(source_dir) / 'cmake' / 'aarch64-linux-gnu.cmake'}"
        )
    else:
        configure.append("-DCMAKE_C_COMPILER=gcc")
    build = [cmake, "--build", str(build_dir), "--target", RUNNER_BINARY]
    if jobs:
        build += ["--parallel", str(jobs)]
    return CMakeInvocation(configure, build)


def compilers_needed(target: Target) -> list[str]:
    """Programs that must be on PATH to build `target` (the NDK brings its own)."""
    if target.is_android:
        return ["cmake"]
    if target.name == "linux-aarch64":
        return ["cmake", "aarch64-linux-gnu-gcc"]
    return ["cmake", "gcc"]
