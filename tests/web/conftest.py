"""Fixtures of tests/web: the browser-as-a-device bundles (browser_bundles.py), and the virtual
devices' fixtures for tests that set the browser beside an adb device."""

from tests.devices.conftest import (  # noqa: F401 - fixtures
    adb_env,
    adb_server,
    virtual_device,
    virtual_devices,
)
from tests.lab.conftest import host_runner  # noqa: F401 - fixture
from tests.web.browser_bundles import browser, conv_bundle, erf_bundle  # noqa: F401 - fixtures
