"""A model run in headless Chromium: onnxruntime-web (wasm, webgl, webgpu) or ONNX.js.

open_browser() starts a loopback WebServer and Debian's Chromium through Playwright (pointed at
the system executable; Playwright gives it a fresh temporary --user-data-dir), and stops both on
every path: normal exit, an exception, Ctrl-C and SIGTERM (a handler turns SIGTERM into
SystemExit so context managers unwind; the previous handler comes back afterwards). When
Playwright cannot close Chromium (it was mid-call when the signal came), the browser's process
tree is killed by pid.

Browser.run() opens a fresh browser context and page per call, because onnxruntime-web reads
numThreads once, when its WASM module first initialises in a page; the page (page/harness.mjs)
runs the native runner's protocol with performance.now() and posts every output back as raw
bytes.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepack.errors import EdgepackError, ExitCode, short
from edgepack.web.runtime import ONNXJS, ORT_WEB, WebRuntime, web_runtime
from edgepack.web.server import WebServer

if TYPE_CHECKING:
    import numpy as np

Log = Callable[[str], None]

WEB_EPS = ("wasm", "webgl", "webgpu", "onnxjs")
CHROMIUM_ARGS = (
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    # No GPU here: WebGL goes through SwiftShader, Chromium's software renderer.
    "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
    # WebGPU is offered where Chromium can find an adapter; without a GPU it finds none.
    "--enable-unsafe-webgpu",
)
ORT_WEB_MAX_IR = 13  # onnxruntime-web 1.30.0: "max supported IR version: 13"
# IR 14 added only FLOAT6E2M3, FLOAT6E3M2 and TypeProto.Opaque outside ONNX-ML: a model that
# uses none of them means the same under IR 13.
_IR14_ONLY_TYPES = {27, 28}
WASM32_LIMIT = 4 << 30  # a wasm32 module's whole memory
ONNXJS_INLINE_LIMIT = 256 << 20  # ONNX.js parses the whole protobuf in JS
WATCHDOG_GRACE_S = 3.0  # after a run's timeout, before its renderer is killed

ORT_DTYPES = frozenset({"float32", "float64", "float16", "int8", "uint8", "int16", "uint16",
                        "int32", "uint32", "int64", "uint64", "bool"})
ONNXJS_DTYPES = frozenset({"float32", "int32", "bool"})

# The files each backend's page loads from the package's dist/, and nothing else.
_ORT_WASM = ("ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
_ORT_JSEP = ("ort-wasm-simd-threaded.jsep.mjs", "ort-wasm-simd-threaded.jsep.wasm",
             "ort-wasm-simd-threaded.asyncify.mjs", "ort-wasm-simd-threaded.asyncify.wasm")
_ORT_FILES = {
    "wasm": ("ort.wasm.min.mjs", *_ORT_WASM),
    "webgl": ("ort.webgl.min.mjs", *_ORT_WASM),
    "webgpu": ("ort.webgpu.min.mjs", *_ORT_JSEP),
}
_ONNXJS_FILES = ("onnx.min.js", "onnx-wasm.wasm", "onnx-worker.js")


def _quiet(_: str) -> None:
    pass


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# onnxruntime's log prefix: "2026-11-30 07:00:14.185670 [W:onnxruntime:, model.cc:236 Model] "
_ORT_LOG = re.compile(r"^\S+ \S+ \[(\w):onnxruntime:[^\]]*\] ")
_EP_UNUSED = re.compile(r"(\w+)ExecutionProvider cannot be used with this model (.*)")


def console_notes(lines: list[str]) -> tuple[list[str], str | None]:
    """The page's console errors as notes (colour codes and log stamps gone, each said once),
    and the reason when onnxruntime says the provider asked for ran nothing: it logs that and
    runs the whole model on its CPU provider, which must not be reported as the GPU's run."""
    notes: list[str] = []
    fallback = None
    for line in lines:
        text = _ORT_LOG.sub("", _ANSI.sub("", line)).strip()
        m = _EP_UNUSED.search(text)
        if m and m.group(1) != "Cpu":
            fallback = f"onnxruntime-web's {m.group(1)} provider cannot be used with this " \
                       f"model {m.group(2).rstrip('.')}; it ran on wasm"
        note = f"console: {text}"
        if text and note not in notes:
            notes.append(note)
    return notes, fallback


class WebRunError(EdgepackError):
    """A browser run that failed, with what kind of failure: "unsupported_op", "model_load",
    "run", "ep_unavailable", "too_large", "page_crash" or "timeout"."""

    KINDS = ("unsupported_op", "model_load", "run", "ep_unavailable", "too_large",
             "page_crash", "timeout")

    def __init__(self, kind: str, message: str, exit_code: ExitCode = ExitCode.DEVICE) -> None:
        super().__init__(" ".join(message.split()), exit_code)
        self.kind = kind


@dataclass(frozen=True)
class BrowserInfo:
    chromium: str  # version, e.g. "156.0.8078.108"
    executable: str
    user_agent: str
    hardware_concurrency: int
    cross_origin_isolated: bool
    webgl: str | None  # the WebGL renderer's name, None when WebGL is unavailable
    webgpu: str | None  # the WebGPU adapter, None when unavailable
    webgpu_reason: str | None  # why not, as Chromium says
    pid: int | None  # the browser process
    user_data_dir: str | None


@dataclass(frozen=True)
class WebRun:
    runtime: str
    runtime_version: str
    ep_requested: str
    ep_used: str
    threads: int  # as asked; 0: the runtime's default
    threads_used: int | None  # what the runtime ran with, when known
    session_create_ms: float
    first_inference_ms: float
    latencies_ms: list[float]
    outputs: list[dict[str, np.ndarray]]  # per input set, in the model's output order
    js_heap_bytes: int | None
    peak_rss_kb: int | None  # renderer process VmHWM
    notes: list[str] = field(default_factory=list)
    # Why the provider asked for ran nothing (onnxruntime-web logs it and carries on on the
    # CPU); ep_used is then "wasm".
    ep_fallback_reason: str | None = None


# ------------------------------------------------------------------------------ Chromium


def find_chromium(chromium: str | None = None) -> str:
    """The Chromium executable: the argument, EDGEPACK_CHROMIUM, /usr/bin/chromium, or
    `chromium` on PATH. EdgepackError(DEVICE) naming what to install when there is none."""
    wanted = chromium or os.environ.get("EDGEPACK_CHROMIUM")
    if wanted:
        path = Path(wanted)
        found = str(path) if path.is_file() and os.access(path, os.X_OK) else shutil.which(wanted)
        if not found:
            raise EdgepackError(f"no Chromium at {wanted}: install Debian's chromium "
                                "(apt-get install chromium) or point EDGEPACK_CHROMIUM at one",
                                ExitCode.DEVICE)
        return found
    for candidate in ("/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise EdgepackError("no Chromium found (not /usr/bin/chromium, not on PATH): install "
                        "Debian's chromium (apt-get install chromium) or set EDGEPACK_CHROMIUM",
                        ExitCode.DEVICE)


@contextmanager
def _signals_unwind() -> Iterator[None]:
    """SIGTERM raises SystemExit(143) while the browser is open, so every `with` unwinds and the
    server and Chromium stop; SIGINT already raises KeyboardInterrupt. Only the main thread can
    set handlers; elsewhere the caller's own handling applies."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _descendants(pid: int) -> list[int]:
    """Every live process below `pid`, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the fields follow the last ')'.
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode("utf-8", "replace").split("\0")
    except OSError:
        return []


def vm_hwm_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _kill_chromium(pids: list[int]) -> None:
    """SIGKILL those of `pids` still alive and still Chromium (a pid may be reused)."""
    for pid in pids:
        if "chromium" in " ".join(_cmdline(pid)):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


# ------------------------------------------------------------------------------ open_browser


@contextmanager
def open_browser(chromium: str | None = None, log: Log = _quiet) -> Iterator[Browser]:
    """A loopback server and headless Chromium, both stopped on every path."""
    executable = find_chromium(chromium)
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise EdgepackError("the browser target needs Playwright for Python "
                            "(pip install playwright); it drives the system Chromium",
                            ExitCode.DEVICE) from None
    with ExitStack() as stack:
        stack.enter_context(_signals_unwind())
        server = stack.enter_context(WebServer())
        page_dir = resources.files("edgepack.web") / "page"
        for name in ("index.html", "harness.mjs"):
            server.register(f"page/{name}", (page_dir / name).read_bytes())
        holder: dict[str, Any] = {}

        def stop() -> None:
            # Playwright first; whatever it could not stop (it may have been mid-call when a
            # signal came) is killed by pid, and the profile directory removed. Each step runs
            # whatever the one before did, a second signal included.
            browser_pid = holder.get("pid")
            tree = [browser_pid, *_descendants(browser_pid)] if browser_pid else []
            steps: list[Callable[[], object]] = []
            if "browser" in holder:
                steps.append(holder["browser"].close)
            if "playwright" in holder:
                steps.append(holder["playwright"].stop)
            steps.append(lambda: _kill_chromium(tree))
            udd = holder.get("user_data_dir")
            if udd and Path(udd).name.startswith("playwright_chromiumdev_profile-"):
                steps.append(lambda: shutil.rmtree(udd, ignore_errors=True))
            for step in steps:
                try:
                    step()
                except BaseException:  # noqa: BLE001, S110 - stopping goes on regardless
                    pass

        stack.callback(stop)
        try:
            pw = sync_playwright().start()
            holder["playwright"] = pw
            log(f"starting headless Chromium ({executable})")
            browser = pw.chromium.launch(
                executable_path=executable, headless=True, args=list(CHROMIUM_ARGS),
                handle_sigint=False, handle_sigterm=False, handle_sighup=False,
                timeout=60_000,
            )
        except PlaywrightError as exc:
            raise EdgepackError(f"Chromium ({executable}) did not start: {short(exc)}",
                                ExitCode.DEVICE) from None
        holder["browser"] = browser
        try:
            cdp = browser.new_browser_cdp_session()
            pid, udd = _browser_process(cdp)
            holder["pid"], holder["user_data_dir"] = pid, udd
            handle = Browser(browser, cdp, server, executable, log, pid, udd)
        except PlaywrightError as exc:
            raise EdgepackError(f"Chromium ({executable}) started but cannot load edgepack's "
                                f"page: {short(exc)}", ExitCode.DEVICE) from None
        yield handle


def _browser_process(cdp: Any) -> tuple[int | None, str | None]:
    try:
        infos = cdp.send("SystemInfo.getProcessInfo")["processInfo"]
    except Exception:  # noqa: BLE001 - a figure we can go without
        return None, None
    pid = next((int(p["id"]) for p in infos if p.get("type") == "browser"), None)
    udd = None
    if pid is not None:
        for arg in _cmdline(pid):
            if arg.startswith("--user-data-dir="):
                udd = arg.split("=", 1)[1]
    return pid, udd


# ------------------------------------------------------------------------------ Browser


@dataclass(frozen=True)
class _Model:
    """What the page loads: the model (maybe a rewritten copy) and its external data files."""

    model: Path
    external: list[tuple[str, Path]]  # (location as the model names it, the file)
    inputs: list[str]  # the graph's inputs that are not initializers, in order
    n_outputs: int
    notes: list[str]


class Browser:
    def __init__(self, browser: Any, cdp: Any, server: WebServer, executable: str, log: Log,
                 pid: int | None, user_data_dir: str | None) -> None:
        self._browser = browser
        self._cdp = cdp
        self._server = server
        self._log = log
        self._lock = threading.Lock()
        self._runs = itertools.count(1)
        self._runtimes: dict[str, WebRuntime] = {}
        self._registered: set[tuple[str, str]] = set()
        self.server = server
        self.info = self._probe(executable, pid, user_data_dir)

    # -------------------------------------------------------------- the browser's abilities

    def _probe(self, executable: str, pid: int | None, udd: str | None) -> BrowserInfo:
        context = self._browser.new_context()
        try:
            page = context.new_page()
            page.goto(self._server.url("page/index.html"))
            page.wait_for_function("() => window.edgepackReady === true", timeout=30_000)
            probe = page.evaluate("() => window.edgepackProbe()")
        finally:
            context.close()
        return BrowserInfo(
            chromium=self._browser.version, executable=executable,
            user_agent=probe["userAgent"],
            hardware_concurrency=int(probe["hardwareConcurrency"] or 0),
            cross_origin_isolated=bool(probe["crossOriginIsolated"]),
            webgl=probe["webgl"], webgpu=probe["webgpu"], webgpu_reason=probe["webgpuReason"],
            pid=pid, user_data_dir=udd,
        )

    # -------------------------------------------------------------- runtime files

    def _runtime(self, ep: str) -> tuple[WebRuntime, str, str]:
        """The runtime for `ep`, its entry script's URL path and the directory URL path of its
        files, registering (once) only the files that backend's page loads."""
        name = ONNXJS if ep == "onnxjs" else ORT_WEB
        runtime = self._runtimes.get(name)
        if runtime is None:
            runtime = self._runtimes[name] = web_runtime(name, self._log)
        base = f"rt/{runtime.name}-{runtime.version}/dist/"
        files = _ONNXJS_FILES if ep == "onnxjs" else _ORT_FILES[ep]
        for file in files:
            if (name, file) in self._registered:
                continue
            path = runtime.root / "dist" / file
            if not path.is_file():
                raise EdgepackError(f"{runtime.name} {runtime.version} in the cache has no "
                                    f"dist/{file}: delete {runtime.root.parent} and retry",
                                    ExitCode.DEVICE)
            self._server.register(base + file, path)
            self._registered.add((name, file))
        return runtime, self._server.path(base + files[0]), self._server.path(base)

    # -------------------------------------------------------------- run

    def run(self, model: Path, inputs: list[dict[str, np.ndarray]], *, ep: str = "wasm",
            threads: int = 1, warmup: int = 0, iterations: int = 1,
            min_seconds: float | None = None, timeout_s: float = 600.0,
            external_data: Path | None = None) -> WebRun:
        """Run `model` on every input set in a fresh page; see the module docstring."""
        if ep not in WEB_EPS:
            raise EdgepackError(f"--ep {ep}: the browser offers {', '.join(WEB_EPS)}",
                                ExitCode.BAD_INPUT)
        if threads < 0 or warmup < 0 or iterations < 1:
            raise EdgepackError("threads and warm-up must be >= 0 and iterations >= 1",
                                ExitCode.BAD_INPUT)
        if min_seconds is not None and min_seconds <= 0:
            raise EdgepackError("min_seconds must be > 0", ExitCode.BAD_INPUT)
        if not inputs:
            raise EdgepackError("a browser run needs at least one input set", ExitCode.BAD_INPUT)
        model = Path(model)
        if not model.is_file():
            raise EdgepackError(f"{model}: no such model file", ExitCode.BAD_INPUT)
        runtime_name = ONNXJS if ep == "onnxjs" else ORT_WEB
        allowed = ONNXJS_DTYPES if ep == "onnxjs" else ORT_DTYPES
        for index, feeds in enumerate(inputs):
            for name, array in feeds.items():
                if array.dtype.name not in allowed:
                    raise WebRunError("unsupported_op",
                                      f"input {name!r} (set {index}) is {array.dtype.name}: "
                                      f"{runtime_name} takes only {', '.join(sorted(allowed))} "
                                      "input tensors")
        with self._lock, tempfile.TemporaryDirectory(prefix="edgepack-web-run-") as tmp:
            prepared = _prepare_model(model, external_data, ep, Path(tmp))
            runtime, entry, dist = self._runtime(ep)
            return self._run(prepared, inputs, runtime, entry, dist, ep=ep, threads=threads,
                             warmup=warmup, iterations=iterations, min_seconds=min_seconds,
                             timeout_s=timeout_s)

    def _run(self, prepared: _Model, inputs: list[dict[str, np.ndarray]], runtime: WebRuntime,
             entry: str, dist: str, *, ep: str, threads: int, warmup: int, iterations: int,
             min_seconds: float | None, timeout_s: float) -> WebRun:
        import numpy as np
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        run_id = f"r{next(self._runs)}"
        srv = self._server
        notes = list(prepared.notes)
        try:
            model_url = srv.register(f"{run_id}/{prepared.model.name}", prepared.model,
                                     "application/octet-stream")
            external = [{"path": location,
                         "data": srv.register(f"{run_id}/ext{i}/{Path(location).name}", path,
                                              "application/octet-stream")}
                        for i, (location, path) in enumerate(prepared.external)]
            sets = []
            for s, feeds in enumerate(inputs):
                described = []
                # In the model's input order: ONNX.js binds a list of tensors by position.
                ordered = sorted(feeds.items(), key=lambda item: _position(prepared.inputs,
                                                                           item[0]))
                for i, (name, array) in enumerate(ordered):
                    raw = np.ascontiguousarray(array)
                    if raw.dtype.byteorder == ">":
                        raw = raw.astype(raw.dtype.newbyteorder("<"))
                    url = srv.register(f"{run_id}/in/{s}-{i}.bin", raw.tobytes())
                    described.append({"name": name, "dtype": array.dtype.name,
                                      "dims": [int(d) for d in array.shape], "url": url})
                sets.append(described)
            onnxjs_backend = None
            if ep == "onnxjs":
                onnxjs_backend = "webgl" if self.info.webgl else "cpu"
                notes.append(f"ONNX.js backend: {onnxjs_backend}")
            if ep in ("webgl",) or onnxjs_backend == "webgl":
                notes.append(f"WebGL renderer: {self.info.webgl or 'none'}; timings are a "
                             "software renderer's when it is SwiftShader")
            config = {
                "runtime": runtime.name, "runtimeUrl": entry, "wasmPaths": dist, "ep": ep,
                "onnxjsBackend": onnxjs_backend, "threads": threads, "modelUrl": model_url,
                "externalData": external, "inputs": sets, "warmup": warmup,
                "iterations": iterations, "minSeconds": min_seconds,
                "resultPath": srv.path("result/"), "resultKey": run_id,
            }
            # One result slot per output per input set: the page can post nothing else.
            for s in range(len(inputs)):
                for position in range(prepared.n_outputs):
                    srv.open_slot(f"{run_id}-{s}-{position}")
            result, workers, rss, console = self._drive(config, timeout_s)
        except (PlaywrightError, PlaywrightTimeout) as exc:
            raise WebRunError("run", f"the browser failed: {short(exc)}") from None
        finally:
            srv.unregister(f"{run_id}/")
            srv.close_slots(f"{run_id}-")
        if not result.get("ok"):
            kind = result.get("kind") or "run"
            message = result.get("message") or "the page reported a failure"
            if kind == "ep_unavailable" and ep == "webgpu" and self.info.webgpu_reason:
                message = f"{message} ({self.info.webgpu_reason})"
            raise WebRunError(kind, f"{runtime.name} {runtime.version} ({ep}): {message}")

        outputs: list[dict[str, np.ndarray]] = []
        for metas in result["outputs"]:
            arrays: dict[str, np.ndarray] = {}
            for meta in metas:
                arrays[meta["name"]] = meta["array"]
            outputs.append(arrays)
        threads_used = None
        # onnxruntime-web's WebGL backend computes in shaders, not in the WASM module.
        if runtime.name == ORT_WEB and ep != "webgl":
            chosen = result.get("numThreads")
            if isinstance(chosen, int) and chosen > 0:
                chosen = chosen if result.get("crossOriginIsolated") else 1
                # Measured: onnxruntime-web's WASM threads are the page thread plus one web
                # worker per extra thread; the page starts no other workers.
                threads_used = workers + 1 if workers is not None else chosen
                if threads_used != chosen:
                    notes.append(f"onnxruntime-web was set to {chosen} threads, yet "
                                 f"{threads_used} ran (page thread + {workers} workers)")
            if threads == 0 and threads_used is not None:
                notes.append(f"threads 0: onnxruntime-web chose {chosen} "
                             f"(min(4, ceil({result.get('hardwareConcurrency')} cores / 2)))")
        if not result.get("crossOriginIsolated"):
            notes.append("the page was not cross-origin isolated: WASM ran on one thread")
        said, fallback = console_notes(console)
        notes.extend(said)
        return WebRun(
            runtime=runtime.name, runtime_version=runtime.version, ep_requested=ep,
            ep_used="wasm" if fallback else ep, ep_fallback_reason=fallback,
            threads=threads, threads_used=threads_used,
            session_create_ms=float(result["sessionCreateMs"]),
            first_inference_ms=float(result["firstInferenceMs"]),
            latencies_ms=[float(x) for x in result["latencies"]],
            outputs=outputs, js_heap_bytes=result.get("jsHeapBytes"), peak_rss_kb=rss,
            notes=notes,
        )

    def _drive(self, config: dict[str, Any], timeout_s: float
               ) -> tuple[dict[str, Any], int | None, int | None, list[str]]:
        """Open a fresh context and page, run the harness, collect outputs and memory."""
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        srv = self._server
        deadline = time.monotonic() + timeout_s
        console: list[str] = []
        crashed: list[bool] = []
        # The backstop for a page stuck inside one call (a kernel that never returns starves
        # the page's event loop, so Playwright's own wait cannot fire): kill the renderer.
        watchdog = _Watchdog(self.info.pid, timeout_s + WATCHDOG_GRACE_S)
        context = self._browser.new_context()
        try:
            watchdog.start()
            page = context.new_page()
            page.on("crash", lambda _page: crashed.append(True))
            page.on("console", lambda msg: console.append(msg.text)
                    if msg.type == "error" and len(console) < 5 else None)
            page.on("pageerror", lambda err: console.append(str(err)) if len(console) < 5
                    else None)
            try:
                page.goto(srv.url("page/index.html"), timeout=_ms_left(deadline))
                page.wait_for_function("() => window.edgepackReady === true",
                                       timeout=_ms_left(deadline))
                page.evaluate("cfg => { window.__edgepackResult = null; "
                              "window.edgepackRun(cfg).then(r => { window.__edgepackResult = r; "
                              "}); }", config)
                page.wait_for_function("() => window.__edgepackResult !== null",
                                       polling=100, timeout=_ms_left(deadline))
                result = page.evaluate("() => window.__edgepackResult")
            except PlaywrightTimeout:
                if crashed and not watchdog.fired:
                    raise WebRunError("page_crash", "the page crashed (renderer process "
                                      "died)") from None
                raise WebRunError("timeout", f"the page did not finish within {timeout_s:g} s; "
                                  "it was closed") from None
            except PlaywrightError as exc:
                if watchdog.fired:
                    raise WebRunError("timeout", f"the page did not finish within "
                                      f"{timeout_s:g} s; its renderer was stopped") from None
                if crashed or "crash" in str(exc).lower():
                    raise WebRunError("page_crash", "the page crashed (renderer process died"
                                      f"{': ' + console[-1] if console else ''})") from None
                raise
            workers = len(page.workers)
            rss = self._renderer_hwm()
            if result.get("ok"):
                for metas in result["outputs"]:
                    for meta in metas:
                        meta["array"] = _array(srv.take_result(meta["key"]), meta)
        finally:
            watchdog.cancel()
            try:
                context.close()
            except PlaywrightError:
                pass
        return result, workers, rss, console

    def _renderer_hwm(self) -> int | None:
        """The peak RSS (VmHWM) of the renderer processes alive now: this run's page's, as
        every earlier run's context is closed (a spare renderer Chromium keeps is far
        smaller)."""
        try:
            infos = self._cdp.send("SystemInfo.getProcessInfo")["processInfo"]
        except Exception:  # noqa: BLE001 - a figure we can go without
            return None
        peaks = [vm_hwm_kb(int(p["id"])) for p in infos if p.get("type") == "renderer"]
        peaks = [p for p in peaks if p is not None]
        return max(peaks) if peaks else None


class _Watchdog:
    """Kills every renderer of the browser once `seconds` have passed, unless cancelled.
    Runs are one at a time, so those renderers are this run's page's (and maybe the spare one
    Chromium keeps ready, which it starts again). Only os.kill from this thread: Playwright's
    sync API is not thread-safe."""

    def __init__(self, browser_pid: int | None, seconds: float) -> None:
        self.fired = False
        self._pid = browser_pid
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def start(self) -> None:
        if self._pid is not None:
            self._timer.start()

    def cancel(self) -> None:
        self._timer.cancel()

    def _fire(self) -> None:
        self.fired = True
        for pid in renderer_pids(self._pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def renderer_pids(browser_pid: int | None) -> list[int]:
    """The renderer processes below Chromium's browser process."""
    if browser_pid is None:
        return []
    # Chromium rewrites its children's argv into one string: look inside it.
    return [p for p in _descendants(browser_pid) if "--type=renderer" in " ".join(_cmdline(p))]


def _position(names: list[str], name: str) -> int:
    return names.index(name) if name in names else len(names)


def _ms_left(deadline: float) -> float:
    return max(1.0, (deadline - time.monotonic()) * 1e3)


_NP_DTYPES = {"float32": "<f4", "float64": "<f8", "float16": "<f2", "int8": "i1", "uint8": "u1",
              "int16": "<i2", "uint16": "<u2", "int32": "<i4", "uint32": "<u4", "int64": "<i8",
              "uint64": "<u8", "bool": "?"}


def _array(data: bytes | None, meta: dict[str, Any]) -> np.ndarray:
    import numpy as np

    if data is None:
        raise WebRunError("run", f"output {meta['name']!r} never arrived from the page")
    code = _NP_DTYPES.get(meta["dtype"])
    if code is None:
        raise WebRunError("run", f"output {meta['name']!r} has dtype {meta['dtype']}, which "
                          "edgepack cannot read back from the browser")
    dims = [int(d) for d in meta["dims"]]
    array = np.frombuffer(data, dtype=np.dtype(code))
    if array.size != int(np.prod(dims, dtype=np.int64)):
        raise WebRunError("run", f"output {meta['name']!r}: {array.size} elements for dims "
                          f"{dims}")
    return array.reshape(dims).astype(np.dtype(code).newbyteorder("="), copy=False)


# ------------------------------------------------------------------------------ the model


def _prepare_model(model: Path, external_data: Path | None, ep: str, tmp: Path) -> _Model:
    """The model as the runtime will take it: external data files located; for onnxruntime-web
    an IR version it accepts (a copy with the IR lowered, when that changes no meaning); for
    ONNX.js, which cannot read external data, a copy with the weights inlined."""
    import onnx

    try:
        proto = onnx.load(str(model), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - onnx raises many types for a bad file
        raise WebRunError("model_load", f"{model} is not an ONNX model: {short(exc)}",
                          ExitCode.BAD_INPUT) from None
    notes: list[str] = []
    n_out = len(proto.graph.output)
    initialized = {t.name for t in proto.graph.initializer}
    names = [v.name for v in proto.graph.input if v.name not in initialized]
    locations = _external_locations(proto)
    external: list[tuple[str, Path]] = []
    for location in locations:
        if external_data is not None and (len(locations) == 1
                                          or Path(location).name == Path(external_data).name):
            path = Path(external_data)
        else:
            path = model.parent / location
        if not path.is_file():
            raise WebRunError("model_load", f"{model} keeps weights in {location}, and there is "
                              f"no {path}", ExitCode.BAD_INPUT)
        external.append((location, path))
    total = model.stat().st_size + sum(p.stat().st_size for _, p in external)

    copy = tmp / model.name
    if ep in ("onnxjs", "webgl") and external:
        # ONNX.js, and onnxruntime-web's WebGL backend (ONNX.js inside), read no external data.
        if total > ONNXJS_INLINE_LIMIT:
            raise WebRunError("too_large", f"{model} and its external data are {total} bytes: "
                              f"{'ONNX.js' if ep == 'onnxjs' else 'WebGL'} cannot read external "
                              "data and a copy with the weights inlined would exceed "
                              f"{ONNXJS_INLINE_LIMIT >> 20} MiB")
        _inline(proto, dict(external))
        external = []
        notes.append(f"{'ONNX.js' if ep == 'onnxjs' else 'the WebGL backend'} cannot read "
                     "external data: served a copy with the weights inlined")
    if ep == "onnxjs":
        if notes:
            copy.write_bytes(proto.SerializeToString())
            return _Model(copy, [], names, n_out, notes)
        return _Model(model, [], names, n_out, notes)

    if total > WASM32_LIMIT:
        raise WebRunError("too_large", f"{model} and its external data are {total} bytes: more "
                          f"than the {WASM32_LIMIT >> 30} GiB a wasm32 onnxruntime-web can hold")
    if proto.ir_version > ORT_WEB_MAX_IR:
        reason = _ir_lowering_blocker(proto)
        if reason is not None:
            raise WebRunError("model_load", f"{model} has IR version {proto.ir_version}; "
                              f"onnxruntime-web takes at most {ORT_WEB_MAX_IR}, and {reason}",
                              ExitCode.BAD_INPUT)
        notes.append(f"IR version {proto.ir_version} lowered to {ORT_WEB_MAX_IR} for "
                     "onnxruntime-web (the model uses nothing newer)")
        proto.ir_version = ORT_WEB_MAX_IR
    if notes:
        copy.write_bytes(proto.SerializeToString())
        return _Model(copy, external, names, n_out, notes)
    return _Model(model, external, names, n_out, notes)


def _graphs(graph: Any) -> Iterator[Any]:
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _graphs(attr.g)
            for sub in attr.graphs:
                yield from _graphs(sub)


def _external_locations(proto: Any) -> list[str]:
    import onnx

    found: list[str] = []
    for graph in _graphs(proto.graph):
        for tensor in graph.initializer:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                for entry in tensor.external_data:
                    if entry.key == "location" and entry.value not in found:
                        found.append(entry.value)
    return found


def _inline(proto: Any, files: dict[str, Path]) -> None:
    import onnx

    for graph in _graphs(proto.graph):
        for tensor in graph.initializer:
            if tensor.data_location != onnx.TensorProto.EXTERNAL:
                continue
            info = {e.key: e.value for e in tensor.external_data}
            offset, length = int(info.get("offset", 0)), info.get("length")
            with open(files[info["location"]], "rb") as fh:
                fh.seek(offset)
                tensor.raw_data = fh.read() if length is None else fh.read(int(length))
            del tensor.external_data[:]
            tensor.data_location = onnx.TensorProto.DEFAULT


def _ir_lowering_blocker(proto: Any) -> str | None:
    """Why the model cannot be served under IR 13, or None when lowering it is safe."""
    if proto.ir_version > 14:
        return f"IR {proto.ir_version} is newer than edgepack knows how to lower"
    found: list[str] = []

    def walk(message: Any) -> None:
        for desc, value in message.ListFields():
            if desc.name in ("elem_type", "data_type") and value in _IR14_ONLY_TYPES:
                found.append("a FLOAT6 type")
            if desc.name == "opaque_type":
                found.append("an opaque type")
            if desc.type == desc.TYPE_MESSAGE:
                # A repeated field's value is a container; a single message has ListFields.
                items = [value] if hasattr(value, "ListFields") else value
                for item in items:
                    if desc.message_type.GetOptions().map_entry:
                        continue
                    walk(item)

    walk(proto.graph)
    return f"it uses {found[0]} (new in IR 14)" if found else None


def describe(run: WebRun) -> str:
    """One line for logs."""
    lat = sorted(run.latencies_ms)
    median = lat[len(lat) // 2] if lat else float("nan")
    return (f"{run.runtime} {run.runtime_version} {run.ep_used} threads={run.threads_used} "
            f"create={run.session_create_ms:.1f} ms first={run.first_inference_ms:.2f} ms "
            f"median={median:.3f} ms over {len(lat)}")


__all__ = ["WEB_EPS", "Browser", "BrowserInfo", "WebRun", "WebRunError", "describe",
           "find_chromium", "open_browser"]
