"""A second, independent adb implementation against the virtual device: the `adb-shell`
package, which talks to adbd directly over TCP (no adb server), with its own RSA signers and
its own sync code. It waits for the device's CLSE after every sync request, as adbd sends one
(test_vd_protocol checks that answer message by message).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgepack.devices.virtual import DeviceConfig, VirtualDevice
from tests.conftest import unavailable

try:
    from adb_shell.adb_device import AdbDeviceTcp
    from adb_shell.auth.keygen import keygen
    from adb_shell.auth.sign_cryptography import CryptographySigner
    from adb_shell.auth.sign_pythonrsa import PythonRSASigner
    from adb_shell.exceptions import AdbTimeoutError, DeviceAuthError, TcpTimeoutException
    MISSING = ""
except ImportError as exc:
    MISSING = str(exc)


@pytest.fixture(scope="module", autouse=True)
def _adb_shell() -> None:
    # Skipped on a developer's machine without it, a failure in CI (the dev extra has it).
    if MISSING:
        unavailable(f"adb-shell is not installed (pip install -e .[dev]): {MISSING}")

# Short: an unanswered CLSE or a refused key shows as a timeout of this length.
TIMEOUT = 5.0


def _refused() -> tuple[type[Exception], ...]:
    """A refused key: the device never sends its CNXN, and adb-shell times out waiting."""
    return (AdbTimeoutError, TcpTimeoutException)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """adb-shell's own key pair (its keygen, its encoding of the public key)."""
    path = tmp_path_factory.mktemp("adb-shell-keys") / "adbkey"
    keygen(str(path))
    return path


@pytest.fixture
def device(tmp_path: Path, keys: Path) -> Iterator[VirtualDevice]:
    dev = VirtualDevice(DeviceConfig(root=tmp_path / "root", auth=True,
                                     authorized_keys=(Path(f"{keys}.pub"),))).start()
    try:
        yield dev
    finally:
        dev.stop()


def _client(device: VirtualDevice, signer: object) -> AdbDeviceTcp:
    client = AdbDeviceTcp("127.0.0.1", device.port, default_transport_timeout_s=TIMEOUT)
    client.connect(rsa_keys=[signer], auth_timeout_s=TIMEOUT, read_timeout_s=TIMEOUT)
    return client


@pytest.mark.parametrize("signer_kind", ["cryptography", "python-rsa"])
def test_adb_shell_push_pull_stat_list_and_shell(device: VirtualDevice, keys: Path,
                                                 tmp_path: Path, signer_kind: str) -> None:
    signer = (CryptographySigner(str(keys)) if signer_kind == "cryptography"
              else PythonRSASigner.FromRSAKeyPath(str(keys)))
    client = _client(device, signer)
    try:
        kw = {"read_timeout_s": TIMEOUT}
        assert client.shell("echo hello; echo oops >&2", **kw) == "hello\noops\n"
        data = os.urandom(300_000)  # several sync DATA chunks and WRTEs
        source = tmp_path / "source.bin"
        source.write_bytes(data)
        started = time.monotonic()
        client.push(str(source), "/data/local/tmp/pushed.bin", st_mode=0o100644,
                    mtime=1_700_000_000, **kw)
        assert (device.root / "data/local/tmp/pushed.bin").read_bytes() == data
        mode, size, mtime = client.stat("/data/local/tmp/pushed.bin", **kw)
        # adbd copies the owner's bits to group and others: 0644 lands as 0666.
        assert (mode, size, mtime) == (0o100666, len(data), 1_700_000_000)
        names = {bytes(entry.filename).decode() for entry in
                 client.list("/data/local/tmp", **kw)}
        assert {".", "..", "pushed.bin"} <= names
        client.pull("/data/local/tmp/pushed.bin", str(tmp_path / "pulled.bin"), **kw)
        assert (tmp_path / "pulled.bin").read_bytes() == data
        # Each request ends with a CLSE both ways; none waits out a timeout.
        assert time.monotonic() - started < TIMEOUT
        assert client.shell("cat /data/local/tmp/pushed.bin | wc -c", **kw).strip() == (
            str(len(data)))
    finally:
        client.close()


def test_adb_shell_with_a_key_the_device_does_not_accept(device: VirtualDevice,
                                                         tmp_path: Path) -> None:
    keygen(str(tmp_path / "otherkey"))
    client = AdbDeviceTcp("127.0.0.1", device.port, default_transport_timeout_s=TIMEOUT)
    with pytest.raises(_refused()):  # it offers its public key; nobody accepts it
        client.connect(rsa_keys=[CryptographySigner(str(tmp_path / "otherkey"))],
                       auth_timeout_s=1.0, read_timeout_s=TIMEOUT)
    client.close()
    client = AdbDeviceTcp("127.0.0.1", device.port, default_transport_timeout_s=TIMEOUT)
    with pytest.raises(DeviceAuthError):
        client.connect(rsa_keys=[], read_timeout_s=TIMEOUT)
    client.close()


def test_adb_shell_with_a_tampered_signature(device: VirtualDevice, keys: Path) -> None:
    class Tampering(CryptographySigner):
        def Sign(self, data: bytes) -> bytes:  # noqa: N802 - adb-shell's signer interface
            signature = bytearray(super().Sign(data))
            signature[-1] ^= 0x80
            return bytes(signature)

    client = AdbDeviceTcp("127.0.0.1", device.port, default_transport_timeout_s=TIMEOUT)
    with pytest.raises(_refused()):
        client.connect(rsa_keys=[Tampering(str(keys))], auth_timeout_s=1.0,
                       read_timeout_s=TIMEOUT)
    client.close()
