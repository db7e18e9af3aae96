"""Fixtures of the deploy tests: the built host and linux-aarch64 runners, and the virtual-device
fixtures."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import unavailable
from tests.devices.conftest import (  # noqa: F401 - fixtures
    adb_env,
    adb_server,
    virtual_device,
    virtual_devices,
)


@pytest.fixture(scope="session")
def host_runner():
    """The host runner, built once (the virtual device runs this machine's binaries)."""
    from edgepack.runner.build import build_runner

    return build_runner("host")


@pytest.fixture(scope="module")
def aarch64_runner():
    """The linux-aarch64 runner an emulated ARM virtual device runs, built once."""
    from edgepack.devices.virtual.emulate import CROSS_CC, unavailable_reason
    from edgepack.runner.build import build_runner

    reason = unavailable_reason()
    if reason is None and shutil.which(CROSS_CC) is None:
        reason = f"{CROSS_CC} is not installed (apt-get install gcc-aarch64-linux-gnu)"
    if reason:
        unavailable(reason)
    return build_runner("linux-aarch64")


def emulated_userland() -> str:
    """An emulated phone's shell: Android's mksh and toybox where installed."""
    return "android" if shutil.which("mksh") and shutil.which("toybox") else "host"
