"""`edgepack virtual-device` and `python -m edgepack.virtual_device`."""

from __future__ import annotations

import glob
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgepack.devices.virtual.harness import AdbServer, DeviceProcess


def _module(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgepack.virtual_device", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_help_says_it_runs_the_hosts_programs() -> None:
    r = subprocess.run([sys.executable, "-m", "edgepack", "virtual-device", "--help"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    assert "runs THIS machine's programs, so its ABI is the host's (x86_64" in text
    for flag in ("--port", "--root", "--abi", "--prop", "--bandwidth", "--drop-after",
                 "--vanish-on", "--quota", "--runner-fault"):
        assert flag in text
    assert "x86_64" in " ".join(_module("--help").stdout.split())


@pytest.mark.parametrize("args, message", [
    (["--bandwidth", "fast"], "--bandwidth 'fast': expected a number of bytes"),
    (["--runner-fault", "explode"], "runner fault 'explode'"),
    (["--battery-status", "exploding"], "battery status 'exploding'"),
    (["--prop", "novalue"], "--prop 'novalue': expected KEY=VALUE"),
    (["--vanish-on", "("], "vanish pattern '(' is not a regular expression"),
])
def test_bad_options_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    r = _module("--root", str(tmp_path / "root"), *args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr


def test_a_taken_port_exits_2(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = _module("--root", str(tmp_path), "--port", str(port))
    assert r.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in r.stderr


def _state_dirs_for(root: Path) -> list[str]:
    real = os.path.realpath(root)
    return [link for link in glob.glob("/tmp/epvd-*/r") if os.path.realpath(link) == real]


def test_serves_until_sigterm_and_cleans_up(adb_server: AdbServer, tmp_path: Path) -> None:
    root = tmp_path / "root dir"
    device = DeviceProcess(root, ["--model", "Lab Phone", "--sdk", "30"]).start()
    try:
        d = adb_server.connect(device.address)
        assert d.shell("getprop ro.product.model; getprop ro.build.version.release") == (
            "Lab Phone\n11")
        assert len(_state_dirs_for(root)) == 1
        assert (root / "data/local/tmp").is_dir() and (root / "sdcard").is_dir()
    finally:
        adb_server.disconnect(device.address)
        proc = device.proc
        assert proc is not None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    assert _state_dirs_for(root) == []
    assert root.is_dir()  # the root is the user's: never removed


def test_the_main_cli_serves_too(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgepack", "virtual-device", "--root", str(tmp_path / "r"),
         "--port-file", str(port_file), "-v"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        port = int(port_file.read_text())
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"\0" * 24)  # not adb: dropped, with one line of log
            assert s.recv(100) == b""
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert f"attach it with: adb connect 127.0.0.1:{port}" in err
    assert "dropping the connection: bad magic" in err and "Traceback" not in err
