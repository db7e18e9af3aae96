"""`edgepack virtual-device` refuses what it cannot serve: one line, exit 2, before it creates
or listens on anything (the `deadline` fixture fails a test whose command serves instead)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.usefixtures("deadline")


def _refused(tmp_path: Path, *args: str | Path) -> str:
    """The one line of a refused `virtual-device` (root tmp_path/root unless args name one)."""
    root = [] if "--root" in args else ["--root", tmp_path / "root"]
    r = run_cli("virtual-device", *root, *args)
    assert r.code == 2, (r.code, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgepack: error: "), r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    return lines[0]


def test_a_root_that_is_a_file(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.write_text("not a directory\n")
    line = _refused(tmp_path, "--root", root)
    assert f"the root {root} is a file, not a directory" in line
    assert "cannot listen" not in line
    assert root.read_text() == "not a directory\n"


def test_a_root_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    line = _refused(tmp_path, "--root", tmp_path / "file" / "root")
    assert f"cannot create the root {tmp_path / 'file' / 'root'}: Not a directory" in line


@pytest.mark.parametrize("args, message", [
    (["--port", "99999"], "--port 99999: expected 0 to 65535 (0 picks a free port)"),
    (["--port", "-1"], "--port -1: expected 0 to 65535"),
    (["--latency-ms", "-5"], "--latency-ms -5.0: expected 0 to 600000 milliseconds"),
    (["--latency-ms", "nan"], "--latency-ms nan: expected 0 to 600000"),
    (["--battery-level", "150"], "--battery-level 150: expected 0 to 100 (percent)"),
    (["--battery-level", "-1"], "--battery-level -1: expected 0 to 100"),
    (["--battery-temperature", "-3000"], "--battery-temperature -3000: expected tenths of a "
                                         "degree C"),
    (["--thermal-status", "7"], "--thermal-status 7: expected 0 (none) to 6 (shutdown)"),
    (["--thermal-status", "-1"], "--thermal-status -1: expected 0 (none) to 6"),
    (["--vanish-after", "-1"], "--vanish-after -1.0: expected 0 to 604800 seconds"),
    (["--vanish-after", "inf"], "--vanish-after inf: expected 0 to 604800 seconds"),
    (["--revive-after", "-2"], "--revive-after -2.0: expected 0 to 604800 seconds"),
    (["--vanish-delay", "-0.5"], "--vanish-delay -0.5: expected 0 to 604800 seconds"),
    (["--bandwidth", "0"], "--bandwidth 0: expected more than 0 bytes/s"),
    (["--bandwidth", "-5M"], "--bandwidth '-5M': expected a number of bytes"),
    (["--drop-after", "-1"], "--drop-after '-1': expected a number of bytes"),
    (["--quota", "lots"], "--quota 'lots': expected a number of bytes"),
    (["--sdk", "0"], "--sdk 0: expected an API level, 1 or more"),
    (["--temperature", "cpu0=-300"], "--temperature cpu0=-300: expected NAME=CELSIUS"),
    (["--temperature", "cpu0=hot"], "--temperature cpu0=hot: expected NAME=CELSIUS"),
    (["--battery-status", "9"], "battery status 9: expected 1 to 5"),
])
def test_numeric_options_out_of_range(tmp_path: Path, args: list[str], message: str) -> None:
    assert message in _refused(tmp_path, *args)
    assert not (tmp_path / "root").exists()  # checked before anything was created


def test_a_port_file_in_a_missing_directory(tmp_path: Path) -> None:
    port_file = tmp_path / "no-such-dir" / "port"
    line = _refused(tmp_path, "--port-file", port_file)
    assert f"--port-file {port_file}: the directory {port_file.parent} does not exist" in line


def test_a_taken_port(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        line = _refused(tmp_path, "--port", str(port))
    assert f"cannot listen on 127.0.0.1:{port} (Address already in use)" in line
