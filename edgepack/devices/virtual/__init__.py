"""A device-side adb daemon in Python: the real adb server attaches to it over TCP
(`adb connect 127.0.0.1:PORT`) and any adb client then drives it like a phone on USB.

It runs this machine's programs on files under a root directory, so it stands in for a phone in
tests and lab rehearsals without hardware; its ABI is the host's whatever properties it reports.
"""

from edgepack.devices.virtual.faults import Faults
from edgepack.devices.virtual.server import DeviceConfig, VirtualDevice
from edgepack.devices.virtual.sysinfo import Battery, Thermal

__all__ = ["Battery", "DeviceConfig", "Faults", "Thermal", "VirtualDevice"]
