"""Running the linux-aarch64 runner on this x86_64 machine under qemu-user.

ONNX Runtime's CPU detection (the cpuinfo library) reads /proc/cpuinfo, which qemu-user passes
through from the x86 host, and the runner then dies in its first ORT call. So the runner runs in a
private mount namespace (`unshare -m`) where an ARM-format cpuinfo file is bound over
/proc/cpuinfo; the bind is invisible outside that namespace. No binfmt handler is registered:
qemu-aarch64 is named on the command line, because the kernel is shared with other work.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from edgepack.runner.cache import RunnerBuild, cache_root
from edgepack.runner.local import RunnerVersion, probe, run_local
from edgepack.runner.result import RunConfig, RunnerResult

QEMU = "qemu-aarch64"
SYSROOT = "/usr/aarch64-linux-gnu"

# Processors described as Arm Neoverse N1 (implementer 0x41, part 0xd0c), an ARMv8.2 core whose
# instructions qemu emulates, so the kernels cpuinfo picks from these features run.
_FEATURES = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm "
             "lrcpc dcpop asimddp")


def fake_cpuinfo(processors: int = 4) -> str:
    blocks = []
    for i in range(processors):
        blocks.append(
            f"processor\t: {i}\nBogoMIPS\t: 50.00\nFeatures\t: {_FEATURES}\n"
            "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\n"
            "CPU part\t: 0xd0c\nCPU revision\t: 1\n"
        )
    return "\n".join(blocks) + "\n"


def cpuinfo_file(root: Path | None = None) -> Path:
    path = (root or cache_root()) / "qemu" / "cpuinfo-aarch64"
    text = fake_cpuinfo(max(1, min(os.cpu_count() or 1, 8)))
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, path)
    return path


def unshare_prefix() -> list[str]:
    # As root, a mount namespace is enough; otherwise a user namespace maps us to root in it.
    return ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-U", "-r", "-m"]


def wrapper(cpuinfo: Path) -> list[str]:
    """Argument list placed before the runner's own: the runner path and its arguments arrive
    in "$@" of a fixed script, so nothing is ever spliced into shell text."""
    script = f'mount --bind "$1" /proc/cpuinfo && shift && exec {QEMU} -L {SYSROOT} "$@"'
    return [*unshare_prefix(), "sh", "-c", script, "sh", str(cpuinfo)]


def unavailable_reason() -> str | None:
    """Why the aarch64 runner cannot run here under qemu, or None when it can."""
    for tool in (QEMU, "unshare", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: apt-get install qemu-user util-linux)"
    if not Path(SYSROOT, "lib", "ld-linux-aarch64.so.1").exists():
        return f"{SYSROOT} has no aarch64 C library (Debian: apt-get install gcc-aarch64-linux-gnu)"
    # The very bind the runs need, so that a kernel or container refusing it is found here.
    probe = 'mount --bind "$1" /proc/cpuinfo && grep -q "CPU implementer" /proc/cpuinfo'
    try:
        proc = subprocess.run([*unshare_prefix(), "sh", "-c", probe, "sh", str(cpuinfo_file())],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot create a private mount namespace ({exc})"
    if proc.returncode != 0:
        return f"cannot bind-mount in a private mount namespace: {proc.stderr.strip()[:200]}"
    return None


def probe_qemu(runner: RunnerBuild | Path) -> RunnerVersion:
    return probe(runner, wrapper=wrapper(cpuinfo_file()), timeout_s=300.0)


def run_qemu(
    runner: RunnerBuild | Path,
    model: Path,
    inputs_dir: Path,
    output_dir: Path | None,
    config: RunConfig,
    profile_prefix: str | None = None,
) -> RunnerResult:
    """run_local under qemu-aarch64 with the fake ARM /proc/cpuinfo."""
    return run_local(runner, model, inputs_dir, output_dir, config, profile_prefix,
                     wrapper=wrapper(cpuinfo_file()))
