"""The virtual device driven by the real adb server, through adbutils and the adb client."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shlex
import socket
import stat
import struct
import threading
import time
from pathlib import Path

import adbutils
import pytest

from edgepack.devices.virtual import protocol as p
from edgepack.devices.virtual.harness import AdbServer, AttachedDevice, DeviceFactory

from .helpers import raw_push, raw_recv

TMP = "/data/local/tmp"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------- connection


def test_connects_with_its_banner_and_features(virtual_device: AttachedDevice,
                                               adb_env: AdbServer) -> None:
    d = virtual_device.adb
    assert d.get_state() == "device"
    assert set(d.get_features().split(",")) == {"shell_v2", "stat_v2", "fixed_push_mkdir"}
    listing = adb_env.run("devices", "-l").stdout.decode()
    assert re.search(rf"^{re.escape(virtual_device.serial)}\s+device product:edgepack_virtual "
                     r"model:edgepack_virtual_device device:virtual", listing, re.MULTILINE)
    # adbutils' default client follows ANDROID_ADB_SERVER_PORT, as edgepack's code does.
    assert virtual_device.serial in [x.serial for x in adbutils.AdbClient().device_list()]


def test_properties_are_configurable(virtual_devices: DeviceFactory) -> None:
    dev = virtual_devices.start(abi="arm64-v8a", model="Pixel 7", manufacturer="Google", sdk=33,
                                soc_model="Tensor G2", serial="lab-7",
                                props={"ro.product.name": "panther"})
    d = dev.adb
    assert d.prop.model == "Pixel 7"
    assert d.prop.name == "panther"
    assert d.prop.get("ro.product.cpu.abi") == "arm64-v8a"
    assert d.shell("getprop ro.product.cpu.abilist") == "arm64-v8a,armeabi-v7a,armeabi"
    assert d.shell("getprop ro.build.version.release") == "13"
    assert d.shell("getprop ro.no.such.prop") == ""
    assert d.shell("getprop ro.no.such.prop fallback") == "fallback"
    listed = dict(re.findall(r"^\[([^\]]+)\]: \[(.*)\]$", d.shell("getprop"), re.MULTILINE))
    assert listed["ro.soc.model"] == "Tensor G2"
    assert listed["ro.serialno"] == "lab-7" == d.shell("getprop ro.serialno")
    assert listed["ro.edgepack.virtual"] == "1"
    assert listed["ro.edgepack.runner_target"] == "host"
    assert listed["ro.build.version.sdk"] == "33"
    # It runs this machine's programs whatever its ABI says.
    assert d.shell("uname -m") == platform.machine()
    # setprop: ordinary properties change, read-only ones do not; Python sees the same store.
    assert d.shell2("setprop debug.edgepack 'a b'").returncode == 0
    assert dev.device is not None and dev.device.props.get("debug.edgepack") == "a b"
    ro = d.shell2("setprop ro.product.model Other", v2=True)
    assert ro.returncode == 1 and "Failed to set property" in ro.stderr
    dev.device.props.set("debug.from.python", "yes")
    assert d.shell("getprop debug.from.python") == "yes"


def test_dumpsys_battery_and_thermal(virtual_device: AttachedDevice) -> None:
    d = virtual_device.adb
    battery = d.shell("dumpsys battery")
    assert "  level: 90" in battery and "  temperature: 250" in battery
    assert virtual_device.device is not None
    virtual_device.device.set_battery(level=12, temperature=412, status=3)
    virtual_device.device.set_thermal(status=3, temperatures={"cpu0": 71.5})
    battery = d.shell("dumpsys battery")
    assert "  level: 12\n" in battery and "  temperature: 412\n" in battery
    assert "  status: 3\n" in battery
    thermal = d.shell("dumpsys thermalservice")
    assert "Thermal Status: 3" in thermal and "mValue=71.5, mType=0, mName=cpu0" in thermal
    missing = d.shell2("dumpsys nothing", v2=True)
    assert "Can't find service: nothing" in missing.stderr


# ---------------------------------------------------------------------------- shell, exec


def test_shell_v2_and_v1_exit_codes_and_stderr(virtual_device: AttachedDevice) -> None:
    d = virtual_device.adb
    r = d.shell2("echo out; echo err >&2; exit 7", v2=True)
    assert (r.returncode, r.stdout, r.stderr) == (7, "out\n", "err\n")
    assert d.shell2("kill -9 $$", v2=True).returncode == 128 + 9
    v1 = d.shell2("echo out; echo err >&2; false")  # v1: merged, code from adbutils' echo
    assert v1.returncode == 1 and v1.output == "out\nerr\n"
    assert d.shell("echo $HOME; pwd; cd /data/local/tmp && pwd") == f"/\n/\n{TMP}"


def test_exec_service_merges_output(virtual_device: AttachedDevice, adb_env: AdbServer) -> None:
    with virtual_device.adb.open_transport() as c:
        c.send_command("exec:printf 'a\\0b'; echo e >&2")
        c.check_okay()
        assert c.read_until_close(encoding=None) == b"a\0be\n"
    out = adb_env.run("exec-out", "head -c 3 /dev/zero", serial=virtual_device.serial)
    assert out.stdout == b"\0\0\0"


def test_the_adb_client_shell_with_stdin(virtual_device: AttachedDevice,
                                         adb_env: AdbServer) -> None:
    r = adb_env.run("shell", "echo a; echo b >&2; exit 4", serial=virtual_device.serial)
    assert (r.returncode, r.stdout, r.stderr) == (4, b"a\n", b"b\n")
    # sed: in toybox and coreutils alike (Debian's toybox has no tr).
    r = adb_env.run("shell", "sed s/hello/HELLO/", serial=virtual_device.serial,
                    input=b"hello\n")
    assert (r.returncode, r.stdout) == (0, b"HELLO\n")
    # No command and no terminal: a shell reading its script from stdin.
    r = adb_env.run("shell", serial=virtual_device.serial, input=b"echo hi\nexit 3\n")
    assert (r.returncode, r.stdout) == (3, b"hi\n")


def test_a_pty_when_asked(virtual_devices: DeviceFactory, adb_env: AdbServer) -> None:
    # The host userland: Debian's toybox has no stty (Android's has).
    device = virtual_devices.start(userland="host")
    r = adb_env.run("shell", "-tt", "tty; stty size; exit 5", serial=device.serial)
    assert r.returncode == 5
    assert re.match(rb"/dev/pts/\d+\r\n\d+ \d+\r\n$", r.stdout), r.stdout


# ---------------------------------------------------------------------------- files


def test_push_stat_list_pull_round_trip(virtual_device: AttachedDevice, tmp_path: Path) -> None:
    d = virtual_device.adb
    before = int(time.time())
    d.sync.push(b"hello", f"{TMP}/new/dir/a.txt", mode=0o750)  # parents are created
    info = d.sync.stat(f"{TMP}/new/dir/a.txt")
    # adbd copies the owner's bits to group and others, so 0750 lands as 0777.
    assert (info.mode, info.size) == (stat.S_IFREG | 0o777, 5)
    assert info.mtime is not None and info.mtime.timestamp() >= before - 1
    assert d.sync.read_bytes(f"{TMP}/new/dir/a.txt") == b"hello"
    names = {f.path: f for f in d.sync.list(f"{TMP}/new/dir")}
    assert set(names) == {".", "..", "a.txt"} and names["a.txt"].size == 5
    assert not d.sync.exists(f"{TMP}/missing")
    assert raw_recv(d, f"{TMP}/missing") == (b"", "open failed: No such file or directory")
    assert raw_push(d, b"x", f"{TMP}/new") == ("FAIL", "couldn't create file: Is a directory")
    # A given mtime is kept; the file on the host side is real.
    assert raw_push(d, b"old", f"{TMP}/old.txt", mtime=1_000_000_000) == ("OKAY", "")
    assert d.sync.stat(f"{TMP}/old.txt").mtime.timestamp() == 1_000_000_000
    assert (virtual_device.root / "data/local/tmp/old.txt").read_bytes() == b"old"
    d.sync.pull(f"{TMP}/new", tmp_path / "pulled")
    assert (tmp_path / "pulled/dir/a.txt").read_bytes() == b"hello"


def test_large_files_both_ways_and_with_the_adb_client(virtual_device: AttachedDevice,
                                                       adb_env: AdbServer,
                                                       tmp_path: Path) -> None:
    d = virtual_device.adb
    data = os.urandom(24 * 1024 * 1024 + 123)
    local = tmp_path / "big.bin"
    local.write_bytes(data)
    os.utime(local, (1_500_000_000, 1_500_000_000))
    d.sync.push(local, f"{TMP}/big1")  # adbutils: 4 KiB DATA
    assert raw_push(d, data, f"{TMP}/big2") == ("OKAY", "")  # 64 KiB DATA, as deploy pushes
    r = adb_env.run("push", str(local), f"{TMP}/big3", serial=virtual_device.serial)
    assert r.returncode == 0, r.stderr
    want = sha256(data)
    for name in ("big1", "big2", "big3"):
        assert d.shell(f"sha256sum {TMP}/{name}").split()[0] == want
    # adb push keeps the local mtime; adb pull -a brings it back.
    assert d.sync.stat(f"{TMP}/big3").mtime.timestamp() == 1_500_000_000
    d.sync.pull(f"{TMP}/big2", tmp_path / "back1")
    assert sha256((tmp_path / "back1").read_bytes()) == want
    r = adb_env.run("pull", "-a", f"{TMP}/big3", str(tmp_path / "back2"),
                    serial=virtual_device.serial)
    assert r.returncode == 0, r.stderr
    assert sha256((tmp_path / "back2").read_bytes()) == want
    assert (tmp_path / "back2").stat().st_mtime == 1_500_000_000


def test_the_adb_client_pushes_and_pulls_trees(virtual_device: AttachedDevice,
                                               adb_env: AdbServer, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub/f.bin").write_bytes(os.urandom(70_000))
    (tree / "exe.sh").write_text("#!/bin/sh\necho run\n")
    (tree / "exe.sh").chmod(0o755)
    (tree / "link").symlink_to("exe.sh")
    serial = virtual_device.serial
    r = adb_env.run("push", str(tree), f"{TMP}/tree", serial=serial)
    assert r.returncode == 0, r.stderr
    assert virtual_device.adb.shell(f"{TMP}/tree/link") == "run"
    r = adb_env.run("pull", f"{TMP}/tree", str(tmp_path / "back"), serial=serial)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "back/sub/f.bin").read_bytes() == (tree / "sub/f.bin").read_bytes()
    assert adb_env.run("shell", f"ls {TMP}/tree", serial=serial).stdout.split() == [
        b"exe.sh", b"link", b"sub"]


HOSTILE = ["a b", "it's", 'say "hi"', "semi;colon", "$(touch PWNED)", "`touch PWNED`",
           "ünïcødé ☃", "-dash", "back\\slash", "*"]


@pytest.mark.parametrize("name", HOSTILE)
def test_quoted_paths_work_and_never_execute(virtual_device: AttachedDevice,
                                             adb_env: AdbServer, name: str) -> None:
    d = virtual_device.adb
    q = shlex.quote
    folder = f"{TMP}/q {name}"
    remote = f"{folder}/{name}.bin"
    data = name.encode() * 100
    assert raw_push(d, data, remote) == ("OKAY", "")
    r = d.shell2(f"sha256sum {q(remote)} && mv {q(remote)} {q(remote + '.tmp')} && "
                 f"mv {q(remote + '.tmp')} {q(remote)} && ls {q(folder)}", v2=True)
    assert r.returncode == 0, r.stderr
    digest, path = r.stdout.splitlines()[0].split("  ", 1)
    if "\\" in name:  # GNU sha256sum escapes such a name and marks the line with a backslash
        digest, path = digest.removeprefix("\\"), path.replace("\\\\", "\\")
    assert (digest, path) == (sha256(data), remote)
    assert r.stdout.splitlines()[-1] == f"{name}.bin"
    r = adb_env.run("shell", f"cat {q(remote)}", serial=virtual_device.serial)
    assert r.stdout == data
    assert d.sync.read_bytes(remote) == data
    assert not list(virtual_device.root.rglob("PWNED"))
    assert not Path("PWNED").exists()


def test_paths_cannot_escape_the_root(virtual_device: AttachedDevice, tmp_path: Path) -> None:
    d = virtual_device.adb
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    up = "/.." * 12
    assert raw_recv(d, up + str(secret))[0] == b""
    assert not d.sync.exists(up + str(secret))
    assert raw_push(d, b"inside", f"{up}/escaped.txt") == ("OKAY", "")
    assert (virtual_device.root / "escaped.txt").read_bytes() == b"inside"
    # Symlinks made by the shell point at host paths, and still resolve inside the root.
    d.shell(f"ln -s / {TMP}/rootlink; ln -s {shlex.quote(str(secret))} {TMP}/hostlink")
    assert d.sync.read_bytes(f"{TMP}/rootlink/escaped.txt") == b"inside"
    assert raw_recv(d, f"{TMP}/hostlink") == (b"", "open failed: No such file or directory")
    assert raw_push(d, b"x", f"{TMP}/rootlink/../../via.txt") == ("OKAY", "")
    assert (virtual_device.root / "via.txt").exists()
    assert {f.path for f in d.sync.list("/..")} == {f.path for f in d.sync.list("/")}
    assert secret.read_text() == "host secret"


# ---------------------------------------------------------------------------- robustness


def test_unknown_services_are_refused(virtual_device: AttachedDevice) -> None:
    d = virtual_device.adb
    with pytest.raises(adbutils.AdbError):
        d.create_connection(adbutils.Network.TCP, 1)
    with d.open_transport() as c:
        c.send_command("framebuffer:")
        with pytest.raises(adbutils.AdbError):
            c.check_okay()
    assert d.shell("echo still here") == "still here"


def _raw_connection(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    payload = b"host::features=shell_v2\0"
    s.sendall(p.pack_header(p.A_CNXN, p.A_VERSION, p.MAX_PAYLOAD, len(payload),
                            p.checksum(payload)) + payload)
    header = p.unpack_header(_recv_exact(s, 24))
    assert header.name == "CNXN"
    banner = _recv_exact(s, header.length)
    assert banner.startswith(b"device::") and b"features=shell_v2" in banner
    return s


def _recv_exact(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        piece = s.recv(n - len(data))
        if not piece:
            raise EOFError
        data += piece
    return data


def _closed_by_device(s: socket.socket) -> bool:
    try:
        while s.recv(4096):
            pass
        return True
    except (ConnectionResetError, TimeoutError):
        return False


def test_malformed_messages_drop_only_that_connection(virtual_device: AttachedDevice,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    assert virtual_device.device is not None
    port = virtual_device.device.port
    s = _raw_connection(port)
    s.sendall(b"\x01" * 24)  # bad magic
    assert _closed_by_device(s)
    s = _raw_connection(port)
    s.sendall(struct.pack("<6I", p.A_WRTE, 1, 1, p.MAX_PAYLOAD + 1, 0, p.A_WRTE ^ 0xFFFFFFFF))
    assert _closed_by_device(s)
    s = _raw_connection(port)  # a message cut short by a disconnect
    s.sendall(p.pack_header(p.A_OPEN, 5, 0, 100) + b"shell:")
    s.close()
    s = _raw_connection(port)  # unknown commands and streams that do not exist
    s.sendall(p.pack_header(0x12345678, 0, 0, 0) + p.pack_header(p.A_OKAY, 3, 99, 0)
              + p.pack_header(p.A_CLSE, 3, 99, 0) + p.pack_header(p.A_WRTE, 3, 99, 1) + b"x")
    header = p.unpack_header(_recv_exact(s, 24))
    assert (header.name, header.arg1) == ("CLSE", 3)  # the host learns the stream is gone
    s.sendall(p.pack_header(p.A_OPEN, 4, 0, 8) + b"bogus:x\0")
    header = p.unpack_header(_recv_exact(s, 24))
    assert (header.name, header.arg0, header.arg1) == ("CLSE", 0, 4)
    s.close()
    assert virtual_device.adb.shell("echo fine") == "fine"
    assert "Traceback" not in caplog.text


def test_host_going_away_kills_the_command(virtual_device: AttachedDevice) -> None:
    d = virtual_device.adb
    conn = d.shell(f"echo $$ > {TMP}/pid; exec sleep 60", stream=True)
    deadline = time.monotonic() + 10
    pid_file = virtual_device.root / "data/local/tmp/pid"
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    pid = int(pid_file.read_text())
    conn.close()
    while Path(f"/proc/{pid}").exists() and "Z" not in _proc_state(pid):
        assert time.monotonic() < deadline, "the command outlived the host's stream"
        time.sleep(0.02)


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


def test_an_abandoned_push_leaves_no_file(virtual_device: AttachedDevice) -> None:
    d = virtual_device.adb
    data = os.urandom(2 * 1024 * 1024)
    assert raw_push(d, data, f"{TMP}/half.bin", abandon_after=512 * 1024)[0] == "ABANDONED"
    target = virtual_device.root / "data/local/tmp/half.bin"
    deadline = time.monotonic() + 10
    while target.exists():
        assert time.monotonic() < deadline, "a partial file was left behind"
        time.sleep(0.02)
    assert raw_push(d, data, f"{TMP}/half.bin") == ("OKAY", "")
    assert target.read_bytes() == data


def test_many_streams_at_once(virtual_device: AttachedDevice) -> None:
    d = virtual_device.adb
    blobs = {f"{TMP}/c{i}.bin": os.urandom(300_000 + i) for i in range(8)}
    errors: list[BaseException] = []

    def push_and_check(remote: str, data: bytes) -> None:
        try:
            assert raw_push(d, data, remote) == ("OKAY", "")
            r = d.shell2(f"sha256sum {remote}; sleep 0.2", v2=True)
            assert r.stdout.split()[0] == sha256(data)
            assert d.sync.read_bytes(remote) == data
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=push_and_check, args=item) for item in blobs.items()]
    threads += [threading.Thread(target=lambda: d.shell("sleep 0.3")) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors


def test_several_devices_at_once(virtual_devices: DeviceFactory, adb_env: AdbServer) -> None:
    devices = [virtual_devices.start(model=f"Model {i}") for i in range(3)]
    devices.append(virtual_devices.start(separate_process=True, args=["--model", "Model 3"]))
    listing = adb_env.run("devices").stdout.decode()
    for dev in devices:
        assert f"{dev.serial}\tdevice" in listing
    data = os.urandom(5 * 1024 * 1024)
    results: dict[str, str] = {}

    def work(dev: AttachedDevice) -> None:
        raw_push(dev.adb, data, f"{TMP}/p.bin")
        results[dev.serial] = dev.adb.shell(f"getprop ro.product.model; sha256sum {TMP}/p.bin")

    threads = [threading.Thread(target=work, args=(dev,)) for dev in devices]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for i, dev in enumerate(devices):
        model, digest = results[dev.serial].splitlines()
        assert model == f"Model {i}" and digest.split()[0] == sha256(data)
        r = adb_env.run("shell", "getprop ro.product.model", serial=dev.serial)
        assert r.stdout == f"Model {i}\n".encode()


def test_df_and_coreutils_see_device_paths(virtual_device: AttachedDevice) -> None:
    d = virtual_device.adb
    line = d.shell(f"df -k {TMP} | tail -n 1").split()
    assert len(line) >= 6 and line[3].isdigit()
    # --foreground: toybox's timeout before 0.8.11 loses the status of a command that ends at
    # once in a process group of its own (see runner/local.py's device_command).
    r = d.shell2(f"mkdir -p {TMP}/a/b && echo x > {TMP}/a/b/f && "
                 f"timeout --foreground 5 cat {TMP}/a/b/f && "
                 f"rm -r {TMP}/a && ls {TMP}/a", v2=True)
    assert r.stdout == "x\n"
    # Error messages name device paths, not the host's (toybox's ls words them its own way).
    assert r.stderr.strip() in (f"ls: cannot access '{TMP}/a': No such file or directory",
                                f"ls: {TMP}/a: No such file or directory")


def test_a_second_cnxn_ends_the_old_streams(virtual_device: AttachedDevice) -> None:
    device = virtual_device.device
    assert device is not None
    s = _raw_connection(device.port)
    service = b"shell,v2,raw:sleep 30\0"
    s.sendall(p.pack_header(p.A_OPEN, 9, 0, len(service)) + service)
    header = p.unpack_header(_recv_exact(s, 24))
    assert (header.name, header.arg1) == ("OKAY", 9)
    deadline = time.monotonic() + 5
    while not device._sessions:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    payload = b"host::features=shell_v2\0"
    s.sendall(p.pack_header(p.A_CNXN, p.A_VERSION, p.MAX_PAYLOAD, len(payload)) + payload)
    header = p.unpack_header(_recv_exact(s, 24))
    assert header.name == "CNXN"
    while device._sessions:  # the host restarted its side: the old command is gone
        assert time.monotonic() < deadline
        time.sleep(0.02)
    s.close()
