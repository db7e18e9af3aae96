"""scripts/setup.sh installs every program and library the tests use.

setup.sh installs with --no-install-recommends, and a fresh machine has only Debian's required
packages: so each program below must come from a package setup.sh names, from one of their
Depends (followed through, Recommends not), or from a required package. Once, the cross gcc's C
library (libc6-dev-arm64-cross, a Recommends) was missing on a fresh machine and the qemu tests
errored in cmake's compiler check; this test fails on any such gap on a machine where the tools
are installed, whichever way they got there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, unavailable
from tests.lab.pgserver import pg_bin

# Every program the tests run or the code they drive runs, and what for.
PROGRAMS = {
    "adb": "the adb server the device tests attach virtual devices to",
    "cmake": "runner builds",
    "gcc": "the host runner, sanitizer builds, the tensorproto tool",
    "cc": "the virtual device's runner-fault library",
    "aarch64-linux-gnu-gcc": "the linux-aarch64 runner",
    "qemu-aarch64": "running the linux-aarch64 runner",
    "unshare": "qemu runs in a private mount namespace",
    "mount": "binding an ARM /proc/cpuinfo for qemu",
    "clang": "libFuzzer (bench/fuzz_tensorproto.sh)",
    "chromium": "rendering report.html",
    "npm": "fetching the ONNX Runtime AAR's headers",
    "mksh": "the virtual device's Android shell",
    "toybox": "the virtual device's Android userland",
    "git": "test_packaging lists the checkout's files",
    "readelf": "checking the host runner's RUNPATH",
    "getconf": "the host's glibc, and the board's through the virtual device",
    "sh": "the host userland's shell, the state probes, scripts",
    "runuser": "the PostgreSQL test server runs as the postgres user",
    # The host userland's commands, and what the virtual device's own tools run.
    **{name: "the host userland" for name in (
        "awk", "cat", "cut", "date", "df", "du", "echo", "find", "grep", "hostname", "mkdir",
        "mv", "pgrep", "rm", "sed", "sha256sum", "sort", "stat", "stty", "tail", "taskset",
        "timeout", "tr", "uname")},
}
# Looked up by the tests or the code, but not from Debian.
NOT_DEBIAN = {
    "zig": "pip's ziglang (the dev extra)",
    "chromium-browser": "other distributions' name for chromium",
}


def _compiler_file(compiler: str, *args: str) -> str | None:
    if shutil.which(compiler) is None:
        return None
    out = subprocess.run([compiler, *args], capture_output=True, text=True).stdout.strip()
    return out if out.startswith("/") and Path(out).exists() else None


def _libfuzzer() -> str | None:
    runtime = _compiler_file("clang", "-print-runtime-dir")
    found = runtime and Path(runtime) / "libclang_rt.fuzzer-x86_64.a"
    return str(found) if found and found.exists() else None


# Libraries linked in tests, found where their compiler looks for them.
LIBRARIES = {
    "the host C library": lambda: _compiler_file("gcc", "-print-file-name=crt1.o"),
    "the aarch64 C library": lambda: _compiler_file("aarch64-linux-gnu-gcc",
                                                    "-print-file-name=crt1.o"),
    "gcc's AddressSanitizer": lambda: _compiler_file("gcc", "-print-file-name=libasan.so"),
    "clang's libFuzzer": _libfuzzer,
    # Off PATH on Debian (/usr/lib/postgresql/VERSION/bin): the history tests' own server.
    **{f"PostgreSQL's {name}": (lambda name=name: pg_bin(name))
       for name in ("initdb", "pg_ctl", "postgres")},
}


def setup_packages() -> list[str]:
    out = subprocess.run(["bash", str(REPO / "scripts" / "setup.sh"), "--dev", "--list"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def _name(package: str) -> str:
    return package.split(":")[0].strip()


def installed_closure(roots: list[str]) -> set[str]:
    """`roots`, their Depends and Pre-Depends, recursively, and the required packages: what a
    fresh machine has after `apt-get install --no-install-recommends ROOTS`."""
    fields = "${binary:Package}\t${Essential}\t${Priority}\t${Pre-Depends}, ${Depends}\t" \
             "${Provides}\t${db:Status-Abbrev}\n"
    out = subprocess.run(["dpkg-query", "-W", "-f", fields], capture_output=True, text=True,
                         check=True).stdout
    depends: dict[str, list[list[str]]] = {}
    providers: dict[str, set[str]] = {}
    base: set[str] = set()
    for line in out.splitlines():
        name, essential, priority, deps, provides, status = (line.split("\t") + [""] * 6)[:6]
        if not status.startswith("ii"):
            continue
        name = _name(name)
        if essential == "yes" or priority == "required":
            base.add(name)
        depends[name] = [[_name(re.sub(r"\(.*?\)", "", alt)) for alt in group.split("|")]
                         for group in deps.split(",") if group.strip()]
        for virtual in provides.split(","):
            if virtual.strip():
                providers.setdefault(_name(re.sub(r"\(.*?\)", "", virtual)), set()).add(name)
    seen: set[str] = set()
    pending = [_name(r) for r in roots]
    while pending:
        package = pending.pop()
        for candidate in {package} | providers.get(package, set()):
            if candidate in depends and candidate not in seen:
                seen.add(candidate)
                pending += [alt for group in depends[candidate] for alt in group]
    return seen | base


def owners(paths: list[str]) -> dict[str, set[str]]:
    """The packages that ship each path (merged /usr: dpkg may know a file as /bin/... or
    /usr/bin/..., and by the name a link points to); one dpkg-query for all."""
    candidates: dict[str, list[str]] = {}
    for path in paths:
        real = os.path.realpath(path)
        candidates[path] = [c for p in (path, real)
                            for c in (p, re.sub(r"^/usr/(s?bin|lib)/", r"/\1/", p))]
    asked = sorted({c for cs in candidates.values() for c in cs})
    out = subprocess.run(["dpkg-query", "-S", *asked], capture_output=True, text=True).stdout
    shipped: dict[str, set[str]] = {}
    for line in out.splitlines():
        if line.startswith("diversion"):
            continue
        packages, _, where = line.rpartition(": ")
        shipped.setdefault(where, set()).update(_name(p) for p in packages.split(","))
    return {path: next((shipped[c] for c in cs if c in shipped), set())
            for path, cs in candidates.items()}


@pytest.fixture(scope="module")
def closure() -> set[str]:
    if shutil.which("dpkg-query") is None:
        unavailable("not a Debian machine (no dpkg-query)")
    return installed_closure(setup_packages())


def test_setup_lists_the_cross_c_library_and_the_android_userland() -> None:
    packages = setup_packages()
    for package in ("libc6-dev-arm64-cross", "gcc-aarch64-linux-gnu", "mksh", "toybox",
                    "qemu-user", "chromium", "libclang-rt-14-dev", "adb", "postgresql"):
        assert package in packages
    # The demo's virtual device gets Android's userland without --dev too.
    plain = subprocess.run(["bash", str(REPO / "scripts" / "setup.sh"), "--list"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert {"adb", "mksh", "toybox", "libc6-dev"} <= set(plain) and "chromium" not in plain
    assert "postgresql" not in plain  # a lab's server is the lab's; only the tests start one


def test_every_program_the_tests_run_comes_from_setup(closure: set[str]) -> None:
    found: dict[str, tuple[str, str]] = {}  # what -> (path, why)
    missing = []
    for program, why in PROGRAMS.items():
        path = shutil.which(program)
        if path is None:
            missing.append(program)
        else:
            found[program] = (path, why)
    for library, find in LIBRARIES.items():
        path = find()
        if path is None:
            missing.append(library)
        else:
            found[library] = (path, "linked by the tests")
    shipped = owners([path for path, _ in found.values()])
    for what, (path, why) in found.items():
        assert shipped[path], f"{what} ({path}) belongs to no Debian package"
        assert shipped[path] & closure, (
            f"{what} ({why}) comes from {', '.join(sorted(shipped[path]))}, which "
            "scripts/setup.sh --dev does not install (nor anything it Depends on; "
            "Recommends are not installed): add it to its list")
    if missing:
        unavailable(f"not installed: {', '.join(missing)} (bash scripts/setup.sh --dev)")


def test_every_program_the_code_looks_up_is_accounted_for() -> None:
    """A new shutil.which("tool") must say where the tool comes from, here."""
    looked_up = set()
    for folder in ("edgepack", "tests", "bench"):
        for path in (REPO / folder).rglob("*.py"):
            if path.resolve() == Path(__file__).resolve():
                continue
            looked_up |= set(re.findall(r"shutil\.which\(\s*\"([^\"]+)\"", path.read_text()))
    unknown = looked_up - set(PROGRAMS) - set(NOT_DEBIAN)
    assert not unknown, f"add {sorted(unknown)} to PROGRAMS (a Debian tool) or NOT_DEBIAN"
