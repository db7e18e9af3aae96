"""SIGTERM and Ctrl-C during a browser run: the server and Chromium stop, nothing stays behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, unavailable

SCRIPT = r"""
import json, sys
from pathlib import Path
import numpy as np
from onnx import TensorProto, helper
import onnx
from edgepack.web.browser import open_browser

x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
g = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "g", [x],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
model = Path(sys.argv[1])
onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
          str(model))
with open_browser() as browser:
    print(json.dumps({"pid": browser.info.pid, "udd": browser.info.user_data_dir,
                      "port": browser.server.port}), flush=True)
    browser.run(model, [{"x": np.ones(2, np.float32)}], min_seconds=120, timeout_s=300)
print("finished", flush=True)
"""


def _chromium_of(udd: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().decode("utf-8", "replace")
            except OSError:
                continue
            if udd in cmd:
                found.append(int(entry.name))
    return found


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_run_stops_server_and_chromium(tmp_path, signum):
    if not Path("/usr/bin/chromium").exists() and not os.environ.get("EDGEPACK_CHROMIUM"):
        unavailable("no Chromium (apt-get install chromium)")
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path / "add.onnx")],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        info = json.loads(line)
        assert info["udd"] and _chromium_of(info["udd"]) and _port_open(info["port"])
        time.sleep(4)  # the page is loaded and iterating
        proc.send_signal(signum)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    rest = proc.stdout.read()
    assert "finished" not in rest
    if signum == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM
    deadline = time.monotonic() + 10
    while _chromium_of(info["udd"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _chromium_of(info["udd"])
    assert not _port_open(info["port"])
    assert not Path(info["udd"]).exists()


def test_the_previous_sigterm_handler_comes_back():
    if not Path("/usr/bin/chromium").exists() and not os.environ.get("EDGEPACK_CHROMIUM"):
        unavailable("no Chromium (apt-get install chromium)")
    from edgepack.web.browser import open_browser

    def mine(signum, frame):  # noqa: ANN001
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        with open_browser():
            assert signal.getsignal(signal.SIGTERM) is not mine
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)
