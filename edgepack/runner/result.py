"""What a run asks for (RunConfig) and what a runner reports (RunnerResult).

The native runner prints exactly one JSON document on stdout, success or error, and the Python
engine produces the same document, so everything downstream (compare, history, reports) sees one
shape whoever ran the model. `RUNNER_SCHEMA` versions that document; the runner's sources under
device_scripts/runner/ print the same string.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from edgepack.errors import EdgepackError, ExitCode

RUNNER_SCHEMA = "edgepack-runner/1"

# The native runner's providers, and the browser's (onnxruntime-web's backends, and ONNX.js):
# one --ep option for both, each refused where it cannot run (`check_ep_place`).
NATIVE_EPS = ("cpu", "xnnpack", "nnapi")
BROWSER_EPS = ("wasm", "webgl", "webgpu", "onnxjs")
EXECUTION_PROVIDERS = NATIVE_EPS + BROWSER_EPS
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")

# What a result's peak RSS figures cover. The native runner's VmHWM is its whole process; the
# Python engine's process holds the interpreter, numpy and edgepack too, so it reports what the
# session added instead, and the two must never be set side by side as if alike.
RSS_PROCESS = "process"
RSS_SESSION_GROWTH = "session growth"

# The runner's exit codes; each has its own `error.kind` in the JSON document.
RUNNER_EXIT_CODES = {
    2: "bad_arguments",
    3: "model_load",
    4: "input_mismatch",
    5: "run_failure",
    6: "output_write",
}

# The error kind a virtual device's injected fault reports when it does not fit the model it
# meets (`--runner-fault perturb:NODE:REL` and a model without NODE): the user's fault
# configuration is wrong, not the device, so it is bad input (exit 2), reported as its message.
FAULT_MISFIT_KIND = "fault_misfit"


def parse_cpu_mask(text: str) -> frozenset[int]:
    """A taskset mask in hex ("f0" or "0xf0": CPUs 4-7) -> the CPU numbers it selects."""
    m = re.fullmatch(r"(?:0[xX])?([0-9a-fA-F]+)", text.strip())
    value = int(m.group(1), 16) if m else 0
    if value == 0:
        raise EdgepackError(
            f"cpu affinity {text!r} is not a CPU mask: give taskset's hex mask, e.g. f0 for "
            "CPUs 4-7 (often a big.LITTLE phone's big cores)"
        )
    return frozenset(i for i in range(value.bit_length()) if value >> i & 1)


def check_ep_place(ep: str, browser: bool) -> None:
    """A provider asked of the wrong kind of device fails before anything starts, exit 2.

    `cpu` runs everywhere: in the browser it is onnxruntime-web's WASM backend, the CPU provider
    of its WebAssembly build (ort-web itself takes "cpu" and "wasm" as one), so a bench over
    host and browser compares like with like under the default --ep."""
    if browser and ep in NATIVE_EPS and ep != "cpu":
        raise EdgepackError(f"--ep {ep} runs in the native runner, not in a browser: choose one "
                            f"of cpu, {', '.join(BROWSER_EPS)} for --device browser",
                            ExitCode.BAD_INPUT)
    if not browser and ep in BROWSER_EPS:
        raise EdgepackError(f"--ep {ep} runs in a browser: pass --device browser",
                            ExitCode.BAD_INPUT)


@dataclass(frozen=True)
class RunConfig:
    """How to run a bundle: the knobs both engines and every device share."""

    warmup: int = 1
    iterations: int = 10
    min_seconds: float | None = None
    threads: int = 1
    ep: str = "cpu"
    nnapi_fp16: bool = False
    nnapi_cpu_disabled: bool = False
    optimization: str = "all"
    profile: bool = False
    timeout_s: float = 600.0
    cpu_affinity: str | None = None  # taskset's hex mask, e.g. "f0"

    def __post_init__(self) -> None:
        if self.ep not in EXECUTION_PROVIDERS:
            raise EdgepackError(
                f"unknown execution provider {self.ep!r}: "
                f"choose one of {', '.join(EXECUTION_PROVIDERS)}"
            )
        if self.optimization not in OPTIMIZATION_LEVELS:
            raise EdgepackError(
                f"unknown optimization level {self.optimization!r}: "
                f"choose one of {', '.join(OPTIMIZATION_LEVELS)}"
            )
        if self.warmup < 0 or self.iterations < 1 or self.threads < 0:
            raise EdgepackError("--warmup must be >= 0, --iterations >= 1 and --threads >= 0")
        if self.timeout_s <= 0:
            raise EdgepackError("--timeout must be more than 0 seconds")
        if self.cpu_affinity is not None:
            parse_cpu_mask(self.cpu_affinity)

    def runner_args(self) -> list[str]:
        """The runner's arguments for these settings; the caller adds the paths."""
        args = [
            "--warmup", str(self.warmup),
            "--threads", str(self.threads),
            "--ep", self.ep,
            "--optimization", self.optimization,
        ]
        if self.min_seconds is not None:
            args += ["--min-seconds", repr(float(self.min_seconds))]
        else:
            args += ["--iterations", str(self.iterations)]
        if self.nnapi_fp16:
            args.append("--nnapi-fp16")
        if self.nnapi_cpu_disabled:
            args.append("--nnapi-cpu-disabled")
        return args


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: list[int | str | None]


@dataclass(frozen=True)
class RunnerError:
    kind: str
    message: str


@dataclass(frozen=True)
class RunnerResult:
    """One runner invocation: timings, memory and what went in and out."""

    runner_version: str
    onnxruntime_version: str
    engine: str  # "native" or "python"
    ep_requested: str
    ep_used: str
    threads: int  # as asked: 0 is onnxruntime's default
    optimization: str
    session_create_ms: float
    first_inference_ms: float
    latencies_ms: list[float]
    peak_rss_kb_after_load: int | None
    peak_rss_kb_end: int | None
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    ep_fallback_reason: str | None = None
    profile_file: str | None = None
    # The intra-op threads the session ran the model on, measured (its pool's threads plus the
    # calling thread); None when the platform does not tell.
    threads_used: int | None = None
    peak_rss_scope: str = RSS_PROCESS  # what peak_rss_kb_* cover: RSS_PROCESS or RSS_SESSION_GROWTH
    extra: dict[str, Any] = field(default_factory=dict)

    def threads_text(self) -> str:
        """The threads as reports show them: the measured figure, and what was asked when that
        differs (--threads 0 asks for onnxruntime's default)."""
        asked = "onnxruntime's default" if self.threads == 0 else str(self.threads)
        if self.threads_used is None:
            return asked
        if self.threads_used == self.threads:
            return str(self.threads_used)
        return f"{self.threads_used} (asked {asked})"

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["schema"] = RUNNER_SCHEMA
        doc["status"] = "ok"
        return doc

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)


def parse_runner_output(stdout: str, exit_code: int, stderr: str = "") -> RunnerResult:
    """Parse the runner's stdout; raise EdgepackError (exit 3) for errors and garbage.

    The runner's stdout is one JSON document; anything else means it crashed or was killed, and
    the tail of its stderr is the best explanation we have.
    """
    doc: Any = None
    try:
        doc = json.loads(stdout)
    except json.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict) or doc.get("schema") != RUNNER_SCHEMA:
        raise EdgepackError(
            f"the runner exited with {_describe_exit(exit_code)} and no report"
            + _stderr_tail(stderr),
            ExitCode.DEVICE,
        )
    if doc.get("status") != "ok":
        err = doc.get("error") or {}
        if err.get("kind") == FAULT_MISFIT_KIND:
            raise EdgepackError(str(err.get("message", "")), ExitCode.BAD_INPUT)
        raise EdgepackError(
            f"runner failed ({err.get('kind', 'unknown')}): {err.get('message', 'no message')}",
            ExitCode.DEVICE,
        )
    try:
        return RunnerResult(
            runner_version=str(doc["runner_version"]),
            onnxruntime_version=str(doc["onnxruntime_version"]),
            engine=str(doc.get("engine", "native")),
            ep_requested=str(doc["ep_requested"]),
            ep_used=str(doc["ep_used"]),
            threads=int(doc["threads"]),
            optimization=str(doc["optimization"]),
            session_create_ms=float(doc["session_create_ms"]),
            first_inference_ms=float(doc["first_inference_ms"]),
            latencies_ms=[float(x) for x in doc["latencies_ms"]],
            peak_rss_kb_after_load=_opt_int(doc.get("peak_rss_kb_after_load")),
            peak_rss_kb_end=_opt_int(doc.get("peak_rss_kb_end")),
            inputs=[TensorInfo(t["name"], t["dtype"], list(t["shape"])) for t in doc["inputs"]],
            outputs=[TensorInfo(t["name"], t["dtype"], list(t["shape"])) for t in doc["outputs"]],
            ep_fallback_reason=doc.get("ep_fallback_reason"),
            profile_file=doc.get("profile_file"),
            threads_used=_opt_int(doc.get("threads_used")),
            # Runners from before the field measured their whole process, as they still do.
            peak_rss_scope=str(doc.get("peak_rss_scope", RSS_PROCESS)),
            extra={k: v for k, v in doc.items() if k not in _KNOWN_KEYS},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise EdgepackError(f"the runner's report is malformed ({exc!r})", ExitCode.DEVICE) from exc


_KNOWN_KEYS = {
    "schema", "status", "runner_version", "onnxruntime_version", "engine", "ep_requested",
    "ep_used", "threads", "optimization", "session_create_ms", "first_inference_ms",
    "latencies_ms", "peak_rss_kb_after_load", "peak_rss_kb_end", "inputs", "outputs",
    "ep_fallback_reason", "profile_file", "threads_used", "peak_rss_scope",
}


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _describe_exit(code: int) -> str:
    if code < 0:
        import signal

        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    if code > 128:
        # A shell reports a killed child as 128 + signal number.
        import signal

        try:
            return f"code {code} (signal {signal.Signals(code - 128).name})"
        except ValueError:
            pass
    return f"code {code}"


def _stderr_tail(stderr: str, lines: int = 10) -> str:
    tail = [line for line in stderr.strip().splitlines() if line.strip()][-lines:]
    return (": " + " | ".join(tail)) if tail else ""
