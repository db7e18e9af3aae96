"""The virtual device's userland: Android's (mksh, toybox's applets alone on PATH) for a phone,
the host's (/bin/sh, GNU coreutils) for a Linux board or when asked."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgepack.devices.virtual.harness import AttachedDevice, DeviceFactory
from tests.conftest import unavailable

TMP = "/data/local/tmp"


@pytest.fixture
def android_tools() -> tuple[str, str]:
    mksh, toybox = shutil.which("mksh"), shutil.which("toybox")
    if not (mksh and toybox):
        unavailable("mksh and toybox are not installed (apt-get install mksh toybox)")
    return mksh, toybox  # type: ignore[return-value]


def _sh(device: AttachedDevice, command: str) -> tuple[int, str]:
    r = device.adb.shell2(command)
    return r.returncode, r.output


def test_a_phone_runs_mksh_with_toybox_and_nothing_of_the_hosts(
        virtual_devices: DeviceFactory, android_tools: tuple[str, str]) -> None:
    mksh, toybox = android_tools
    phone = virtual_devices.start()  # the default where mksh and toybox are installed
    assert phone.device is not None and phone.device.toolbox.userland.name == "android"
    code, out = _sh(phone, 'echo "$KSH_VERSION"; echo "$SHELL"')
    assert code == 0 and out.splitlines() == [out.splitlines()[0], mksh]
    assert "MIRBSD KSH" in out
    # Every coreutils-like command a deploy sends is toybox's; sh is mksh, as on a phone.
    for applet in ("stat", "sha256sum", "timeout", "taskset", "date", "mv", "cut", "find"):
        code, out = _sh(phone, f'realpath "$(command -v {applet})"')
        assert (code, out.strip()) == (0, str(Path(toybox).resolve())), applet
    assert _sh(phone, 'realpath "$(command -v sh)"')[1].strip() == str(Path(mksh).resolve())
    # Nothing of the host's: awk and bash are not on a phone's PATH.
    for program in ("awk", "bash", "python3"):
        assert _sh(phone, f"{program} --version")[0] == 127, program
    # The device's own tools stay (df too: it answers from the quota fault when one is set).
    assert _sh(phone, "getprop ro.product.model")[1].strip() == "edgepack virtual device"
    assert _sh(phone, "setprop edgepack.x 'a b' && getprop edgepack.x")[1].strip() == "a b"
    assert "level: 90" in _sh(phone, "dumpsys battery")[1]
    # toybox's output, in the formats edgepack parses.
    code, out = _sh(phone, f"cd {TMP} && echo x > 'f g' && stat -c '%s %y %n' 'f g' && "
                           "sha256sum 'f g' && df -k . | tail -n 1")
    size_line, sum_line, df_line = out.splitlines()
    assert size_line.startswith("2 ") and size_line.endswith(" f g")
    assert sum_line.endswith("  f g") and len(sum_line.split()[0]) == 64
    assert df_line.split()[3].isdigit()


def test_the_quota_df_works_under_the_android_userland(
        virtual_devices: DeviceFactory, android_tools: tuple[str, str]) -> None:
    phone = virtual_devices.start(userland="android")
    assert phone.device is not None
    phone.device.faults.quota_bytes = 4 * 1024 * 1024
    line = _sh(phone, f"df -k {TMP} | tail -n 1")[1].split()
    assert line[0] == "/dev/block/vdquota" and line[1] == "4096"


def test_a_linux_board_and_the_host_userland_run_the_hosts_sh(
        virtual_devices: DeviceFactory) -> None:
    board = virtual_devices.start(linux_board=True)
    asked = virtual_devices.start(userland="host")
    for device in (board, asked):
        assert device.device is not None and device.device.toolbox.userland.name == "host"
        code, out = _sh(device, 'echo "[$KSH_VERSION]"; command -v stat')
        assert out.splitlines() == ["[]", shutil.which("stat")]
    assert _sh(asked, "getprop ro.product.model")[1].strip() == "edgepack virtual device"


def test_the_factory_default_reaches_separate_processes(
        adb_env, tmp_path: Path, android_tools: tuple[str, str]) -> None:
    with DeviceFactory(adb_env, tmp_path / "vd", userland="host") as factory:
        separate = factory.start(separate_process=True)
        in_process = factory.start()
        for device in (separate, in_process):
            assert _sh(device, 'echo "[$KSH_VERSION]"')[1].strip() == "[]"
        android = factory.start(separate_process=True, args=["--userland", "android"])
        assert "MIRBSD KSH" in _sh(android, 'echo "$KSH_VERSION"')[1]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgepack", "virtual-device", *args],
                          capture_output=True, text=True, timeout=60, env=env)


def test_bad_userlands_exit_2(tmp_path: Path) -> None:
    r = _cli("--root", str(tmp_path / "r"), "--userland", "ios")
    assert r.returncode == 2 and "userland 'ios': choose one of android, host" in r.stderr
    assert "Traceback" not in r.stderr
    # A machine without mksh and toybox: the android userland says what to install.
    bare = tmp_path / "bin"
    bare.mkdir()
    env = {**os.environ, "PATH": str(bare)}
    r = _cli("--root", str(tmp_path / "r"), "--userland", "android", env=env)
    assert r.returncode == 2 and "apt-get install mksh toybox" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
