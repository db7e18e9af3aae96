"""`edgepack virtual-device`: serve a virtual adb device until interrupted."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from edgepack.cli.app import app
from edgepack.errors import EdgepackError, ExitCode


def _check(option: str, value: float, low: float, high: float, expected: str) -> None:
    """A numeric option's range, checked before anything starts: past it the device would fail
    later with a traceback, or quietly do something else than asked (0 bytes/s = no cap)."""
    if not (math.isfinite(value) and low <= value <= high):
        raise EdgepackError(f"{option} {value}: expected {expected}", ExitCode.BAD_INPUT)


_WEEK = 7 * 24 * 3600  # longer waits overflow the timers, and no rehearsal needs them


@app.command("virtual-device")
def virtual_device(
    root: Annotated[Path, typer.Option(
        "--root", help="Directory holding the device's files (/data/local/tmp is "
        "ROOT/data/local/tmp); created if missing.")],
    port: Annotated[int, typer.Option(
        "--port", help="TCP port to listen on; 0 picks a free one. Stay out of 5555-5585, "
        "which adb servers probe for emulators.")] = 0,
    host: Annotated[str, typer.Option(
        "--host", help="Address to listen on; 0.0.0.0 lets other machines' adb servers "
        "connect, and then adb's RSA authentication is required (see --authorized-keys).")
    ] = "127.0.0.1",
    auth: Annotated[bool, typer.Option(
        "--auth", help="Require adb's RSA authentication on loopback too, as a phone does.")
    ] = False,
    authorized_keys: Annotated[list[Path], typer.Option(
        "--authorized-keys", help="Accept the keys in FILE (adb_keys format: one base64 adb "
        "public key per line, e.g. a machine's ~/.android/adbkey.pub); repeatable. Default: "
        "~/.android/adbkey.pub and ROOT/data/misc/adb/adb_keys.")] = [],  # noqa: B006
    port_file: Annotated[Path | None, typer.Option(
        "--port-file", help="Write the port here once listening (for scripts using --port 0)."
    )] = None,
    serial: Annotated[str | None, typer.Option(
        "--serial", help="ro.serialno (adb itself lists the device as HOST:PORT).")] = None,
    abi: Annotated[str | None, typer.Option(
        "--abi", help="ro.product.cpu.abi to REPORT (default: the host's). Programs still run "
        "as the host's ABI, unless --emulate.")] = None,
    model: Annotated[str, typer.Option("--model", help="ro.product.model.")] = (
        "edgepack virtual device"),
    manufacturer: Annotated[str, typer.Option(
        "--manufacturer", help="ro.product.manufacturer.")] = "edgepack",
    sdk: Annotated[int, typer.Option("--sdk", help="ro.build.version.sdk.")] = 34,
    release: Annotated[str | None, typer.Option(
        "--release", help="ro.build.version.release (default: from --sdk).")] = None,
    soc_model: Annotated[str, typer.Option("--soc-model", help="ro.soc.model.")] = "VIRTUAL",
    soc_manufacturer: Annotated[str, typer.Option(
        "--soc-manufacturer", help="ro.soc.manufacturer.")] = "edgepack",
    prop: Annotated[list[str], typer.Option(
        "--prop", help="KEY=VALUE, any property, repeatable; overrides the options above."
    )] = [],  # noqa: B006
    battery_level: Annotated[int, typer.Option(
        "--battery-level", help="dumpsys battery: level in percent.")] = 90,
    battery_temperature: Annotated[int, typer.Option(
        "--battery-temperature", help="dumpsys battery: tenths of a degree C (250 = 25.0 C).")
    ] = 250,
    battery_status: Annotated[str, typer.Option(
        "--battery-status", help="dumpsys battery: charging, discharging, not-charging, full, "
        "unknown, or the number.")] = "charging",
    thermal_status: Annotated[int, typer.Option(
        "--thermal-status", help="dumpsys thermalservice: Thermal Status, 0 (none) to 6.")] = 0,
    temperature: Annotated[list[str], typer.Option(
        "--temperature", help="NAME=CELSIUS, a thermalservice sensor, repeatable; replaces the "
        "default sensors.")] = [],  # noqa: B006
    bandwidth: Annotated[str | None, typer.Option(
        "--bandwidth", help="Fault: cap each direction at this many bytes/s (64K, 10M...).")
    ] = None,
    latency_ms: Annotated[float, typer.Option(
        "--latency-ms", help="Fault: delay each message the device receives.")] = 0.0,
    drop_after: Annotated[str | None, typer.Option(
        "--drop-after", help="Fault: drop the adb connection after this many bytes of a sync "
        "transfer (push or pull), once unless --drop-always.")] = None,
    drop_always: Annotated[bool, typer.Option(
        "--drop-always", help="Fault: drop every transfer that reaches --drop-after.")] = False,
    vanish_after: Annotated[float | None, typer.Option(
        "--vanish-after", help="Fault: vanish (drop all connections, stop listening) this many "
        "seconds after start.")] = None,
    vanish_on: Annotated[str | None, typer.Option(
        "--vanish-on", help="Fault: vanish when a shell command matching this regex starts "
        "(once).")] = None,
    vanish_delay: Annotated[float, typer.Option(
        "--vanish-delay", help="Fault: seconds between the --vanish-on command starting and the "
        "device vanishing.")] = 0.0,
    revive_after: Annotated[float | None, typer.Option(
        "--revive-after", help="Fault: come back this many seconds after vanishing.")] = None,
    quota: Annotated[str | None, typer.Option(
        "--quota", help="Fault: the root holds at most this many bytes; pushes past it fail "
        "with 'No space left on device'.")] = None,
    runner_fault: Annotated[str | None, typer.Option(
        "--runner-fault", help="Fault: a program named edgepack-runner crashes (crash: SIGSEGV), "
        "hangs (hang), or computes node NODE's output wrong by relative amount REL, every other "
        "node exact (perturb:NODE:REL; an unnamed node is OP#INDEX, as diagnose names it) when "
        "a command runs it; the binary and the bundle stay as pushed. Needs cc.")
    ] = None,
    runner_fault_once: Annotated[bool, typer.Option(
        "--runner-fault-once", help="Fault: only the first run of the runner meets the fault.")
    ] = False,
    slowdown_after: Annotated[str | None, typer.Option(
        "--slowdown-after", help="Drift: SECONDS:FACTOR, e.g. 30:1.5: from SECONDS after the "
        "device starts, the runner's every inference takes FACTOR times as long (the runner "
        "binary is untouched). Needs cc.")] = None,
    linux_board: Annotated[bool, typer.Option(
        "--linux-board", help="Stand in for a Linux board running adbd rather than a phone: no "
                              "getprop, setprop or dumpsys.")] = False,
    glibc: Annotated[str | None, typer.Option(
        "--glibc", help="The glibc version getconf reports (default: the host's), e.g. 2.31 "
                        "to rehearse an older board.")] = None,
    userland: Annotated[str | None, typer.Option(
        "--userland", help="android: commands run under mksh with toybox's applets and nothing "
        "of the host's on PATH, as on a phone; host: this machine's /bin/sh and programs. "
        "Default: android for a phone when mksh and toybox are installed, host for "
        "--linux-board.")] = None,
    emulate: Annotated[bool, typer.Option(
        "--emulate", help="Compute as an arm64 phone: run the aarch64 programs the shell starts "
        "under qemu-user with an ARM /proc/cpuinfo, so deploy pushes the linux-aarch64 runner "
        "(build it first) and onnxruntime's ARM kernels compute. Implies --abi arm64-v8a; slow, "
        "and the device says it is emulated.")] = False,
    verbose: Annotated[bool, typer.Option(
        "-v", "--verbose", help="Log connections, refused services and faults.")] = False,
) -> None:
    """Serve a virtual adb device: the real adb server attaches to it with
    `adb connect HOST:PORT`, and adb, adbutils and edgepack then use it like a phone.

    It runs THIS machine's programs, so its ABI is the host's (x86_64 on a PC), whatever
    --abi reports: edgepack deploys the host runner to it (ro.edgepack.runner_target=host).
    With --emulate it runs aarch64 programs under qemu-user instead and reports the
    linux-aarch64 runner.
    Shell commands are real processes on this machine with device paths (/data, /sdcard,
    /storage, /mnt) mapped into --root; it is a stand-in for tests and lab rehearsals, not a
    sandbox. Whoever connects runs commands as you, so on any address but loopback (and with
    --auth) it requires adb's RSA authentication, as a phone does, and accepts only the keys in
    --authorized-keys (default: your ~/.android/adbkey.pub and ROOT/data/misc/adb/adb_keys).
    Runs until interrupted (Ctrl-C or SIGTERM).
    """
    import logging
    import signal
    import sys
    import threading

    from edgepack.devices.virtual import DeviceConfig, Faults, VirtualDevice, slowdown
    from edgepack.devices.virtual.props import host_abi
    from edgepack.devices.virtual.runnerfault import RunnerFaultUnavailable
    from edgepack.devices.virtual.server import DeviceStartError
    from edgepack.devices.virtual.sysinfo import Battery, Thermal
    from edgepack.devices.virtual.sysinfo import battery_status as parse_battery_status
    from edgepack.option_values import parse_bytes, parse_pairs, parse_temperatures

    _check("--port", port, 0, 65535, "0 to 65535 (0 picks a free port)")
    _check("--sdk", sdk, 1, 1000, "an API level, 1 or more")
    _check("--battery-level", battery_level, 0, 100, "0 to 100 (percent)")
    _check("--battery-temperature", battery_temperature, -2730, 1500,
           "tenths of a degree C, -2730 (-273.0 C) to 1500 (150.0 C)")
    _check("--thermal-status", thermal_status, 0, 6, "0 (none) to 6 (shutdown)")
    _check("--latency-ms", latency_ms, 0, 600_000, "0 to 600000 milliseconds")
    _check("--vanish-delay", vanish_delay, 0, _WEEK, f"0 to {_WEEK} seconds")
    for option, seconds in (("--vanish-after", vanish_after), ("--revive-after", revive_after)):
        if seconds is not None:
            _check(option, seconds, 0, _WEEK, f"0 to {_WEEK} seconds")
    temperatures = parse_temperatures(temperature)
    try:
        slow = slowdown.parse(slowdown_after) if slowdown_after is not None else None
    except ValueError as exc:
        raise EdgepackError(str(exc), ExitCode.BAD_INPUT) from None
    try:
        status = parse_battery_status(battery_status)
    except ValueError as exc:
        raise EdgepackError(str(exc), ExitCode.BAD_INPUT) from None
    bandwidth_bytes = parse_bytes("--bandwidth", bandwidth) if bandwidth else None
    if bandwidth_bytes == 0:
        raise EdgepackError("--bandwidth 0: expected more than 0 bytes/s (leave it out for no "
                            "cap)", ExitCode.BAD_INPUT)
    if port_file is not None and not port_file.parent.is_dir():
        raise EdgepackError(f"--port-file {port_file}: the directory {port_file.parent} does "
                            "not exist", ExitCode.BAD_INPUT)

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="virtual-device: %(message)s")
    faults = Faults(
        bandwidth=bandwidth_bytes,
        latency=latency_ms / 1000.0,
        drop_after_bytes=parse_bytes("--drop-after", drop_after) if drop_after else None,
        drop_always=drop_always,
        vanish_on_command=vanish_on,
        vanish_delay=vanish_delay,
        revive_after=revive_after,
        quota_bytes=parse_bytes("--quota", quota) if quota else None,
        runner=runner_fault,
        runner_once=runner_fault_once,
        slowdown_after=slow[0] if slow else None,
        slowdown_factor=slow[1] if slow else 1.0,
    )
    config = DeviceConfig(
        root=root, port=port, host=host, serial=serial,
        abi=abi or ("arm64-v8a" if emulate else host_abi()), model=model,
        manufacturer=manufacturer, sdk=sdk, release=release, soc_model=soc_model,
        soc_manufacturer=soc_manufacturer, props=parse_pairs("--prop", prop),
        battery=Battery(level=battery_level, temperature=battery_temperature, status=status),
        thermal=Thermal(status=thermal_status, **({"temperatures": temperatures}
                                                  if temperatures else {})),
        faults=faults, vanish_after=vanish_after, linux_board=linux_board, glibc=glibc,
        userland=userland, emulate=emulate,
        auth=auth, authorized_keys=tuple(authorized_keys) if authorized_keys else None,
    )
    try:
        device = VirtualDevice(config).start()
    except DeviceStartError as exc:
        raise EdgepackError(str(exc), ExitCode.BAD_INPUT) from None
    except ValueError as exc:
        raise EdgepackError(f"virtual device: {exc}", ExitCode.BAD_INPUT) from None
    except RunnerFaultUnavailable as exc:
        option = "--runner-fault" if runner_fault else "--slowdown-after"
        raise EdgepackError(f"{option}: {exc}", ExitCode.BAD_INPUT) from None

    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        if port_file is not None:
            tmp = port_file.with_name(port_file.name + ".tmp")
            try:
                tmp.write_text(f"{device.port}\n", "utf-8")
                tmp.replace(port_file)  # a reader never sees half a number
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise EdgepackError(f"--port-file {port_file}: {exc.strerror or exc}",
                                    ExitCode.BAD_INPUT) from None
        secured = " (adb authentication on)" if device.authenticator is not None else ""
        typer.echo(f"virtual device listening on {device.address}{secured} (root "
                   f"{device.root}); attach it with: adb connect {device.address}", err=True)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)  # run in-process (tests): the caller's again
        device.stop()
