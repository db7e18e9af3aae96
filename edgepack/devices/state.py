"""What a device says about its own condition: battery, thermal status, CPU frequencies.

Read in one shell round trip before and after a run, so a bench can tell when a phone heated or
throttled during it, and its figures with it.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from edgepack.devices.base import ShellResult

ShellFn = Callable[[str, float | None], ShellResult]

# A battery this much warmer after a run than before it means the run heated the phone: its
# later runs are measured on a hotter, likelier throttled, device.
HEAT_BATTERY_C = 2.0
HEAT_SENSOR_C = 5.0
PROBE_TIMEOUT_S = 15.0

THERMAL_STATUS = ("none", "light", "moderate", "severe", "critical", "emergency", "shutdown")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")



@dataclass(frozen=True)
class CpuFreq:
    cpu: str
    governor: str | None
    cur_khz: int | None
    max_khz: int | None  # scaling_max_freq: what the governor (or a thermal cap) allows now
    hw_max_khz: int | None  # cpuinfo_max_freq: what the silicon can do


@dataclass(frozen=True)
class DeviceState:
    """What a device tells about its own condition; None where it does not expose it."""

    taken_at: str
    battery_level: int | None = None  # percent
    battery_temp_c: float | None = None
    powered: str | None = None  # "ac", "usb", "wireless" or "none"
    thermal_status: int | None = None  # Android's 0 (none) .. 6 (shutdown)
    temps_c: dict[str, float] = field(default_factory=dict)  # thermal HAL or sysfs zones
    cpus: list[CpuFreq] = field(default_factory=list)

    @property
    def max_temp_c(self) -> float | None:
        values = [v for k, v in self.temps_c.items() if "battery" not in k.lower()]
        return max(values) if values else None

    @property
    def empty(self) -> bool:
        return (self.battery_level is None and self.battery_temp_c is None
                and self.thermal_status is None and not self.temps_c and not self.cpus)


# One round trip for the whole state: each section is introduced by a marker line. POSIX sh
# only (Android's toybox sh, a board's busybox); every read may fail quietly.
STATE_SCRIPT = r"""
echo @@battery; dumpsys battery 2>/dev/null
echo @@thermal; dumpsys thermalservice 2>/dev/null
echo @@cpufreq
for d in /sys/devices/system/cpu/cpu[0-9]*/cpufreq; do
  [ -d "$d" ] || continue
  c=${d%/cpufreq}; c=${c##*/}
  echo "$c|$(cat $d/scaling_governor 2>/dev/null)|$(cat $d/scaling_cur_freq 2>/dev/null)|$(cat $d/scaling_max_freq 2>/dev/null)|$(cat $d/cpuinfo_max_freq 2>/dev/null)"
done
echo @@zones
for z in /sys/class/thermal/thermal_zone*; do
  [ -r "$z/temp" ] || continue
  echo "${z##*/}|$(cat $z/type 2>/dev/null)|$(cat $z/temp 2>/dev/null)"
done
true
"""  # noqa: E501 - a shell line is clearer whole


def probe_state(shell: ShellFn) -> DeviceState | None:
    """The device's state now, or None when it cannot be read (it says nothing, or is gone)."""
    try:
        result = shell(STATE_SCRIPT, PROBE_TIMEOUT_S)
    except Exception:  # state is context for a run, never a reason to fail it
        return None
    state = parse_state(result.stdout)
    return None if state.empty else state


def parse_state(text: str) -> DeviceState:
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        if line.startswith("@@"):
            current = sections.setdefault(line[2:].strip(), [])
        else:
            current.append(line)
    battery = _key_values(sections.get("battery", []))
    level = _int(battery.get("level"))
    scale = _int(battery.get("scale"))
    if level is not None and scale and scale != 100:
        level = round(100 * level / scale)
    temp = _int(battery.get("temperature"))
    powered = None
    if battery:
        kinds = [k for k in ("ac", "usb", "wireless")
                 if battery.get(f"{k} powered", "").lower() == "true"]
        powered = ",".join(kinds) or "none"

    temps: dict[str, float] = {}
    for line in sections.get("zones", []):
        parts = line.split("|")
        value = _int(parts[2]) if len(parts) == 3 else None
        if value is not None:
            # Zones report millidegrees, a few old kernels whole degrees.
            temps[f"{parts[1] or parts[0]}"] = value / 1000 if abs(value) > 500 else float(value)
    thermal = "\n".join(sections.get("thermal", []))
    status_match = re.search(r"Thermal Status:\s*(\d+)", thermal)
    # Cached temperatures come before current ones in dumpsys: later entries win.
    for m in re.finditer(r"Temperature\{mValue=([-\d.]+), mType=-?\d+, mName=([^,}]+)", thermal):
        try:
            temps[m.group(2).strip()] = float(m.group(1))
        except ValueError:
            continue

    cpus = []
    for line in sections.get("cpufreq", []):
        parts = line.split("|")
        if len(parts) == 5 and parts[0]:
            cpus.append(CpuFreq(parts[0], parts[1] or None, _int(parts[2]), _int(parts[3]),
                                _int(parts[4])))
    return DeviceState(
        taken_at=now_iso(),
        battery_level=level,
        battery_temp_c=temp / 10 if temp is not None else None,  # tenths of a degree
        powered=powered,
        thermal_status=int(status_match.group(1)) if status_match else None,
        temps_c=temps,
        cpus=cpus,
    )


def state_warnings(before: DeviceState | None, after: DeviceState | None) -> list[str]:
    """Why a run's figures may not be the device's best: it heated, throttled or was throttled."""
    if after is None:
        return []
    warnings: list[str] = []
    status = after.thermal_status
    if status:
        name = THERMAL_STATUS[min(status, len(THERMAL_STATUS) - 1)]
        was = before.thermal_status if before else None
        if was is not None and status > was:
            warnings.append(f"throttled: thermal status rose from {was} "
                            f"({THERMAL_STATUS[min(was, 6)]}) to {status} ({name}) during the run")
        else:
            warnings.append(f"throttled: thermal status {status} ({name})")
    if before is None:
        return warnings
    if before.battery_temp_c is not None and after.battery_temp_c is not None and (
        after.battery_temp_c - before.battery_temp_c >= HEAT_BATTERY_C
    ):
        warnings.append(f"heated: battery {before.battery_temp_c:.1f} -> "
                        f"{after.battery_temp_c:.1f} °C during the run")
    hot0, hot1 = before.max_temp_c, after.max_temp_c
    if hot0 is not None and hot1 is not None and hot1 - hot0 >= HEAT_SENSOR_C:
        warnings.append(f"heated: hottest sensor {hot0:.1f} -> {hot1:.1f} °C during the run")
    old = {c.cpu: c for c in before.cpus}
    capped = []
    for cpu in after.cpus:
        prev = old.get(cpu.cpu)
        if prev and prev.max_khz and cpu.max_khz and cpu.max_khz < prev.max_khz:
            capped.append(f"{cpu.cpu} {prev.max_khz // 1000}->{cpu.max_khz // 1000} MHz")
        if prev and prev.governor and cpu.governor and prev.governor != cpu.governor:
            warnings.append(f"{cpu.cpu} governor changed {prev.governor} -> {cpu.governor}")
    if capped:
        warnings.append("throttled: max CPU frequency lowered during the run (" +
                        ", ".join(capped) + ")")
    return warnings


def _key_values(lines: list[str]) -> dict[str, str]:
    result = {}
    for line in lines:
        key, sep, value = line.partition(":")
        if sep:
            result[key.strip().lower()] = value.strip()
    return result


def _int(text: str | None) -> int | None:
    try:
        return int(str(text).strip())
    except (TypeError, ValueError):
        return None


def local_shell(command: str, timeout: float | None = None) -> ShellResult:
    """This machine's shell, with the Device protocol's signature: the host's state probes."""
    try:
        proc = subprocess.run(["sh", "-c", command], capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return ShellResult(124, "", "timed out")
    return ShellResult(proc.returncode, proc.stdout, proc.stderr)
