"""The transport as adbd runs it, message by message, where adb and adbutils would hide it."""

from __future__ import annotations

from pathlib import Path

from edgepack.devices.virtual import DeviceConfig, VirtualDevice
from edgepack.devices.virtual import protocol as p

from .rawadb import RawAdb


def test_a_clse_is_answered_with_clse(tmp_path: Path) -> None:
    """adbd answers the peer's CLSE with its own and closes the stream."""
    dev = VirtualDevice(DeviceConfig(root=tmp_path / "root")).start()
    try:
        with RawAdb(dev.port) as client:
            assert client.connect().name == "CNXN"
            client.send(p.A_OPEN, 5, 0, b"sync:\0")
            okay = client.recv()
            assert okay is not None and (okay.name, okay.arg1) == ("OKAY", 5)
            device_id = okay.arg0
            client.send(p.A_CLSE, 5, device_id)
            answer = client.recv(timeout=2.0)
            assert answer is not None and (answer.name, answer.arg0, answer.arg1) == (
                "CLSE", device_id, 5)
            # Once: the stream is gone, a second CLSE meets nothing.
            client.send(p.A_CLSE, 5, device_id)
            assert client.recv(timeout=0.5) is None
            # The same for a shell whose command still runs: answered, and the command ends.
            client.send(p.A_OPEN, 6, 0, b"shell:sleep 30\0")
            okay = client.recv()
            assert okay is not None and okay.name == "OKAY"
            client.send(p.A_CLSE, 6, okay.arg0)
            answer = client.recv(timeout=2.0)
            assert answer is not None and (answer.name, answer.arg1) == ("CLSE", 6)
    finally:
        dev.stop()
