"""deploy end to end: the real adb server, adbutils, the virtual device, the host runner."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import IMAGES, PACK_ARGS, run_cli

DEVICE_ROOT = "data/local/tmp/edgepack"  # inside a virtual device's root


def deploy(bundle: Path, serial: str, *extra: str):
    return run_cli("deploy", bundle, "--device", serial, "--iterations", "3", "--json", *extra)


def remote_files(root: Path) -> dict[str, bytes]:
    base = root / DEVICE_ROOT
    return {str(p.relative_to(base)): p.read_bytes() for p in base.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name", sorted(PACK_ARGS))
def test_every_example_passes_on_the_device(name, bundles, host_runner, virtual_device):
    r = deploy(bundles[name], virtual_device.serial)
    assert r.code == 0, r.stderr
    doc = r.json()
    assert doc["engine"] == "native" and doc["runner_target"] == "host"
    assert doc["device"]["virtual"] is True and doc["device"]["serial"] == virtual_device.serial
    assert all(v["passed"] for s in doc["sets"] for v in s["verdicts"])
    assert len(doc["sets"][0]["runner"]["latencies_ms"]) == 3
    # The runner and the host's Python onnxruntime are the same library with the same thread
    # count: identical outputs, or differences at the 1e-6 relative level at most.
    for s in doc["sets"]:
        for v in s["verdicts"]:
            assert v["metrics"]["max_rel_error"] <= 1e-6, v
    # The run's scratch directory is gone; the runner and bundle stay for the next deploy.
    assert not list((virtual_device.root / DEVICE_ROOT / "runs").glob("*"))
    assert (virtual_device.root / DEVICE_ROOT / "bundles" / name / "init.bin").is_file()


def test_human_output_and_report(bundles, host_runner, virtual_device, tmp_path):
    report = tmp_path / "r.json"
    r = run_cli("deploy", bundles["mnist"], "--device", virtual_device.serial,
                "--report", report)
    assert r.code == 0, r.stderr
    assert "PASS" in r.stdout and "median" in r.stdout and "pushed" in r.stderr
    doc = json.loads(report.read_text())
    assert doc["bundle_name"] == "mnist" and len(doc["sets"]) == 2


def test_redeploy_pushes_only_what_changed(exported, host_runner, virtual_device, tmp_path):
    bundle = tmp_path / "b"
    args = ["--name", "resnet", "--input", f"input={IMAGES / 'cifar_32.png'}"]
    assert run_cli("pack", exported["resnet20"], "-o", bundle, *args).code == 0
    first = deploy(bundle, virtual_device.serial).json()["transfer"]
    assert first["files_pushed"] >= 6 and first["files_skipped"] == 0

    again = deploy(bundle, virtual_device.serial).json()["transfer"]
    assert again["files_pushed"] == 0 and again["bytes_pushed"] == 0
    assert again["files_skipped"] == first["files_pushed"]

    # New inputs, same model: only the input and expected-output blobs and the manifest travel.
    assert run_cli("pack", exported["resnet20"], "-o", bundle, "--force", "--name", "resnet",
                   "--random-sets", "2").code == 0
    before = remote_files(virtual_device.root)
    changed = deploy(bundle, virtual_device.serial)
    assert changed.code == 0, changed.stderr
    t = changed.json()["transfer"]
    after = remote_files(virtual_device.root)
    bundle_dir = "bundles/resnet/"
    assert after[bundle_dir + "init.bin"] == before[bundle_dir + "init.bin"]
    pushed = {k for k in after if after[k] != before.get(k) and not k.endswith(".edgepack-files")
              and k.startswith(bundle_dir)}
    assert pushed == {bundle_dir + p for p in (
        "manifest.json", "test_data_set_0/input_0.pb", "test_data_set_0/output_0.pb",
        "test_data_set_1/input_0.pb", "test_data_set_1/output_0.pb")}
    assert t["files_pushed"] == len(pushed)
    assert t["bytes_skipped"] > t["bytes_pushed"]  # init.bin and the runner stayed


def test_a_changed_file_on_the_device_is_caught(bundles, host_runner, virtual_device):
    assert deploy(bundles["iris_forest"], virtual_device.serial).code == 0
    model = virtual_device.root / DEVICE_ROOT / "bundles" / "iris_forest" / "predict.onnx"
    model.write_bytes(model.read_bytes()[:-10] + b"garbage!!!")
    r = deploy(bundles["iris_forest"], virtual_device.serial)
    assert r.code == 0, r.stderr
    assert r.json()["transfer"]["files_pushed"] == 1


def test_stale_test_sets_are_removed(exported, host_runner, virtual_device, tmp_path):
    bundle = tmp_path / "b"
    assert run_cli("pack", exported["iris_forest"], "-o", bundle, "--name", "b",
                   "--random-sets", "3").code == 0
    assert deploy(bundle, virtual_device.serial).code == 0
    sets = virtual_device.root / DEVICE_ROOT / "bundles" / "b"
    assert (sets / "test_data_set_2").is_dir()
    repack = run_cli("pack", exported["iris_forest"], "-o", bundle, "--name", "b", "--force")
    assert repack.code == 0
    assert deploy(bundle, virtual_device.serial).code == 0
    assert not (sets / "test_data_set_2" / "input_0.pb").exists()


# ---------------------------------------------------------------------------- quoting


NASTY = "we ird'; touch PWNED; $(touch PWNED2) `touch PWNED3` \"q\" ü"


def test_names_that_look_like_shell_do_nothing(exported, host_runner, virtual_device, tmp_path):
    bundle = tmp_path / "weird bundle; $(x)"
    r = run_cli("pack", exported["iris_forest"], "-o", bundle, "--name", NASTY)
    assert r.code == 0, r.stderr
    d = deploy(bundle, virtual_device.serial)
    assert d.code == 0, d.stderr
    assert d.json()["bundle_name"] == NASTY
    assert (virtual_device.root / DEVICE_ROOT / "bundles" / NASTY / "predict.onnx").is_file()
    for root in (virtual_device.root, Path.cwd(), tmp_path):
        assert not list(root.rglob("PWNED*")), root
    again = deploy(bundle, virtual_device.serial)
    assert again.code == 0 and again.json()["transfer"]["files_pushed"] == 0


# ---------------------------------------------------------------------------- choosing a device


def test_device_selection(bundles, host_runner, virtual_devices, monkeypatch):
    one = virtual_devices.start()
    r = run_cli("deploy", bundles["iris_forest"], "--json")  # the only device
    assert r.code == 0, r.stderr
    assert r.json()["device"]["serial"] == one.serial
    two = virtual_devices.start(model="Second Phone")
    r = run_cli("deploy", bundles["iris_forest"])
    assert r.code == 3 and one.serial in r.stderr and two.serial in r.stderr
    assert "--device" in r.stderr
    monkeypatch.setenv("ANDROID_SERIAL", two.serial)
    r = run_cli("deploy", bundles["iris_forest"], "--json")
    assert r.code == 0 and r.json()["device"]["model"] == "Second Phone"


def test_devices_lists_properties(virtual_devices):
    virtual_devices.start(model="Pixel Test", sdk=33, soc_model="Tensor G2", abi="arm64-v8a",
                          props={"ro.edgepack.runner_target": ""})
    r = run_cli("devices", "--json")
    assert r.code == 0, r.stderr
    (info,) = r.json()
    assert info["model"] == "Pixel Test" and info["sdk"] == 33 and info["soc"] == "Tensor G2"
    assert info["abis"][0] == "arm64-v8a" and info["kind"] == "android"
    assert info["runner_target"] == "android-arm64-v8a"
    assert info["free_bytes"] > 0
    human = run_cli("devices")
    assert "Pixel Test" in human.stdout


# ---------------------------------------------------------------------------- failures


def assert_device_error(result, *needles: str) -> None:
    assert result.code == 3, (result.code, result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("edgepack: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def looks_complete(root: Path) -> set[str]:
    """Files under the device's bundle and runner dirs that are not temporary parts."""
    base = root / DEVICE_ROOT
    return {str(p.relative_to(base)) for p in base.rglob("*")
            if p.is_file() and not p.name.endswith(".edgepack-part")}


def test_device_not_found(bundles, adb_env):
    assert_device_error(run_cli("deploy", bundles["iris_forest"], "--device", "127.0.0.1:9"),
                        "not found")


def test_device_offline(bundles, host_runner, virtual_device, adb_env):
    virtual_device.device.vanish()
    adb_env.wait_for_state(virtual_device.serial, "offline", 20)
    assert_device_error(deploy(bundles["iris_forest"], virtual_device.serial), "offline")


def test_connection_dropped_mid_push_then_retry(exported, host_runner, virtual_device,
                                                 adb_env, tmp_path):
    bundle = tmp_path / "big"
    assert run_cli("pack", exported["mnist"], "-o", bundle).code == 0
    virtual_device.device.faults.drop_after_bytes = 2_000_000
    r = deploy(bundle, virtual_device.serial)
    assert_device_error(r, virtual_device.serial, "deploying again")
    # Whatever arrived is a hidden part; nothing half-pushed sits under a real name.
    for rel in looks_complete(virtual_device.root):
        if rel.startswith("bundles/big/") or rel.startswith("bin/"):
            name = rel.rsplit("/", 1)[-1]
            local = (bundle / rel.split("/", 2)[2]) if rel.startswith("bundles/") else \
                (host_runner.directory / name)
            if local.is_file():
                assert (virtual_device.root / DEVICE_ROOT / rel).read_bytes() == \
                    local.read_bytes(), rel
    adb_env.reconnect(virtual_device.serial)
    retry = deploy(bundle, virtual_device.serial)
    assert retry.code == 0, retry.stderr


def test_device_gone_mid_run(bundles, host_runner, virtual_device):
    virtual_device.device.faults.vanish_on_command = "edgepack-runner"
    r = deploy(bundles["iris_forest"], virtual_device.serial)
    assert_device_error(r, virtual_device.serial)


def test_runner_crash_reports_the_signal(bundles, host_runner, virtual_device):
    virtual_device.device.faults.runner = "crash"
    r = deploy(bundles["iris_forest"], virtual_device.serial)
    assert_device_error(r, "SIGSEGV")
    # A failed run cleans up after itself as a passing one does, and lets go of the device.
    runs = virtual_device.root / DEVICE_ROOT / "runs"
    assert not list(runs.glob("*")) and not (virtual_device.root / DEVICE_ROOT / ".lock").exists()
    virtual_device.device.faults.runner = None
    assert deploy(bundles["iris_forest"], virtual_device.serial).code == 0


def test_keep_leaves_the_run_on_the_device(bundles, host_runner, virtual_device):
    r = deploy(bundles["iris_forest"], virtual_device.serial, "--keep")
    assert r.code == 0, r.stderr
    (kept,) = (virtual_device.root / DEVICE_ROOT / "runs").glob("*")
    assert (kept / "test_data_set_0" / "output_0.pb").is_file()
    assert any(kept.name in note for note in r.json()["notes"])
    assert not (virtual_device.root / DEVICE_ROOT / ".lock").exists()


def test_runner_hang_is_killed_on_the_device(bundles, host_runner, virtual_device):
    virtual_device.device.faults.runner = "hang"
    t0 = time.monotonic()
    r = deploy(bundles["iris_forest"], virtual_device.serial, "--timeout", "2")
    assert_device_error(r, "hung past the timeout of 2 s", "killed on the device")
    assert time.monotonic() - t0 < 30
    # Nothing of it is left running on the device (whose `ps` also shows this machine's other
    # processes: only runners started from a device path count).
    ps = virtual_device.adb.shell2(
        "ps -eo pid,stat,args | grep '[d]ata/local/tmp/edgepack/bin/.*edgepack-runner'",
        rstrip=True)
    assert ps.output.strip() == "", ps.output
    virtual_device.device.faults.runner = None
    assert deploy(bundles["iris_forest"], virtual_device.serial).code == 0


def test_disk_full(exported, host_runner, virtual_device, tmp_path):
    bundle = tmp_path / "b"
    assert run_cli("pack", exported["mnist"], "-o", bundle).code == 0
    virtual_device.device.faults.quota_bytes = 3_000_000
    r = deploy(bundle, virtual_device.serial)
    assert_device_error(r, virtual_device.serial)
    assert "space" in r.stderr or "full" in r.stderr
    assert not any(p.endswith("init.bin") for p in looks_complete(virtual_device.root))
    virtual_device.device.faults.quota_bytes = None
    assert deploy(bundle, virtual_device.serial).code == 0


def test_no_runner_for_the_abi(bundles, virtual_devices):
    phone = virtual_devices.start(abi="arm64-v8a", props={"ro.edgepack.runner_target": ""})
    r = deploy(bundles["iris_forest"], phone.serial)
    assert_device_error(r, "android-arm64-v8a",
                        "edgepack runner build --target android-arm64-v8a")
    board = virtual_devices.start(abi="riscv64", props={"ro.edgepack.runner_target": ""})
    assert_device_error(deploy(bundles["iris_forest"], board.serial), "no runner target")


def test_a_linux_board_is_told_by_uname_and_getconf(bundles, host_runner, virtual_devices):
    """A board running adbd has no Android properties: the runner comes from uname -m, the
    model from the device tree (or the host name), and its glibc is read with getconf."""
    import platform
    import subprocess

    board = virtual_devices.start(linux_board=True)
    (info,) = [d for d in run_cli("devices", "--json").json() if d["serial"] == board.serial]
    host_glibc = subprocess.run(["getconf", "GNU_LIBC_VERSION"], capture_output=True,
                                text=True).stdout.split()[-1]
    assert info["kind"] == "linux" and info["sdk"] is None and info["machine"] == "x86_64"
    assert info["abis"] == [platform.machine()] and info["runner_target"] == "host"
    assert info["glibc"] == host_glibc and info["model"]
    r = deploy(bundles["iris_forest"], board.serial)
    assert r.code == 0, r.stderr
    assert r.json()["device"]["kind"] == "linux"


def _minor_below(version: str) -> str:
    major, minor = (int(x) for x in version.split("."))
    return f"{major}.{minor - 1}"


def test_a_board_with_an_older_glibc_is_told_before_any_push(bundles, host_runner,
                                                              virtual_devices):
    from edgepack.runner.targets import ZIG_GLIBC

    needed = host_runner.requires_glibc
    old = virtual_devices.start(linux_board=True, glibc="2.17")
    r = deploy(bundles["iris_forest"], old.serial)
    assert_device_error(r, "has glibc 2.17", f"needs {needed} or newer",
                        f"onnxruntime's own Linux library needs glibc {ZIG_GLIBC}")
    assert not (old.root / DEVICE_ROOT / "bin").exists()  # nothing was pushed
    if tuple(map(int, needed.split("."))) > tuple(map(int, ZIG_GLIBC.split("."))):
        older = virtual_devices.start(linux_board=True, glibc=_minor_below(needed))
        assert_device_error(deploy(bundles["iris_forest"], older.serial),
                            f"has glibc {_minor_below(needed)}",
                            "edgepack runner build --target host --compiler zig")
    # The same check never applies to Android, whose C library is bionic.
    phone = virtual_devices.start(glibc="2.17")
    assert deploy(bundles["iris_forest"], phone.serial).code == 0


def test_runner_target_override(bundles, host_runner, virtual_devices):
    phone = virtual_devices.start(abi="arm64-v8a", props={"ro.edgepack.runner_target": ""})
    r = deploy(bundles["iris_forest"], phone.serial, "--runner-target", "host")
    assert r.code == 0, r.stderr
    bad = deploy(bundles["iris_forest"], phone.serial, "--runner-target", "mips")
    assert bad.code == 2 and "unknown runner target" in bad.stderr


def test_a_locked_device_is_refused(bundles, host_runner, virtual_device):
    lock = f"/{DEVICE_ROOT}/.lock"
    until = int(time.time()) + 3600
    virtual_device.adb.shell(
        f"mkdir -p {shlex.quote(lock)} && echo 'tok otherhost 42' > {lock}/owner && "
        f"date +%s > {lock}/since && echo {until} > {lock}/until")
    r = deploy(bundles["iris_forest"], virtual_device.serial)
    assert_device_error(r, "locked by another deploy", "otherhost pid 42", "--break-lock")
    ok = deploy(bundles["iris_forest"], virtual_device.serial, "--break-lock")
    assert ok.code == 0, ok.stderr
    # Our own lock is released at the end; a lapsed lock is taken over without --break-lock.
    assert not (virtual_device.root / DEVICE_ROOT / ".lock").exists()
    virtual_device.adb.shell(
        f"mkdir -p {lock} && echo 'tok gone 1' > {lock}/owner && echo 1 > {lock}/until")
    assert deploy(bundles["iris_forest"], virtual_device.serial).code == 0


def test_two_deploys_at_once_never_interleave(bundles, host_runner, virtual_device):
    """Two processes deploying to one device: one waits its turn by failing cleanly, or both
    pass one after the other; never two at once."""
    import subprocess
    import sys

    virtual_device.device.faults.latency = 0.002
    cmd = [sys.executable, "-m", "edgepack", "deploy", str(bundles["mnist"]), "--device",
           virtual_device.serial, "--iterations", "20"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes in ([0, 0], [0, 3]), results
    for code, stderr in results:
        if code == 3:
            assert "locked by another deploy" in stderr, stderr
    assert not (virtual_device.root / DEVICE_ROOT / ".lock").exists()


def test_outputs_that_differ_exit_1(exported, host_runner, virtual_device, tmp_path):
    """A device whose outputs disagree: the verdict fails, exit 1, and says where."""
    from edgepack.tensors import read_tensor, write_tensor

    bundle = tmp_path / "b"
    assert run_cli("pack", exported["resnet20"], "-o", bundle).code == 0
    expected = bundle / "test_data_set_0" / "output_0.pb"
    name, array = read_tensor(expected)
    write_tensor(expected, name, (array + np.float32(0.5)).astype(np.float32))
    # Keep the manifest's hashes true to the changed file: a bundle with a wrong expectation.
    manifest = json.loads((bundle / "manifest.json").read_text())
    from edgepack.fileio import sha256_file

    for f in manifest["files"]:
        if f["path"] == "test_data_set_0/output_0.pb":
            f["sha256"], f["size"] = sha256_file(expected), expected.stat().st_size
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    r = run_cli("deploy", bundle, "--device", virtual_device.serial)
    assert r.code == 1, r.stderr
    assert "FAIL" in r.stdout and "beyond" in r.stdout


def test_clean_removes_everything_edgepack_put_there(bundles, host_runner, virtual_device):
    assert deploy(bundles["iris_forest"], virtual_device.serial).code == 0
    base = virtual_device.root / DEVICE_ROOT
    assert (base / "bin").is_dir() and (base / "bundles").is_dir()
    r = run_cli("clean", "--device", virtual_device.serial)
    assert r.code == 0, r.stderr
    assert not (base / "bin").exists() and not (base / "bundles").exists()
    assert not (base / ".lock").exists()
    # The next deploy pushes everything again, and passes.
    again = deploy(bundles["iris_forest"], virtual_device.serial)
    assert again.code == 0 and again.json()["transfer"]["files_skipped"] == 0


def test_devices_shows_an_offline_device(virtual_devices, adb_env):
    ok = virtual_devices.start()
    gone = virtual_devices.start()
    gone.device.vanish()
    adb_env.wait_for_state(gone.serial, "offline", 20)
    r = run_cli("devices", "--json")
    assert r.code == 0, r.stderr
    states = {d["serial"]: d["state"] for d in r.json()}
    assert states == {ok.serial: "device", gone.serial: "offline"}


def test_a_device_object_follows_a_reconnection(virtual_device, adb_env):
    """A lab keeps one AdbDevice per phone for a whole bench; a USB glitch must not strand it."""
    from edgepack.devices.adb import AdbDevice

    device = AdbDevice(virtual_device.serial)
    assert device.shell("echo one").stdout.strip() == "one"
    first_transport = device._transport_id
    virtual_device.device.vanish()
    adb_env.wait_for_state(virtual_device.serial, "offline", 20)
    virtual_device.device.revive()
    adb_env.reconnect(virtual_device.serial)
    assert device.shell("echo two").stdout.strip() == "two"
    assert device._transport_id != first_transport  # the server gave it a new transport


@pytest.mark.parametrize("size", [0, 1, 65536, 65537, 16 * 65536, 16 * 65536 + 5, 3_000_001])
def test_push_is_byte_exact_with_progress(size, virtual_device, tmp_path):
    import os

    from edgepack.devices.adb import AdbDevice

    local = tmp_path / "blob"
    local.write_bytes(os.urandom(size))
    seen: list[int] = []
    AdbDevice(virtual_device.serial).push(local, "/data/local/tmp/blob.bin", seen.append)
    assert (virtual_device.root / "data/local/tmp/blob.bin").read_bytes() == local.read_bytes()
    assert sum(seen) == size
