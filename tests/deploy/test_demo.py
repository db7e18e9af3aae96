"""scripts/demo.sh on a machine with no phone: it deploys to a virtual device behind an adb
server of its own, prints the top-1 class and the latency, and stops what it started."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from pathlib import Path

from edgepack.devices.virtual.harness import AdbServer
from tests.conftest import REPO

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _processes_naming(text: str) -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path("/proc", entry, "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        if text in cmdline:
            found.append(cmdline)
    return found


def test_the_demo_deploys_to_a_virtual_device_when_no_phone_is_connected(tmp_path):
    work = tmp_path / "demo"
    # The adb server the demo asks for devices: one of the test's own, with nothing on it, so
    # the demo sees no phone here as on a fresh machine (and a developer's phone is left alone).
    with AdbServer() as empty:
        env = {**os.environ, **empty.env(), "EDGEPACK_DEMO_DIR": str(work)}
        env.pop("ANDROID_SERIAL", None)
        proc = subprocess.run(["bash", str(REPO / "scripts" / "demo.sh")], env=env,
                              capture_output=True, text=True, timeout=1200,
                              stdin=subprocess.DEVNULL)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    started = re.search(r"private adb server on port (\d+)", out)
    assert started, out[-3000:]
    top = re.search(r"demo: top-1 on (127\.0\.0\.1:\d+): (\w+) \(class (\d)", out)
    assert top and top.group(2) == CLASSES[int(top.group(3))], out[-3000:]
    assert re.search(r"demo: latency on 127\.0\.0\.1:\d+: median [\d.]+ ms, mean [\d.]+ ms "
                     r"over 50 runs", out)
    report = json.loads((work / "deploy.json").read_text())
    assert report["engine"] == "native" and report["device"]["serial"] == top.group(1)
    assert report["device"]["virtual"] is True and report["device"]["model"] == "demo phone"
    assert all(v["passed"] for s in report["sets"] for v in s["verdicts"])
    assert (work / "outputs" / "test_data_set_0" / "output_0.pb").is_file()
    # What the demo started is gone: its adb server and its virtual device.
    assert not _listening(int(started.group(1)))
    assert not _listening(int(top.group(1).rsplit(":", 1)[1]))
    assert not _processes_naming(str(work / "virtual-device.port"))
