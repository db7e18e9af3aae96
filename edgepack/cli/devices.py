"""Commands of the device path: devices, deploy, clean."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgepack.cli.app import app
from edgepack.cli.host import (
    ForceOpt,
    LabelsOpt,
    OutputsOpt,
    SaveImagesOpt,
    ep_checked,
    placement_noted,
    profile_dir,
    render_deploy_result,
    strict_ep_failure,
)
from edgepack.cli.options import (
    EpOpt,
    IterationsOpt,
    JsonOpt,
    MinSecondsOpt,
    OptimizationOpt,
    PlacementOpt,
    ReportOpt,
    StrictEpOpt,
    ThreadsOpt,
    WarmupOpt,
    number,
)
from edgepack.cli.render import console, emit_json, note, size
from edgepack.limits import MAX_SECONDS, MIN_TIMEOUT

if TYPE_CHECKING:
    from edgepack.devices.base import ProgressCallback

ServerOpt = Annotated[str | None, typer.Option(
    "--adb-server", help="HOST:PORT of the adb server (default: ANDROID_ADB_SERVER_HOST/PORT, "
    "else 127.0.0.1:5037).")]


def _server(text: str | None):  # noqa: ANN202 - ServerAddress, imported lazily
    from edgepack.devices.adb import ServerAddress

    return ServerAddress.parse(text) if text else ServerAddress.from_env()


@app.command()
def devices(server: ServerOpt = None, json_out: JsonOpt = False) -> None:
    """List the devices an adb server sees, with what edgepack needs to know about them."""
    from rich.table import Table

    from edgepack.devices.adb import AdbDevice, list_serials
    from edgepack.devices.base import DeviceInfo
    from edgepack.errors import EdgepackError

    address = _server(server)
    infos: list[DeviceInfo] = []
    for listed in list_serials(address):
        if listed.state != "device":
            infos.append(DeviceInfo(listed.serial, "unknown", listed.state))
            continue
        try:
            infos.append(AdbDevice(listed.serial, address).info())
        except EdgepackError:
            infos.append(DeviceInfo(listed.serial, "unknown", "unreachable"))
    providers = {d.serial: _device_providers(d) for d in infos}
    if json_out:
        from dataclasses import asdict

        emit_json([{**asdict(d), "providers": providers[d.serial]} for d in infos])
        return
    if not infos:
        console().print(f"no devices on the adb server at {address}", markup=False)
        return
    table = Table(title=f"devices on {address}", title_justify="left")
    # Android's SDK level, or a Linux board's glibc: what decides which runner builds run there.
    for col in ("serial", "state", "model", "ABIs", "SDK / glibc", "SoC", "runner", "providers",
                "free"):
        table.add_column(col)
    for d in infos:
        platform = (str(d.sdk) if d.sdk is not None
                    else f"glibc {d.glibc}" if d.glibc else "-")
        table.add_row(
            d.serial, d.state, (d.model or "-") + (" (virtual)" if d.virtual else ""),
            ",".join(d.abis) or "-", platform, d.soc or "-", d.runner_target or "-",
            ",".join(providers[d.serial] or []) or "-", size(d.free_bytes),
        )
    console().print(table)


def _device_providers(info: object) -> list[str] | None:
    """The providers of the runner this device would run (its target's build); None when
    that runner is not built, so nothing can be said."""
    from edgepack.devices.base import DeviceInfo
    from edgepack.runner.cache import find_runner
    from edgepack.runner.local import build_providers

    assert isinstance(info, DeviceInfo)
    build = find_runner(info.runner_target) if info.runner_target else None
    return build_providers(build).providers if build is not None else None


class _RichListener:
    """Progress bars for pushes and a line per stage, on stderr."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self._progress = None

    def stage(self, text: str) -> None:
        if not self.quiet:
            note(text)

    def transfer(self) -> _RichListener | None:
        return None if self.quiet else self

    def start(self, label: str, total_bytes: int) -> ProgressCallback:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
            TransferSpeedColumn(), console=console(stderr=True), transient=False,
        )
        self._progress.start()
        task = self._progress.add_task(f"push {label}", total=total_bytes)
        progress = self._progress
        return lambda n: progress.advance(task, n)

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


@app.command()
def deploy(
    bundle: Annotated[Path, typer.Argument(help="A bundle directory (from `edgepack pack`).")],
    device: Annotated[str | None, typer.Option(
        "--device", help="Serial (default: ANDROID_SERIAL, else the only device connected), "
        "or browser: headless Chromium on this machine (onnxruntime-web, ONNX.js).")
    ] = None,
    warmup: WarmupOpt = 1,
    iterations: IterationsOpt = 10,
    min_seconds: MinSecondsOpt = None,
    threads: ThreadsOpt = 1,
    ep: EpOpt = "cpu",
    nnapi_fp16: Annotated[bool, typer.Option("--nnapi-fp16", help="NNAPI: allow fp16.")] = False,
    nnapi_cpu_disabled: Annotated[bool, typer.Option(
        "--nnapi-cpu-disabled", help="NNAPI: never fall back to its CPU device.")] = False,
    optimization: OptimizationOpt = "all",
    timeout: Annotated[float, typer.Option(
        "--timeout", callback=number(MIN_TIMEOUT, MAX_SECONDS),
        help="Seconds one runner invocation may take; killed on the device after that.")
    ] = 600.0,
    cpu_affinity: Annotated[str | None, typer.Option(
        "--cpu-affinity", help="Pin the runner to cores (taskset MASK, e.g. f0).")] = None,
    runner_target: Annotated[str | None, typer.Option(
        "--runner-target", help="Use this runner build instead of the one the device's ABI "
        "selects.")] = None,
    keep: Annotated[bool, typer.Option(
        "--keep", help="Keep the run's outputs on the device.")] = False,
    break_lock: Annotated[bool, typer.Option(
        "--break-lock", help="Take the device even if another deploy's lock is on it.")] = False,
    outputs: OutputsOpt = None,
    force: ForceOpt = False,
    labels: LabelsOpt = None,
    save_images: SaveImagesOpt = None,
    report: ReportOpt = None,
    server: ServerOpt = None,
    strict_ep: StrictEpOpt = False,
    profile: PlacementOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Push a bundle and the runner to a device, run it there, pull and compare the outputs."""
    import sys

    from edgepack.bundle import load_bundle
    from edgepack.deploy import DeployOptions
    from edgepack.deploy import deploy as run_deploy
    from edgepack.devices.adb import resolve_device
    from edgepack.errors import ExitCode
    from edgepack.runner.result import RunConfig, check_ep_place

    config = RunConfig(warmup=warmup, iterations=iterations, min_seconds=min_seconds,
                       threads=threads, ep=ep, nnapi_fp16=nnapi_fp16,
                       nnapi_cpu_disabled=nnapi_cpu_disabled, optimization=optimization,
                       timeout_s=timeout, cpu_affinity=cpu_affinity, profile=profile)
    if runner_target:
        from edgepack.runner.targets import get_target

        get_target(runner_target)
    from edgepack.outputs_dir import OutputRequest, after_run, before_run

    browser = device == "browser"
    # Before any device is looked for: --ep wasm without --device browser is the user's slip.
    check_ep_place(ep, browser=browser)
    if browser:
        _browser_options(runner_target=runner_target, keep=keep, break_lock=break_lock,
                         adb_server=server)
    b = load_bundle(bundle)
    request = OutputRequest(outputs, force, labels, save_images)
    names = before_run(b, request)
    target = None if browser else resolve_device(device, _server(server))
    listener = _RichListener(quiet=json_out or not sys.stderr.isatty())
    with profile_dir(profile or request.needs_outputs, outputs) as work_dir:
        options = DeployOptions(runner_target=runner_target, keep=keep, break_lock=break_lock,
                                work_dir=Path(work_dir) if work_dir else None)
        if target is None:
            from edgepack.web.executor import deploy_browser

            ran = deploy_browser(b, config, options.work_dir, listener)
        else:
            ran = run_deploy(b, target, config, options, listener)
        result = ep_checked(placement_noted(ran))
        result = after_run(b, result, work_dir, request, names)
    if not json_out and not browser:
        t = result.transfer
        note(f"pushed {t.files_pushed} file(s), {size(t.bytes_pushed)} in {t.push_s:.2f} s; "
             f"{t.files_skipped} unchanged file(s) ({size(t.bytes_skipped)}) already on the device")
    render_deploy_result(result, json_out, report)
    strict_ep_failure(result, strict_ep)
    if not result.passed:
        raise typer.Exit(int(ExitCode.MISMATCH))


def _browser_options(**given: object) -> None:
    """Options of an adb device given with --device browser: refused, not silently ignored."""
    from edgepack.errors import EdgepackError

    for name, value in given.items():
        if value:
            raise EdgepackError(f"--{name.replace('_', '-')} is for adb devices; the browser is "
                                "this machine's headless Chromium")


@app.command()
def clean(
    device: Annotated[str | None, typer.Option("--device", help="Serial.")] = None,
    server: ServerOpt = None,
) -> None:
    """Remove everything edgepack keeps on a device (runners, bundles, runs)."""
    import shlex

    from edgepack.devices.adb import DEVICE_ROOT, resolve_device
    from edgepack.devices.lock import device_lock

    target = resolve_device(device, _server(server))
    with device_lock(target, DEVICE_ROOT, 300):
        target.shell(
            f"cd {shlex.quote(DEVICE_ROOT)} 2>/dev/null && rm -rf bin bundles runs; true", 300)
    console().print(f"removed edgepack's files from {target.serial}:{DEVICE_ROOT}", markup=False)
