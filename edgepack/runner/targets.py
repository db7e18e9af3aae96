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
# The C compilers a Linux runner can be built with. gcc links against this machine's glibc, so
# Debian's cross gcc makes an aarch64 runner that needs glibc 2.34; zig's C compiler carries
# stubs of every glibc and links against the oldest onnxruntime itself supports.
COMPILERS = ("gcc", "zig")
ZIG_GLIBC = "2.28"  # onnxruntime's Linux wheels are manylinux_2_28


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
               "Linux aarch64 boards (Jetson, Raspberry Pi, Rockchip); glibc >= 2.34 built with "
               "gcc, >= 2.28 with --compiler zig"),
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
class Arch:
    """What a program is built for, as its ELF header says: e_machine and EI_CLASS."""

    machine: int
    bits: int  # 32 or 64

    def describe(self) -> str:
        name = _ARCH_NAMES.get(self)
        return name or f"{self.bits}-bit ELF machine {self.machine}"


def elf_arch(path: Path) -> Arch | None:
    """e_machine and EI_CLASS of an ELF file, or None for anything else (a missing file too)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(20)
    except OSError:
        return None
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    bits = {1: 32, 2: 64}.get(head[4])  # EI_CLASS
    order = {1: "little", 2: "big"}.get(head[5])  # EI_DATA: e_machine is in the file's order
    if bits is None or order is None:
        return None
    return Arch(int.from_bytes(head[18:20], order), bits)  # type: ignore[arg-type]


EM_386, EM_ARM, EM_X86_64, EM_AARCH64, EM_RISCV = 3, 40, 62, 183, 243
_ARCH_NAMES = {
    Arch(EM_X86_64, 64): "x86_64",
    Arch(EM_AARCH64, 64): "aarch64 (64-bit ARM)",
    Arch(EM_ARM, 32): "32-bit ARM",
    Arch(EM_386, 32): "x86 (32-bit)",
    Arch(EM_RISCV, 64): "riscv64",
}
# What devices call those: `uname -m`, and Android's ABI names (ro.product.cpu.abilist).
_UNAME_ARCH = {
    "x86_64": Arch(EM_X86_64, 64), "amd64": Arch(EM_X86_64, 64),
    "aarch64": Arch(EM_AARCH64, 64), "arm64": Arch(EM_AARCH64, 64),
    "armv7l": Arch(EM_ARM, 32), "armv8l": Arch(EM_ARM, 32), "armv7": Arch(EM_ARM, 32),
    "armv6l": Arch(EM_ARM, 32), "arm": Arch(EM_ARM, 32),
    "i686": Arch(EM_386, 32), "i586": Arch(EM_386, 32), "i386": Arch(EM_386, 32),
    "riscv64": Arch(EM_RISCV, 64),
}
_ABI_ARCH = {
    "arm64-v8a": Arch(EM_AARCH64, 64), "armeabi-v7a": Arch(EM_ARM, 32),
    "armeabi": Arch(EM_ARM, 32), "x86": Arch(EM_386, 32), "x86_64": Arch(EM_X86_64, 64),
    "riscv64": Arch(EM_RISCV, 64),
}


def target_arch(target: Target) -> Arch | None:
    """The architecture a target's runner is built for."""
    if target.android_abi is not None:
        return _ABI_ARCH.get(target.android_abi)
    return _UNAME_ARCH.get(target.machine)


def device_archs(abis: list[str], machine: str | None) -> set[Arch]:
    """What a device runs: every ABI it lists (an arm64 phone runs 32-bit ARM programs too, an
    x86_64 emulator with ARM translation lists the ARM ABIs) and its kernel's `uname -m`. Empty
    when it says nothing edgepack knows."""
    archs = {_ABI_ARCH[a] for a in abis if a in _ABI_ARCH}
    archs |= {_UNAME_ARCH[a] for a in abis if a in _UNAME_ARCH}  # a Linux board's abis: uname
    if machine and machine.strip() in _UNAME_ARCH:
        archs.add(_UNAME_ARCH[machine.strip()])
    return archs


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
    zig_cc: Path | None = None,
) -> CMakeInvocation:
    """The cmake commands that build the runner for `target`.

    `library` is the onnxruntime shared library to link; the runner records its soname, so the
    same file (renamed to `target.library_name`) must sit beside the runner on the device.
    `zig_cc`, for Linux targets, is a compiler wrapper running `zig cc -target
    <machine>-linux-gnu.<ZIG_GLIBC>` (see zig_wrapper), used instead of gcc.
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
    elif zig_cc is not None:
        configure.append(f"-DCMAKE_C_COMPILER={zig_cc}")
        if target.name != "host":
            configure += ["-DCMAKE_SYSTEM_NAME=Linux", f"-DCMAKE_SYSTEM_PROCESSOR={target.machine}"]
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


def compilers_needed(target: Target, compiler: str = "gcc") -> list[str]:
    """Programs that must be on PATH to build `target` (the NDK and zig are found apart)."""
    if target.is_android or compiler == "zig":
        return ["cmake"]
    if target.name == "linux-aarch64":
        return ["cmake", "aarch64-linux-gnu-gcc"]
    return ["cmake", "gcc"]


def zig_target(target: Target) -> str:
    """zig's name for a Linux target with the glibc to link against."""
    return f"{target.machine}-linux-gnu.{ZIG_GLIBC}"


def zig_wrapper(zig: Path, target: Target, zig_cache: Path) -> str:
    """A one-line compiler for cmake, which takes a compiler as one program: `zig cc` for the
    target, with zig's own cache kept beside edgepack's."""
    return (
        "#!/bin/sh\n"
        "# written by edgepack runner build: zig's C compiler for "
        f"{target.name}, linking against glibc {ZIG_GLIBC}\n"
        f"ZIG_GLOBAL_CACHE_DIR={shlex.quote(str(zig_cache))}; "
        f"ZIG_LOCAL_CACHE_DIR={shlex.quote(str(zig_cache))}\n"
        "export ZIG_GLOBAL_CACHE_DIR ZIG_LOCAL_CACHE_DIR\n"
        f"exec {shlex.quote(str(zig))} cc -target {zig_target(target)} \"$@\"\n"
    )
