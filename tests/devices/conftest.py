"""Fixtures: a private adb server per test session, virtual devices attached to it per test.

    def test_something(virtual_device):            # one in-process device, attached
        virtual_device.adb.shell("getprop ro.product.model")   # adbutils.AdbDevice
        virtual_device.device.faults.bandwidth = 1_000_000      # live fault knobs
        virtual_device.serial                                   # "127.0.0.1:PORT"

    def test_many(virtual_devices):                 # a factory
        a = virtual_devices.start(abi="arm64-v8a")
        b = virtual_devices.start(separate_process=True, args=["--quota", "1M"])

    def test_refused(deadline):                     # run_cli("virtual-device", ...) that must
        ...                                         # refuse: fails instead of serving forever

Every test that takes these fixtures runs with ANDROID_ADB_SERVER_PORT/HOST pointing at the
private server (so adbutils' default client and edgepack's own code use it) and without
ANDROID_SERIAL. The machinery is edgepack.devices.virtual.harness (no pytest in it; bench
scripts use it too); these fixtures are thin, so another test directory can import them
(`from tests.devices.conftest import adb_server, adb_env, virtual_devices, virtual_device`
under `python -m pytest`) or they can move to tests/conftest.py as they are.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator

import pytest

from edgepack.devices.virtual.harness import AdbServer, AttachedDevice, DeviceFactory


@pytest.fixture(scope="session")
def adb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdbServer]:
    # On CI (CI set) a missing adb fails the run instead: scripts/setup.sh installs it.
    if shutil.which("adb") is None and not os.environ.get("CI"):
        pytest.skip("the adb package is not installed (apt-get install adb)")
    log = tmp_path_factory.mktemp("adb-server") / "server.log"
    with AdbServer(log_path=log) as server:
        yield server


@pytest.fixture
def adb_env(adb_server: AdbServer, monkeypatch: pytest.MonkeyPatch) -> AdbServer:
    """The private server, with the environment pointing adb clients at it."""
    for key, value in adb_server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("ANDROID_SERIAL", raising=False)
    return adb_server


@pytest.fixture
def virtual_devices(adb_env: AdbServer, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[DeviceFactory]:
    with DeviceFactory(adb_env, tmp_path_factory.mktemp("vdev")) as factory:
        yield factory


@pytest.fixture
def virtual_device(virtual_devices: DeviceFactory) -> AttachedDevice:
    return virtual_devices.start()


class StillRunning(Exception):
    """A `virtual-device` command that should have refused to start served instead."""


@pytest.fixture
def deadline() -> Iterator[None]:
    """For `run_cli("virtual-device", ...)` expected to refuse its options: if it serves
    instead, the alarm ends its serve loop with an exception (exit 4), so the test fails rather
    than hanging."""
    def ring(*_: object) -> None:
        raise StillRunning("the virtual device started instead of refusing")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.alarm(10)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
