"""Running a runner on this machine as a subprocess (directly, or through a wrapper such as
qemu-user) and reading its one JSON document back as a RunnerResult."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgepack.errors import EdgepackError, ExitCode
from edgepack.runner.cache import RunnerBuild
from edgepack.runner.result import (
    RUNNER_SCHEMA,
    RunConfig,
    RunnerResult,
    parse_cpu_mask,
    parse_runner_output,
)


def runner_argv(
    binary: str | Path,
    model: str | Path,
    inputs_dir: str | Path,
    output_dir: str | Path | None,
    config: RunConfig,
    profile_prefix: str | None = None,
) -> list[str]:
    """The runner's argument list; devices join it with shlex for their shell."""
    argv = [str(binary), "--model", str(model), "--inputs", str(inputs_dir)]
    if output_dir is not None:
        argv += ["--output-dir", str(output_dir)]
    argv += config.runner_args()
    if profile_prefix:
        argv += ["--profile", profile_prefix]
    return argv


def device_command(
    runner_dir: str,
    model: str,
    inputs_dir: str,
    output_dir: str | None,
    config: RunConfig,
    profile_prefix: str | None = None,
) -> str:
    """The runner's command line for a device's POSIX shell (Android's mksh, a board's /bin/sh),
    every word quoted. LD_LIBRARY_PATH backs up the runner's $ORIGIN lookup of its library; the
    device's own `timeout` kills a hung runner there even if the host loses the connection
    (TERM, then KILL 5 s later); taskset pins it when config.cpu_affinity asks.

    `timeout --foreground` where the device's timeout has it: toybox's before 0.8.11 (Android 14
    and older) moves the runner to a process group of its own and, when the runner dies before
    timeout is ready for it (a crash at start), loses its status and exits 127, which reads as a
    missing program. In the shell's group it finds the status; the runner alone is signalled,
    as it has no children. Older toyboxes and busybox lack the flag, and the race."""
    argv = runner_argv(f"{runner_dir.rstrip('/')}/edgepack-runner", model, inputs_dir,
                       output_dir, config, profile_prefix)
    limit = ["-k", "5", str(max(1, round(config.timeout_s)))]
    pin = ["taskset", config.cpu_affinity] if config.cpu_affinity else []
    return (f"LD_LIBRARY_PATH={shlex.quote(runner_dir)} timeout {FOREGROUND_IF_KNOWN} "
            f"{shlex.join([*limit, *pin, *argv])}")


# Expands to --foreground when the device's timeout accepts it, to nothing otherwise.
FOREGROUND_IF_KNOWN = "$(timeout --foreground 1 true 2>/dev/null && echo --foreground)"


def _binary(runner: RunnerBuild | Path) -> Path:
    return runner.binary if isinstance(runner, RunnerBuild) else Path(runner)


def run_local(
    runner: RunnerBuild | Path,
    model: Path,
    inputs_dir: Path,
    output_dir: Path | None,
    config: RunConfig,
    profile_prefix: str | None = None,
    wrapper: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> RunnerResult:
    """Run the runner on a bundle's model and one test set; raise EdgepackError (exit 3) when it
    fails, with its own error message."""
    if config.profile and profile_prefix is None and output_dir is not None:
        profile_prefix = str(Path(output_dir) / "onnxruntime_profile")
    if output_dir is not None:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
    argv = [*wrapper, *runner_argv(_binary(runner), model, inputs_dir, output_dir, config,
                                   profile_prefix)]
    preexec = None
    if config.cpu_affinity:
        cpus = parse_cpu_mask(config.cpu_affinity) & os.sched_getaffinity(0)
        if not cpus:
            raise EdgepackError(f"cpu affinity {config.cpu_affinity} selects none of this "
                                f"machine's CPUs ({sorted(os.sched_getaffinity(0))})")

        def preexec() -> None:
            os.sched_setaffinity(0, cpus)

    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, errors="replace", timeout=config.timeout_s,
            env=env, preexec_fn=preexec,
        )
    except subprocess.TimeoutExpired:
        raise EdgepackError(f"the runner did not finish within {config.timeout_s:g} s",
                            ExitCode.DEVICE) from None
    except OSError as exc:
        raise EdgepackError(f"cannot start {argv[0]}: {exc.strerror or exc}",
                            ExitCode.DEVICE) from None
    return parse_runner_output(proc.stdout, proc.returncode, proc.stderr)


@dataclass(frozen=True)
class RunnerVersion:
    runner_version: str
    target: str
    onnxruntime_version: str
    ort_api_version: int
    available_providers: list[str]


def parse_version_output(stdout: str, exit_code: int, stderr: str = "") -> RunnerVersion:
    """Read `edgepack-runner --version`: a JSON document with status "version"."""
    try:
        doc = json.loads(stdout.strip())
    except json.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict) or doc.get("schema") != RUNNER_SCHEMA:
        tail = " | ".join(ln for ln in stderr.strip().splitlines()[-5:] if ln.strip())
        raise EdgepackError(f"the runner does not start (exit {exit_code})"
                            + (f": {tail}" if tail else ""), ExitCode.DEVICE)
    if doc.get("status") != "version":
        parse_runner_output(stdout, exit_code, stderr)  # raises with the runner's own message
        raise EdgepackError("the runner answered --version with a run report", ExitCode.DEVICE)
    return RunnerVersion(
        runner_version=str(doc["runner_version"]),
        target=str(doc.get("target", "unknown")),
        onnxruntime_version=str(doc["onnxruntime_version"]),
        ort_api_version=int(doc["ort_api_version"]),
        available_providers=[str(p) for p in doc.get("available_providers", [])],
    )


def probe(runner: RunnerBuild | Path, wrapper: Sequence[str] = (),
          timeout_s: float = 60.0) -> RunnerVersion:
    """Start the runner with --version: proves it loads its library here."""
    argv = [*wrapper, str(_binary(runner)), "--version"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, errors="replace",
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise EdgepackError(f"the runner did not answer --version within {timeout_s:g} s",
                            ExitCode.DEVICE) from None
    except OSError as exc:
        raise EdgepackError(f"cannot start {argv[0]}: {exc.strerror or exc}",
                            ExitCode.DEVICE) from None
    return parse_version_output(proc.stdout, proc.returncode, proc.stderr)


# onnxruntime's provider names -> edgepack's --ep names.
PROVIDER_NAMES = {
    "CPUExecutionProvider": "cpu",
    "XnnpackExecutionProvider": "xnnpack",
    "NnapiExecutionProvider": "nnapi",
    "CoreMLExecutionProvider": "coreml",
    "AzureExecutionProvider": "azure",
}

# Every onnxruntime library carries every provider's *name* (GetAllExecutionProviderNames), so
# a name proves nothing. These strings come from a provider's own code, compiled in only when the
# library was built with it: XNNPACK's EP throws the first, NNAPI's loader looks up the second
# from libneuralnetworks.so. Checked against onnxruntime-android 1.29 (both present) and the
# Linux x64 and aarch64 1.32 libraries (neither).
_PROVIDER_MARKERS = {
    "xnnpack": b"XNNPACK initialization failed",
    "nnapi": b"ANeuralNetworksModel_create",
}


@dataclass(frozen=True)
class RunnerProviders:
    """The execution providers a runner build's onnxruntime library has."""

    providers: list[str]  # edgepack's names: cpu, xnnpack, nnapi, ...
    how: str  # "asked the runner (--version)" or "read from the library (cannot run here)"


def build_providers(build: RunnerBuild) -> RunnerProviders:
    """Ask the runner when it runs on this machine; otherwise read its library's contents."""
    from edgepack.runner.cache import find_runner

    if build.target == "host" and find_runner("host") is not None:
        try:
            version = probe(build)
            names = [PROVIDER_NAMES.get(p, p) for p in version.available_providers]
            return RunnerProviders(names, "asked the runner (--version)")
        except EdgepackError:
            pass  # a broken build: its library can still be read
    library = next((build.directory / f.name for f in build.files
                    if f.name.startswith("libonnxruntime")), None)
    if library is None or not library.is_file():
        return RunnerProviders([], "no onnxruntime library in the build")
    data = library.read_bytes()
    names = ["cpu"] + [ep for ep, marker in _PROVIDER_MARKERS.items() if marker in data]
    return RunnerProviders(names, "read from its library (it cannot run here)")
