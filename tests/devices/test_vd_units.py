"""The virtual device's parts on their own: framing, path mapping, the root's resolver,
properties, dumpsys text. No adb server needed."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from edgepack.devices.virtual import protocol as p
from edgepack.devices.virtual.fs import DeviceFS
from edgepack.devices.virtual.pathmap import CommandMapper, OutputMapper
from edgepack.devices.virtual.props import PropStore, default_props
from edgepack.devices.virtual.stream import Stream
from edgepack.devices.virtual.sysinfo import Battery, Thermal, battery_status

# ---------------------------------------------------------------------------- framing


def test_header_round_trip_and_magic() -> None:
    raw = p.pack_header(p.A_WRTE, 7, 9, 5)
    assert len(raw) == 24
    header = p.unpack_header(raw)
    assert (header.name, header.arg0, header.arg1, header.length) == ("WRTE", 7, 9, 5)
    bad = raw[:20] + b"\0\0\0\0"
    with pytest.raises(p.ProtocolError, match="bad magic"):
        p.unpack_header(bad)
    with pytest.raises(p.ProtocolError, match="exceeds"):
        p.unpack_header(p.pack_header(p.A_WRTE, 1, 1, p.MAX_PAYLOAD + 1))


def test_checksum_is_a_byte_sum() -> None:
    assert p.checksum(b"\x01\x02\xff") == 258


# ---------------------------------------------------------------------------- command mapping

LINK = "/tmp/epvd-test/r"


def test_device_prefixes_are_mapped_at_word_boundaries_only() -> None:
    m = CommandMapper(LINK)
    assert m.map_command("cat /data/local/tmp/x") == f"cat {LINK}/data/local/tmp/x"
    assert m.map_command("ls /sdcard") == f"ls {LINK}/sdcard"
    assert m.map_command("LD_LIBRARY_PATH=/data/a:/data/b x") == (
        f"LD_LIBRARY_PATH={LINK}/data/a:{LINK}/data/b x")
    assert m.map_command("--out=/storage/x,/mnt/y") == f"--out={LINK}/storage/x,{LINK}/mnt/y"
    assert m.map_command("echo $(/data/x)") == f"echo $({LINK}/data/x)"
    # Not a device path: inside another word, another component, another root.
    for untouched in ("ls /database", "cat x/data/y", "ls /system/bin", "echo ${HOME}/data"):
        assert m.map_command(untouched) == untouched


def test_mapping_never_changes_what_the_shell_parses(tmp_path: Path) -> None:
    """shlex.quote'd device paths with every hostile character still name one file each, and
    the `$()`, backticks and `;` inside them never run."""
    root = tmp_path / "root with space"
    root.mkdir()
    link = tmp_path / "link"
    link.symlink_to(root)
    m = CommandMapper(str(link))
    names = ["a b", "it's", 'say "hi"', "x;touch pwned", "$(touch pwned)", "`touch pwned`",
             "ünïcødé ☃", "-dash", "new\nline"]
    for name in names:
        device_path = f"/data/local/tmp/{name}"
        cmd = f"mkdir -p {shlex.quote(device_path)} && echo ok > {shlex.quote(device_path + '/f')}"
        mapped = m.map_command(cmd)
        assert shlex.split(mapped) == [w.replace("/data/", f"{link}/data/", 1)
                                       for w in shlex.split(cmd)]
        subprocess.run(["sh", "-c", mapped], check=True, cwd=tmp_path)
        assert (root / "data/local/tmp" / name / "f").read_text() == "ok\n"
    assert not list(tmp_path.rglob("pwned"))


def test_link_must_be_a_plain_path() -> None:
    with pytest.raises(ValueError):
        CommandMapper("/tmp/has space/r")


def test_output_mapper_turns_host_names_back_into_device_paths() -> None:
    m = OutputMapper((LINK, "/home/u/my root"))
    out = m.feed(f"{LINK}/data/x\n{LINK}\n/home/u/my root/sdcard ok {LINK}x\n".encode())
    out += m.close()
    assert out == f"/data/x\n/\n/sdcard ok {LINK}x\n".encode()


@pytest.mark.parametrize("cut", range(1, 30))
def test_output_mapper_handles_any_chunk_boundary(cut: int) -> None:
    text = f"abc {LINK}/data/local/tmp/f: No such file\nend {LINK}".encode()
    m = OutputMapper((LINK,))
    out = m.feed(text[:cut]) + m.feed(text[cut:]) + m.close()
    assert out == b"abc /data/local/tmp/f: No such file\nend /"


# ---------------------------------------------------------------------------- the root


@pytest.fixture
def fs(tmp_path: Path) -> DeviceFS:
    root = tmp_path / "root"
    (root / "data/local/tmp").mkdir(parents=True)
    (tmp_path / "secret").write_text("host file")
    return DeviceFS(root, host_aliases=("/tmp/epvd-x/r",))


def test_paths_cannot_leave_the_root(fs: DeviceFS, tmp_path: Path) -> None:
    root = fs.root
    tmp = Path(root) / "data/local/tmp"
    assert fs.resolve("/data/local/tmp/a") == f"{root}/data/local/tmp/a"
    assert fs.resolve("/../../../secret") == f"{root}/secret"
    assert fs.resolve("data/../../secret") == f"{root}/secret"
    (tmp / "abs").symlink_to("/")  # absolute targets are device paths
    assert fs.resolve("/data/local/tmp/abs/../secret") == f"{root}/secret"
    (tmp / "rel").symlink_to("../../../../secret")
    assert fs.resolve("/data/local/tmp/rel") == f"{root}/secret"
    (tmp / "host").symlink_to(tmp_path / "secret")
    assert fs.resolve("/data/local/tmp/host").startswith(root + "/")
    (tmp / "via-link").symlink_to("/tmp/epvd-x/r/data/local/tmp/a")  # made through the shell
    assert fs.resolve("/data/local/tmp/via-link") == f"{root}/data/local/tmp/a"
    # The final component is kept when asked (lstat, replace).
    assert fs.resolve("/data/local/tmp/rel", follow_final=False) == f"{root}/data/local/tmp/rel"


def test_symlink_loops_end(fs: DeviceFS) -> None:
    tmp = Path(fs.root) / "data/local/tmp"
    (tmp / "a").symlink_to("b")
    (tmp / "b").symlink_to("a")
    with pytest.raises(OSError, match="symbolic links"):
        fs.resolve("/data/local/tmp/a")


def test_quota_reservations(fs: DeviceFS) -> None:
    (Path(fs.root) / "data/local/tmp/f").write_bytes(b"x" * 100)
    assert fs.usage() == 100
    assert fs.reserve(150, 100, 50)
    assert not fs.reserve(150, 100, 1)  # the first reservation still holds 50
    fs.release(50)
    assert fs.reserve(150, 100, 1)


# ---------------------------------------------------------------------------- properties


def test_default_props_follow_abi_and_sdk(tmp_path: Path) -> None:
    props = default_props(serial="s1", abi="arm64-v8a", model="Pixel 7", manufacturer="Google",
                          sdk=33, release=None, soc_model="Tensor G2", soc_manufacturer="Google")
    assert props["ro.product.cpu.abilist"] == "arm64-v8a,armeabi-v7a,armeabi"
    assert props["ro.product.cpu.abilist64"] == "arm64-v8a"
    assert props["ro.build.version.release"] == "13"
    assert props["ro.edgepack.virtual"] == "1"
    assert props["ro.edgepack.runner_target"] == "host"
    store = PropStore(tmp_path / "props", props)
    store.set("debug.x", "a=b c")
    assert store.get("debug.x") == "a=b c"
    banner = store.banner(("shell_v2", "stat_v2"))
    assert banner == (b"device::ro.product.name=edgepack_virtual;ro.product.model=Pixel 7;"
                      b"ro.product.device=virtual;features=shell_v2,stat_v2")
    with pytest.raises(ValueError):
        store.set("bad name", "x")
    with pytest.raises(ValueError):
        store.set("x", "two\nlines")


def test_dumpsys_text_matches_android() -> None:
    battery = Battery(level=42, temperature=315, status=battery_status("discharging")).dumpsys()
    assert "Current Battery Service state:\n" in battery
    assert "  level: 42\n" in battery and "  temperature: 315\n" in battery
    assert "  status: 3\n" in battery
    thermal = Thermal(status=2, temperatures={"cpu0": 41.25, "skin": 33.0}).dumpsys()
    assert "Thermal Status: 2\n" in thermal
    assert "\tTemperature{mValue=41.2, mType=0, mName=cpu0, mStatus=2}" in thermal
    assert "\tTemperature{mValue=33.0, mType=3, mName=skin, mStatus=2}" in thermal
    with pytest.raises(ValueError):
        battery_status("exploding")


# ---------------------------------------------------------------------------- stream window


class _FakeConn:
    max_send = 10

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def send_okay(self, local: int, remote: int) -> None:
        self.sent.append(("OKAY", b""))

    def send_write(self, local: int, remote: int, data: bytes) -> None:
        self.sent.append(("WRTE", bytes(data)))

    def send_close(self, local: int, remote: int) -> None:
        self.sent.append(("CLSE", b""))

    def forget(self, stream: Stream) -> None:
        pass


def test_stream_flow_control_both_ways() -> None:
    conn = _FakeConn()
    s = Stream(conn, 1, 2, "test:")  # type: ignore[arg-type]
    s.IN_WINDOW = 8
    s.deliver(b"12345")
    s.deliver(b"6789abc")  # past the window: the OKAY waits for the reader
    assert [k for k, _ in conn.sent] == ["OKAY"]
    assert bytes(s.read_exact(6)) == b"123456"
    assert [k for k, _ in conn.sent] == ["OKAY", "OKAY"]
    # Writes go out max_send at a time, each after the host's OKAY for the last.
    s.write(b"x" * 25)
    assert conn.sent[-1] == ("WRTE", b"x" * 10)
    s.acknowledged()
    s.acknowledged()
    assert [d for k, d in conn.sent if k == "WRTE"] == [b"x" * 10, b"x" * 10, b"x" * 5]
    s.acknowledged()
    s.close()
    assert conn.sent[-1][0] == "CLSE"
    assert bytes(s.read(10)) == b"789abc"  # what arrived is still there to read
    assert s.read(10) == b""  # then reads end
