"""Fixtures of the deploy tests: the built host runner and the virtual-device fixtures."""

from __future__ import annotations

import pytest

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
