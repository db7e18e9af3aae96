"""The virtual device's system properties: defaults, the getprop file, the CNXN banner.

The properties live in one `key=value` file, the single source of truth for the shell's
getprop/setprop and for Python alike, so a `setprop` run through the shell and a test's
`device.props.set(...)` see each other.
"""

from __future__ import annotations

import os
import platform
import re
import threading
from pathlib import Path

# What Android reports in ro.product.cpu.abilist for a primary ABI.
ABI_LISTS = {
    "x86_64": "x86_64,x86",
    "x86": "x86",
    "arm64-v8a": "arm64-v8a,armeabi-v7a,armeabi",
    "armeabi-v7a": "armeabi-v7a,armeabi",
    "riscv64": "riscv64",
}
ABI_LISTS_64 = {"x86_64": "x86_64", "arm64-v8a": "arm64-v8a", "riscv64": "riscv64"}

SDK_RELEASES = {
    23: "6.0", 24: "7.0", 25: "7.1.1", 26: "8.0.0", 27: "8.1.0", 28: "9", 29: "10", 30: "11",
    31: "12", 32: "12", 33: "13", 34: "14", 35: "15", 36: "16",
}

_NAME = re.compile(r"[A-Za-z0-9_.:@-]+")


def host_abi() -> str:
    """The Android ABI name of this machine: what the virtual device really executes."""
    machine = platform.machine().lower()
    return {
        "x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64-v8a", "arm64": "arm64-v8a",
        "armv7l": "armeabi-v7a", "armv8l": "armeabi-v7a", "i686": "x86", "i386": "x86",
        "riscv64": "riscv64",
    }.get(machine, machine)


def default_props(
    *,
    serial: str,
    abi: str,
    model: str,
    manufacturer: str,
    sdk: int,
    release: str | None,
    soc_model: str,
    soc_manufacturer: str,
) -> dict[str, str]:
    abilist = ABI_LISTS.get(abi, abi)
    return {
        "ro.product.model": model,
        "ro.product.manufacturer": manufacturer,
        "ro.product.brand": manufacturer,
        "ro.product.name": "edgepack_virtual",
        "ro.product.device": "virtual",
        "ro.product.board": "virtual",
        "ro.hardware": "virtual",
        "ro.board.platform": soc_model.lower(),
        "ro.product.cpu.abi": abi,
        "ro.product.cpu.abilist": abilist,
        "ro.product.cpu.abilist64": ABI_LISTS_64.get(abi, ""),
        "ro.product.cpu.abilist32": ",".join(
            a for a in abilist.split(",") if a not in ABI_LISTS_64
        ),
        "ro.build.version.sdk": str(sdk),
        "ro.build.version.release": release or SDK_RELEASES.get(sdk, str(sdk)),
        "ro.build.type": "userdebug",
        "ro.build.characteristics": "default",
        "ro.debuggable": "1",
        "ro.secure": "0",
        "ro.soc.model": soc_model,
        "ro.soc.manufacturer": soc_manufacturer,
        "ro.serialno": serial,
        "ro.boot.serialno": serial,
        "sys.boot_completed": "1",
        # Deploy reads these: the device runs this machine's programs whatever its ABI says.
        "ro.edgepack.virtual": "1",
        "ro.edgepack.runner_target": "host",
    }


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"property name {name!r}: use letters, digits and . _ - : @")
    return name


def check_value(value: str) -> str:
    if "\n" in value or "\r" in value or "\0" in value:
        raise ValueError("a property value must be one line")
    return value


class PropStore:
    def __init__(self, path: Path, initial: dict[str, str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        for name, value in initial.items():
            check_name(name)
            check_value(value)
        self._write(dict(initial))

    def all(self) -> dict[str, str]:
        props: dict[str, str] = {}
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                name, sep, value = line.rstrip("\n").partition("=")
                if sep:
                    props[name] = value
        return props

    def get(self, name: str, default: str = "") -> str:
        return self.all().get(name, default)

    def set(self, name: str, value: str) -> None:
        self.update({name: value})

    def update(self, values: dict[str, str]) -> None:
        for name, value in values.items():
            check_name(name)
            check_value(value)
        with self._lock:
            props = self.all()
            props.update(values)
            self._write(props)

    def _write(self, props: dict[str, str]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(f"{k}={v}\n" for k, v in sorted(props.items())), "utf-8")
        os.replace(tmp, self.path)

    def banner(self, features: tuple[str, ...]) -> bytes:
        """The CNXN payload: `device::` then `key=value` entries split by `;`, no NUL."""
        props = self.all()

        def clean(text: str) -> str:
            # The server splits entries at ';' and each at '='.
            return text.replace(";", "_").replace("=", "_")

        entries = [f"{k}={clean(props.get(k, ''))}"
                   for k in ("ro.product.name", "ro.product.model", "ro.product.device")]
        entries.append("features=" + ",".join(features))
        return ("device::" + ";".join(entries)).encode("utf-8")
