"""Devices: what edgepack needs from one (base), adb devices, staging files, locks."""
