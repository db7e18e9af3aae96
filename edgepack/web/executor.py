"""The browser as a device: the executor (edgepack.executors) of headless Chromium on this
machine, running a bundle in onnxruntime-web or ONNX.js.

`BrowserExecutor.prepare` starts one browser (and its loopback server) for the bundle and stops
both on exit, whatever happened; each `run_set` is one page (edgepack.web.browser: a fresh page
so the WASM thread count takes effect) running the native runner's protocol, and leaves the
outputs in out_dir as output_<i>.pb, as a device's pulled outputs are, so judging, the history
and the reports see the browser as one more device (serial "browser", kind "browser").

What differs from the runner, and is said in the result rather than hidden:
- `--ep cpu` runs on onnxruntime-web's WASM backend: the CPU provider of its WebAssembly build
  (ort-web takes "cpu" and "wasm" as one name), so a bench over host and browser under the
  default --ep compares the two CPUs' kernels; the result keeps "cpu" as asked and ran.
- Peak RSS is the renderer process's VmHWM, scope RSS_RENDERER: the page, V8 and the WASM heap,
  not Chromium's browser or GPU processes; the JS heap is in `extra`.
- No onnxruntime profile (the page has none to write). --optimization other than 'all' (the
  page's) and --cpu-affinity (Chromium's threads cannot be pinned) are refused, exit 2.
- A GPU backend (webgl, webgpu) the browser lacks falls back to wasm with the reason, as the
  runner falls back to its CPU provider; --strict-ep makes that a failure.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from edgepack.devices.base import DeviceInfo
from edgepack.errors import EdgepackError, ExitCode
from edgepack.executors import DeployListener, host_info, run_bundle
from edgepack.records import DeployResult, Transfer
from edgepack.runner.result import RunConfig, RunnerResult, TensorInfo, check_ep_place

if TYPE_CHECKING:
    import numpy as np

    from edgepack.bench import Target
    from edgepack.bundle import Bundle
    from edgepack.web.browser import Browser, WebRun

BROWSER = "browser"
ENGINE = "browser"
ABI = "wasm32"
# What peak_rss_kb_* cover for a browser run (see the module's docstring).
RSS_RENDERER = "renderer process"
# onnxruntime-web's GPU backends: when the browser has none, the run goes to wasm (a fallback,
# warned of, and refused by --strict-ep). ONNX.js picks its own backend (the page's).
FALLS_BACK = ("webgl", "webgpu")
# The optimization level onnxruntime-web's sessions are created with by the page.
PAGE_OPTIMIZATION = "all"


@dataclass(frozen=True)
class BrowserExecutor:
    """Headless Chromium (`chromium`: its path; None: the system's) as an executor."""

    chromium: str | None = None

    @contextmanager
    def prepare(self, bundle: Bundle, config: RunConfig,
                listener: DeployListener | None = None) -> Iterator[BrowserPrepared]:
        from edgepack.web.browser import open_browser

        check_config(config)
        listener = listener or DeployListener()
        model, external = model_files(bundle)
        with open_browser(self.chromium, log=listener.stage) as browser:
            yield BrowserPrepared(bundle, browser, browser_info(browser), model, external)


def check_config(config: RunConfig) -> None:
    """What the browser cannot do fails before it starts, exit 2."""
    check_ep_place(config.ep, browser=True)
    if config.cpu_affinity:
        raise EdgepackError(f"--cpu-affinity {config.cpu_affinity} pins the native runner; "
                            "Chromium's threads cannot be pinned: leave it out for --device "
                            "browser", ExitCode.BAD_INPUT)
    if config.optimization != PAGE_OPTIMIZATION:
        # Refused rather than ignored: the run would be stored under a key (opt=...) that
        # says what did not happen.
        raise EdgepackError(f"--optimization {config.optimization}: the browser's page builds "
                            f"onnxruntime-web sessions with '{PAGE_OPTIMIZATION}' only",
                            ExitCode.BAD_INPUT)


def model_files(bundle: Bundle) -> tuple[Path, Path | None]:
    """The bundle's ONNX graph and its external data file (init.bin), wherever they are kept
    (pushed, or host files beside a predict.ort)."""
    m = bundle.manifest.model
    if m.onnx_file is None and not m.file.endswith(".onnx"):
        raise EdgepackError(f"{bundle.path}: the bundle holds {m.file} alone (pack --format "
                            f"{m.format}); the browser runs ONNX graphs: pack it with --format "
                            "onnx or both", ExitCode.BAD_INPUT)
    model = bundle.path / (m.onnx_file or m.file)
    external = bundle.path / m.external_data if m.external_data else None
    return model, external


def web_ep(ep: str) -> str:
    """The backend the page is asked for: `cpu` is onnxruntime-web's wasm."""
    return "wasm" if ep == "cpu" else ep


@dataclass
class BrowserPrepared:
    """A running browser and a bundle's files: run_set is one page each."""

    bundle: Bundle
    browser: Browser
    info: DeviceInfo
    model: Path
    external: Path | None
    notes: list[str] = field(default_factory=list)
    engine: str = field(default=ENGINE, init=False)
    runner_target: str | None = field(default=None, init=False)
    transfer: Transfer | None = field(default=None, init=False)  # served over loopback

    def run_set(self, index: int, config: RunConfig, out_dir: Path) -> RunnerResult:
        from edgepack.tensors import write_tensor
        from edgepack.web.browser import WebRunError

        check_config(config)
        feeds = read_inputs(self.bundle, index)

        def run(ep: str) -> WebRun:
            return self.browser.run(
                self.model, [feeds], ep=ep, threads=config.threads, warmup=config.warmup,
                iterations=config.iterations, min_seconds=config.min_seconds,
                timeout_s=config.timeout_s, external_data=self.external)

        fallback = None
        try:
            web = run(web_ep(config.ep))
        except WebRunError as exc:
            # As the native runner does with a provider its device lacks: run on the CPU one
            # and say why; the result's ep_used tells, and --strict-ep makes it a failure.
            if exc.kind != "ep_unavailable" or config.ep not in FALLS_BACK:
                raise
            fallback = exc.message
            web = run("wasm")
        fallback = fallback or web.ep_fallback_reason
        outputs = web.outputs[0]
        # Written under temporary names, renamed when all are there: a run cut off between two
        # writes leaves nothing that reads as a complete set of outputs.
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for i, (name, array) in enumerate(outputs.items()):
            part = out_dir / f".output_{i}.pb.part"
            write_tensor(part, name, array)
            written.append((part, out_dir / f"output_{i}.pb"))
        for part, final in written:
            os.replace(part, final)
        self._note(config, web)
        return runner_result(config, web, feeds, outputs, fallback)

    def _note(self, config: RunConfig, web: WebRun) -> None:
        said = [f"engine: {web.runtime} {web.runtime_version} in {self.info.model} (headless), "
                "timed by performance.now() in the page"]
        if config.ep == "cpu":
            said.append("--ep cpu in the browser is onnxruntime-web's wasm backend (its CPU "
                        "provider)")
        if config.profile:
            said.append("no onnxruntime profile in the browser: the page cannot write one")
        for text in [*said, *web.notes]:
            if text not in self.notes:
                self.notes.append(text)


def read_inputs(bundle: Bundle, index: int) -> dict[str, np.ndarray]:
    """Input set `index` by the names the manifest gives its files."""
    from edgepack.tensors import read_tensor

    feeds = {}
    for f in bundle.manifest.test_sets[index].inputs:
        _, array = read_tensor(bundle.path / f.file)
        feeds[f.name] = array
    return feeds


def runner_result(config: RunConfig, web: WebRun, feeds: dict[str, np.ndarray],
                  outputs: dict[str, np.ndarray], fallback: str | None = None) -> RunnerResult:
    """A page's run as the runner's report, so compare, history and reports read it alike;
    `fallback`: why the provider asked for was unavailable (the run went to wasm)."""
    from edgepack.tensors import array_dtype

    asked = web_ep(config.ep)
    ran = config.ep if web.ep_used == asked else web.ep_used
    if ran != config.ep and fallback is None:
        fallback = f"{web.runtime} ran {web.ep_used}, not {asked}"
    return RunnerResult(
        runner_version=f"{web.runtime} {web.runtime_version}",
        onnxruntime_version=(web.runtime_version if web.runtime == "onnxruntime-web"
                             else f"none ({web.runtime} {web.runtime_version})"),
        engine=ENGINE,
        ep_requested=config.ep,
        ep_used=ran,
        threads=config.threads,
        optimization=PAGE_OPTIMIZATION,
        session_create_ms=web.session_create_ms,
        first_inference_ms=web.first_inference_ms,
        latencies_ms=list(web.latencies_ms),
        peak_rss_kb_after_load=None,
        peak_rss_kb_end=web.peak_rss_kb,
        inputs=[TensorInfo(n, array_dtype(a), list(a.shape)) for n, a in feeds.items()],
        outputs=[TensorInfo(n, array_dtype(a), list(a.shape)) for n, a in outputs.items()],
        ep_fallback_reason=fallback,
        threads_used=web.threads_used,
        peak_rss_scope=RSS_RENDERER,
        extra={"runtime": web.runtime, "runtime_version": web.runtime_version,
               "web_ep": web.ep_used, "js_heap_bytes": web.js_heap_bytes},
    )


# ---------------------------------------------------------------------------- the device's facts


def browser_info(browser: Browser) -> DeviceInfo:
    """The running browser as reports and the history show a device."""
    return _info(browser.info.chromium)


def describe_browser(chromium: str | None = None) -> DeviceInfo:
    """The browser's facts without starting it (`chromium --version`), for the bench's device
    list; a missing Chromium fails here with what to install, exit 3."""
    from edgepack.web.browser import find_chromium

    path = find_chromium(chromium)
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30,
                             check=False).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EdgepackError(f"{path} --version failed: {exc}", ExitCode.DEVICE) from None
    return _info(_version(out))


def _version(text: str) -> str:
    m = re.search(r"(\d+(?:\.\d+)+)", text or "")
    return m.group(1) if m else (text or "?").strip()


def _info(version: str) -> DeviceInfo:
    host = host_info()
    return DeviceInfo(
        serial=BROWSER,
        kind="browser",
        state="device",
        model=f"Chromium {version}",
        manufacturer="Chromium",
        abis=[ABI],
        release=f"Chromium {version} on {platform.system()} {platform.release()}",
        soc=host.soc,
        machine=host.machine,
        free_bytes=host.free_bytes,
    )


# ---------------------------------------------------------------------------- entry points


def deploy_browser(bundle: Bundle, config: RunConfig, work_dir: Path | None = None,
                   listener: DeployListener | None = None,
                   chromium: str | None = None) -> DeployResult:
    """`edgepack deploy BUNDLE --device browser`: every input set in the browser, judged."""
    return run_bundle(BrowserExecutor(chromium), bundle, config, work_dir, listener)


def browser_target(chromium: str | None = None) -> Target:
    """The browser as a bench (and ab, regress) target."""
    from edgepack.bench import executor_target

    describe: Callable[[], DeviceInfo] = lambda: describe_browser(chromium)  # noqa: E731
    return executor_target(BROWSER, BrowserExecutor(chromium), describe=describe)
