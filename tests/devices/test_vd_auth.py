"""adb's RSA authentication on the virtual device, against the real adb server and a raw client.

The private adb server signs with the key it created in its own HOME (harness.AdbServer), so
nothing here depends on the developer's ~/.android.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from edgepack.devices.virtual import DeviceConfig, VirtualDevice
from edgepack.devices.virtual import protocol as p
from edgepack.devices.virtual.auth import (
    AUTH_RSAPUBLICKEY,
    AUTH_SIGNATURE,
    AUTH_TOKEN,
    TOKEN_SIZE,
    Authenticator,
    KeyFileError,
    KeySource,
    encode_public_key,
    parse_key_line,
)
from edgepack.devices.virtual.harness import AdbServer, DeviceFactory, DeviceProcess
from tests.conftest import run_cli

from .rawadb import Message, RawAdb, load_private_key, new_key, public_line, sign


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return new_key()


@pytest.fixture(scope="module")
def stranger() -> rsa.RSAPrivateKey:
    return new_key()


@pytest.fixture
def device(tmp_path: Path, key: rsa.RSAPrivateKey) -> Iterator[VirtualDevice]:
    keys = tmp_path / "adb_keys"
    keys.write_text(public_line(key) + "\n")
    dev = VirtualDevice(DeviceConfig(root=tmp_path / "root", auth=True,
                                     authorized_keys=(keys,))).start()
    try:
        yield dev
    finally:
        dev.stop()


def _token(message: Message | None) -> bytes:
    """The token of an AUTH(TOKEN) message, which `message` must be."""
    assert message is not None
    assert (message.command, message.arg0) == (p.A_AUTH, AUTH_TOKEN), message
    assert len(message.payload) == TOKEN_SIZE
    return message.payload


def _open_shell(client: RawAdb, command: str, local_id: int = 7) -> None:
    client.send(p.A_OPEN, local_id, 0, f"shell:{command}\0".encode())


# ---------------------------------------------------------------------------- the real adb server


def test_the_adb_server_signs_in_with_its_key(virtual_devices: DeviceFactory,
                                              adb_env: AdbServer,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="edgepack.virtual_device")
    dev = virtual_devices.start(auth=True, authorized_keys=(adb_env.public_key,))
    assert dev.device is not None and dev.device.authenticator is not None
    assert dev.adb.shell("echo signed in") == "signed in"
    # Through the signature, not around it.
    assert f"authorized by key {parse_key_line(adb_env.public_key.read_text(), '').fingerprint}" \
        in caplog.text
    listing = adb_env.run("devices", "-l").stdout.decode()
    assert re.search(rf"^{re.escape(dev.serial)}\s+device product:edgepack_virtual", listing,
                     re.MULTILINE)
    r = adb_env.run("shell", "echo out; echo err >&2; exit 3", serial=dev.serial)
    assert (r.returncode, r.stdout, r.stderr) == (3, b"out\n", b"err\n")


def test_the_adb_server_with_an_unknown_key_is_unauthorized(
        adb_env: AdbServer, tmp_path: Path, stranger: rsa.RSAPrivateKey) -> None:
    keys = tmp_path / "adb_keys"
    keys.write_text(public_line(stranger) + "\n")
    dev = VirtualDevice(DeviceConfig(root=tmp_path / "root", auth=True,
                                     authorized_keys=(keys,))).start()
    try:
        answer = adb_env.client().connect(dev.address, timeout=15)
        assert "failed to authenticate" in answer
        adb_env.wait_for_state(dev.address, "unauthorized")
        r = adb_env.run("shell", "echo should not run", serial=dev.address, timeout=30)
        assert r.returncode != 0 and b"unauthorized" in r.stderr
        assert b"should not run" not in r.stdout
        assert not any(dev.root.rglob("*should*"))

        # Keys are read at each attempt, as adbd reads adb_keys: adding the server's key lets
        # the next connection in, without restarting the device.
        keys.write_text(keys.read_text() + adb_env.public_key.read_text().strip() + "\n")
        adb_env.disconnect(dev.address)
        assert adb_env.connect(dev.address).shell("echo now") == "now"
    finally:
        adb_env.disconnect(dev.address)
        dev.stop()


def test_the_private_adb_server_signs_with_its_own_key_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stranger: rsa.RSAPrivateKey) -> None:
    """The harness's server ignores the developer's ~/.android and ADB_VENDOR_KEYS: a device
    that accepts only the keys found there must not let it in."""
    pem = stranger.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    home = tmp_path / "home"
    (home / ".android").mkdir(parents=True)
    (home / ".android" / "adbkey").write_bytes(pem)
    (home / ".android" / "adbkey.pub").write_text(public_line(stranger))
    (tmp_path / "vendor.adb_key").write_bytes(pem)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("ADB_VENDOR_KEYS", str(tmp_path / "vendor.adb_key"))
    dev = VirtualDevice(DeviceConfig(root=tmp_path / "root", auth=True,
                                     authorized_keys=(home / ".android" / "adbkey.pub",))).start()
    try:
        with AdbServer() as server:
            assert server.public_key.read_text() != public_line(stranger)
            assert "failed to authenticate" in server.client().connect(dev.address, timeout=15)
            server.wait_for_state(dev.address, "unauthorized")
    finally:
        dev.stop()


def test_default_keys_are_the_users_and_the_roots(adb_env: AdbServer, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # ~/.android/adbkey.pub of whoever starts the device...
    home = tmp_path / "home"
    (home / ".android").mkdir(parents=True)
    (home / ".android" / "adbkey.pub").write_bytes(adb_env.public_key.read_bytes())
    monkeypatch.setenv("HOME", str(home))
    dev = VirtualDevice(DeviceConfig(root=tmp_path / "root1", auth=True)).start()
    try:
        assert adb_env.connect(dev.address).shell("echo user key") == "user key"
    finally:
        adb_env.disconnect(dev.address)
        dev.stop()
    # ... and the device's own /data/misc/adb/adb_keys.
    (home / ".android" / "adbkey.pub").unlink()
    root = tmp_path / "root2"
    (root / "data/misc/adb").mkdir(parents=True)
    (root / "data/misc/adb/adb_keys").write_bytes(adb_env.public_key.read_bytes())
    dev = VirtualDevice(DeviceConfig(root=root, auth=True)).start()
    try:
        assert adb_env.connect(dev.address).shell("echo root key") == "root key"
    finally:
        adb_env.disconnect(dev.address)
        dev.stop()


# ---------------------------------------------------------------------------- a raw client


def test_no_shell_without_authentication(device: VirtualDevice,
                                         stranger: rsa.RSAPrivateKey) -> None:
    with RawAdb(device.port) as client:
        first = _token(client.connect())
        # Nothing but AUTH gets an answer before the signature: no OPEN, no shell.
        _open_shell(client, "echo pwned > /data/local/tmp/pwned")
        assert client.recv(timeout=1.0) is None
        # A key the device does not accept: a fresh token, as adbd sends.
        client.send(p.A_AUTH, AUTH_SIGNATURE, 0, sign(stranger, first))
        second = _token(client.recv())
        assert second != first
        # Out of keys, the host offers its public key; with nobody to confirm it, adbd never
        # answers, and neither does the device.
        client.send(p.A_AUTH, AUTH_RSAPUBLICKEY, 0, public_line(stranger).encode() + b"\0")
        assert client.recv(timeout=2.0) is None
        _open_shell(client, "echo pwned > /data/local/tmp/pwned")
        assert client.recv(timeout=1.0) is None
    assert not (device.root / "data/local/tmp/pwned").exists()


def test_a_tampered_or_replayed_signature_is_refused(device: VirtualDevice,
                                                     key: rsa.RSAPrivateKey) -> None:
    with RawAdb(device.port) as client:
        token = _token(client.connect())
        signature = bytearray(sign(key, token))
        signature[len(signature) // 2] ^= 0x01
        client.send(p.A_AUTH, AUTH_SIGNATURE, 0, bytes(signature))
        fresh = _token(client.recv())
        # The right key over the old token: a replay, refused.
        client.send(p.A_AUTH, AUTH_SIGNATURE, 0, sign(key, token))
        fresh = _token(client.recv())
        client.send(p.A_AUTH, AUTH_SIGNATURE, 0, sign(key, fresh))
        online = client.recv()
        assert online is not None and online.name == "CNXN"
        assert online.payload.startswith(b"device::")
        _open_shell(client, "echo in")
        assert client.recv() is not None and client.recv() is not None  # OKAY, then output
        # A new CNXN starts the transport over, and with it authentication (adbd does so).
        _token(client.connect())


def test_cnxn_negotiates_version_and_payload_as_adbd(device: VirtualDevice,
                                                     key: rsa.RSAPrivateKey) -> None:
    with RawAdb(device.port) as client:
        # An old host: version 0x01000000 (checksums on), 4 KiB messages.
        token = _token(client.connect(version=0x01000000, max_payload=4096))
        client.send(p.A_AUTH, AUTH_SIGNATURE, 0, sign(key, token))
        cnxn = client.recv()
        assert cnxn is not None and cnxn.name == "CNXN"
        # adbd: its own version, and the smaller of the two payload sizes.
        assert (cnxn.arg0, cnxn.arg1) == (p.A_VERSION, 4096)
        _open_shell(client, "yes x | head -c 20000")
        okay = client.recv()
        assert okay is not None and okay.name == "OKAY"
        received = b""
        while True:
            message = client.recv()
            assert message is not None
            if message.name == "CLSE":
                break
            assert message.name == "WRTE" and len(message.payload) <= 4096
            assert message.check == p.checksum(message.payload)  # version 0x01000000 checks
            received += message.payload
            client.send(p.A_OKAY, 7, message.arg0)
        assert received == b"x\n" * 10000
    with RawAdb(device.port) as client:
        token = _token(client.connect(max_payload=4 * 1024 * 1024))
        client.send(p.A_AUTH, AUTH_SIGNATURE, 0, sign(key, token))
        cnxn = client.recv()
        assert cnxn is not None and (cnxn.arg0, cnxn.arg1) == (p.A_VERSION, p.MAX_PAYLOAD)


def test_loopback_needs_no_authentication_unless_asked(tmp_path: Path) -> None:
    assert not DeviceConfig(root=tmp_path).auth_required
    assert not DeviceConfig(root=tmp_path, host="localhost").auth_required
    assert not DeviceConfig(root=tmp_path, host="127.0.0.2").auth_required
    assert DeviceConfig(root=tmp_path, auth=True).auth_required
    for host in ("0.0.0.0", "", "192.0.2.7", "no-such-host.invalid"):
        assert DeviceConfig(root=tmp_path, host=host).auth_required, host


# ---------------------------------------------------------------------------- key files


def test_key_encoding_matches_debians_adb(adb_env: AdbServer) -> None:
    line = adb_env.public_key.read_text().strip()
    private = load_private_key(adb_env.private_key)
    encoded, _, comment = line.partition(" ")
    assert encode_public_key(private.public_key(), comment) == line
    parsed = parse_key_line(line, "adbkey.pub:1")
    assert parsed.modulus == private.public_key().public_numbers().n
    assert parsed.comment == comment
    assert re.fullmatch(r"([0-9A-F]{2}:){15}[0-9A-F]{2}", parsed.fingerprint)


def test_key_files_are_checked(tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    good = public_line(key)
    mixed = tmp_path / "mixed"
    mixed.write_text(f"{good}\n\nnot a key\n{good[:100]}\n")
    with pytest.raises(KeyFileError, match=r"mixed:3: not base64"):
        Authenticator((KeySource(mixed, required=True),)).check()
    # A file nobody named (the defaults) is read as adbd reads adb_keys: bad lines skipped.
    assert Authenticator((KeySource(mixed, required=False),)).check() == 1
    with pytest.raises(KeyFileError, match="no such file"):
        Authenticator((KeySource(tmp_path / "missing", required=True),)).check()
    assert Authenticator((KeySource(tmp_path / "missing", required=False),)).check() == 0
    short = tmp_path / "short"
    short.write_text("QUJD\n")
    with pytest.raises(KeyFileError, match=r"short:1: 3 bytes, not an adb RSA-2048"):
        Authenticator((KeySource(short, required=True),)).check()


# ---------------------------------------------------------------------------- the CLI


@pytest.mark.usefixtures("deadline")
@pytest.mark.parametrize("args, message", [
    (["--host", "0.0.0.0"], "adb authentication is required (it listens on 0.0.0.0) but no "
                            "key is accepted"),
    (["--auth"], "adb authentication is required (auth is on) but no key is accepted"),
])
def test_no_key_to_accept_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  args: list[str], message: str) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "empty-home"))
    root = tmp_path / "root"
    r = run_cli("virtual-device", "--root", root, *args)
    assert r.code == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert "--authorized-keys FILE" in lines[0]
    assert not root.exists()  # refused before anything was created


@pytest.mark.usefixtures("deadline")
def test_bad_authorized_keys_exit_2(tmp_path: Path) -> None:
    r = run_cli("virtual-device", "--root", tmp_path / "root", "--auth",
                "--authorized-keys", tmp_path / "nope.pub")
    assert r.code == 2 and r.stderr.strip() == (
        f"edgepack: error: authorized keys: {tmp_path / 'nope.pub'}: no such file")
    bad = tmp_path / "bad.pub"
    bad.write_text("ssh-rsa AAAAB3NzaC1yc2E user@host\n")
    r = run_cli("virtual-device", "--root", tmp_path / "root", "--host", "0.0.0.0",
                "--authorized-keys", bad)
    assert r.code == 2 and f"{bad}:1: not base64" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_the_cli_serves_with_authentication(adb_server: AdbServer, tmp_path: Path) -> None:
    device = DeviceProcess(tmp_path / "root", [
        "--auth", "--authorized-keys", str(adb_server.public_key), "-v"],
        log_path=tmp_path / "vd.log").start()
    try:
        d = adb_server.connect(device.address)
        assert d.shell("echo via cli") == "via cli"
    finally:
        adb_server.disconnect(device.address)
        device.stop()
    log = (tmp_path / "vd.log").read_text()
    assert "adb authentication on" in log and "authorized by key" in log
