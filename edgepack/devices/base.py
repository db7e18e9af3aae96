"""What edgepack needs from a device, whoever the device is.

`Device` is all that deploy (edgepack.deploy.DeviceExecutor), the device lock and the state probes
use: the device's facts, shell commands, pushes and pulls, and the free space a push must fit
in. Commands are strings for a POSIX shell (Android's toybox sh or a board's /bin/sh), built by
the caller with shlex.quote around every argument.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

ProgressCallback = Callable[[int], None]  # bytes transferred since the last call


@dataclass(frozen=True)
class DeviceInfo:
    serial: str
    kind: str  # "host", "android" or "linux"
    state: str  # adb's state: "device", "offline", "unauthorized"...; "device" for the host
    model: str | None = None
    manufacturer: str | None = None
    abis: list[str] = field(default_factory=list)
    sdk: int | None = None
    release: str | None = None
    soc: str | None = None
    machine: str | None = None  # uname -m
    free_bytes: int | None = None  # in the working directory edgepack uses
    virtual: bool = False
    runner_target: str | None = None  # the runner this device runs, when it can be told
    glibc: str | None = None  # a Linux device's C library version ("2.31"); None on Android
    # How a device that computes as another machine does it (a virtual device under qemu-user):
    # its timings are the emulator's, not a phone's.
    emulated: str | None = None


@dataclass(frozen=True)
class ShellResult:
    exit_code: int
    stdout: str
    stderr: str


class Device(Protocol):
    serial: str

    def info(self) -> DeviceInfo: ...

    def shell(self, command: str, timeout: float | None = None) -> ShellResult: ...

    def push(self, local: Path, remote: str, progress: ProgressCallback | None = None,
             mode: int = 0o644, *, offset: int = 0, length: int | None = None) -> None:
        """Exactly `remote` gets the file's bytes (`length` of them from `offset`), with
        permission bits `mode`."""

    def pull(self, remote: str, local: Path) -> None:
        """`local` gets the file whole or not at all."""

    def free_bytes(self, path: str) -> int | None:
        """Free space where `path` is (made if missing); None when the device cannot tell."""
