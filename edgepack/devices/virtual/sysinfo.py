"""Battery and thermal state, printed the way Android's `dumpsys battery` and
`dumpsys thermalservice` print them (Android 10+), so a device lab can parse real and virtual
devices with the same code."""

from __future__ import annotations

from dataclasses import dataclass, field

BATTERY_STATUS = {"unknown": 1, "charging": 2, "discharging": 3, "not-charging": 4, "full": 5}

# android.os.Temperature types
TEMPERATURE_TYPES = {"cpu": 0, "gpu": 1, "battery": 2, "skin": 3, "usb_port": 4,
                     "power_amplifier": 5}


def battery_status(value: str | int) -> int:
    """A BatteryManager status code from a number or a name (charging, full, ...)."""
    if isinstance(value, int) or str(value).isdigit():
        code = int(value)
        if code not in BATTERY_STATUS.values():
            raise ValueError(f"battery status {code}: expected 1 to 5")
        return code
    name = str(value).strip().lower().replace("_", "-")
    if name not in BATTERY_STATUS:
        raise ValueError(f"battery status {value!r}: expected one of {', '.join(BATTERY_STATUS)}")
    return BATTERY_STATUS[name]


@dataclass
class Battery:
    level: int = 90  # percent
    temperature: int = 250  # tenths of a degree Celsius, as Android reports it
    status: int = BATTERY_STATUS["charging"]
    usb_powered: bool = True
    voltage: int = 4100  # mV

    def dumpsys(self) -> str:
        plugged = self.usb_powered
        return "\n".join([
            "Current Battery Service state:",
            "  AC powered: false",
            f"  USB powered: {'true' if plugged else 'false'}",
            "  Wireless powered: false",
            "  Dock powered: false",
            "  Max charging current: 500000",
            "  Max charging voltage: 5000000",
            "  Charge counter: 3000000",
            f"  status: {self.status}",
            "  health: 2",
            "  present: true",
            f"  level: {self.level}",
            "  scale: 100",
            f"  voltage: {self.voltage}",
            f"  temperature: {self.temperature}",
            "  technology: Li-ion",
        ]) + "\n"


@dataclass
class Thermal:
    status: int = 0  # PowerManager.THERMAL_STATUS_NONE .. _SHUTDOWN (0..6)
    # Sensor name -> degrees Celsius; the type comes from the name (cpu, gpu, battery, skin...).
    temperatures: dict[str, float] = field(default_factory=lambda: {
        "cpu0": 35.0, "gpu": 33.0, "battery": 25.0, "skin": 30.0,
    })

    def dumpsys(self) -> str:
        lines = [f"\tTemperature{{mValue={value:.1f}, mType={_temperature_type(name)}, "
                 f"mName={name}, mStatus={self.status}}}"
                 for name, value in self.temperatures.items()]
        return "\n".join([
            "IsStatusOverride: false",
            "ThermalEventListeners:",
            "\tcallbacks: 0",
            "\tkilled: false",
            "\tbroadcasts count: -1",
            "ThermalStatusListeners:",
            "\tcallbacks: 0",
            "\tkilled: false",
            "\tbroadcasts count: -1",
            f"Thermal Status: {self.status}",
            "Cached temperatures:",
            *lines,
            "HAL Ready: true",
            "HAL connection:",
            "\tThermalHAL 2.0 connected: yes",
            "Current temperatures from HAL:",
            *lines,
            "Current cooling devices from HAL:",
            "Temperature static thresholds from HAL:",
        ]) + "\n"


def _temperature_type(name: str) -> int:
    lowered = name.lower()
    for prefix, code in TEMPERATURE_TYPES.items():
        if lowered.startswith(prefix[:3]):
            return code
    return -1
