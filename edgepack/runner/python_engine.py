"""The runner's contract, fulfilled by onnxruntime's Python API on this machine.

It reads the same files and writes the same files and report as edgepack-runner, so a host run
goes through the steps a device run takes, and the two engines can be measured side by side.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np

from edgepack import __version__
from edgepack.errors import EdgepackError, ExitCode, short
from edgepack.runner.result import RunConfig, RunnerResult, TensorInfo

_PROVIDERS = {"cpu": "CPUExecutionProvider", "xnnpack": "XnnpackExecutionProvider",
              "nnapi": "NnapiExecutionProvider"}
_OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
               "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def run_python(
    model: Path, inputs_dir: Path, output_dir: Path, config: RunConfig,
    profile_prefix: str | None = None,
) -> RunnerResult:
    import onnxruntime as ort

    from edgepack.tensors import read_tensor, write_tensor

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = config.threads
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                            _OPT_LEVELS[config.optimization])
    opts.log_severity_level = 3
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    provider = _PROVIDERS[config.ep]
    fallback = None
    if provider not in ort.get_available_providers():
        fallback = (f"{provider} is not in this onnxruntime build "
                    f"(available: {', '.join(ort.get_available_providers())})")
        provider = "CPUExecutionProvider"
    t0 = time.perf_counter()
    try:
        session = ort.InferenceSession(str(model), opts, providers=[provider])
    except Exception as exc:
        raise EdgepackError(f"onnxruntime cannot load {model}: {short(exc)}",
                            ExitCode.DEVICE) from None
    session_ms = (time.perf_counter() - t0) * 1e3
    rss_after_load = _peak_rss_kb()

    model_inputs = session.get_inputs()
    feeds: dict[str, np.ndarray] = {}
    files = sorted(Path(inputs_dir).glob("input_*.pb"), key=_index)
    for position, path in enumerate(files):
        name, array = read_tensor(path)
        if not name and position < len(model_inputs):
            name = model_inputs[position].name
        feeds[name] = array
    missing = [i.name for i in model_inputs if i.name not in feeds]
    if missing:
        raise EdgepackError(f"{inputs_dir}: no value for input(s) {', '.join(missing)}",
                            ExitCode.DEVICE)

    def run() -> list[np.ndarray]:
        return session.run(None, feeds)

    try:
        t0 = time.perf_counter()
        results = run()
        first_ms = (time.perf_counter() - t0) * 1e3
        for _ in range(config.warmup):
            run()
        latencies: list[float] = []
        deadline = None if config.min_seconds is None else time.perf_counter() + config.min_seconds
        while True:
            t0 = time.perf_counter()
            results = run()
            latencies.append((time.perf_counter() - t0) * 1e3)
            if deadline is None:
                if len(latencies) >= config.iterations:
                    break
            elif time.perf_counter() >= deadline:
                break
    except Exception as exc:
        raise EdgepackError(f"onnxruntime failed to run {model}: {short(exc)}",
                            ExitCode.DEVICE) from None

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    outputs = []
    for i, (meta, array) in enumerate(zip(session.get_outputs(), results, strict=True)):
        array = np.asarray(array)
        write_tensor(output_dir / f"output_{i}.pb", meta.name, array)
        outputs.append(TensorInfo(meta.name, array.dtype.name, list(array.shape)))
    profile_file = session.end_profiling() if profile_prefix else None

    return RunnerResult(
        runner_version=__version__,
        onnxruntime_version=ort.__version__,
        engine="python",
        ep_requested=config.ep,
        ep_used=config.ep if fallback is None else "cpu",
        threads=config.threads,
        optimization=config.optimization,
        session_create_ms=session_ms,
        first_inference_ms=first_ms,
        latencies_ms=latencies,
        peak_rss_kb_after_load=rss_after_load,
        peak_rss_kb_end=_peak_rss_kb(),
        inputs=[TensorInfo(m.name, _ort_type(m.type), list(m.shape)) for m in model_inputs],
        outputs=outputs,
        ep_fallback_reason=fallback,
        profile_file=profile_file,
    )


def _ort_type(text: str) -> str:
    # onnxruntime spells element types as "tensor(float)".
    m = re.fullmatch(r"tensor\((\w+)\)", text)
    name = m.group(1) if m else text
    return {"float": "float32", "double": "float64", "float16": "float16"}.get(name, name)


def _index(path: Path) -> int:
    m = re.search(r"(\d+)$", path.stem)
    return int(m.group(1)) if m else 0


def _peak_rss_kb() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None
