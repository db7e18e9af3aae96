"""`virtual-device --emulate`: a virtual arm64 phone whose shell runs aarch64 programs under
qemu-user (no binfmt handler), so deploy pushes the linux-aarch64 runner and onnxruntime's ARM
kernels compute the device side. Slow under emulation: the models are small."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, numpy_helper

from tests.conftest import EXAMPLES, IMAGES, run_cli, unavailable
from tests.deploy.conftest import emulated_userland
from tests.devices.conftest import deadline  # noqa: F401 - fixture

RUNNER_DIR = "/data/local/tmp/arm"


@pytest.fixture
def arm_phone(virtual_devices, aarch64_runner):
    return virtual_devices.start(abi="arm64-v8a", emulate=True, userland=emulated_userland())


def _tensor(path: Path) -> np.ndarray:
    return numpy_helper.to_array(TensorProto.FromString(path.read_bytes()))


@pytest.mark.parametrize("userland", ["android", "host"])
def test_the_shell_runs_aarch64_programs_however_started(virtual_devices, aarch64_runner,
                                                         userland):
    """Without the exec hook the kernel refuses an aarch64 ELF (ENOEXEC) and the shell reads it
    as a script: every way deploy, a lab script or a person starts the runner must reach qemu,
    under mksh and toybox as under a board's /bin/sh and coreutils."""
    if userland == "android" and emulated_userland() != "android":
        unavailable("mksh and toybox are not installed (apt-get install mksh toybox)")
    adb = virtual_devices.start(abi="arm64-v8a", emulate=True, userland=userland).adb
    for name in aarch64_runner.push_files:
        adb.sync.push(str(aarch64_runner.directory / name), f"{RUNNER_DIR}/{name}",
                      mode=0o755)
    runner = f"{RUNNER_DIR}/edgepack-runner"
    q = shlex.quote
    commands = [
        f"cd {q(RUNNER_DIR)} && ./edgepack-runner --version",
        f"{q(runner)} --version",
        f"LD_LIBRARY_PATH={q(RUNNER_DIR)} timeout -k 5 60 {q(runner)} --version",
        f"cd {q(RUNNER_DIR)} && timeout 60 taskset 1 ./edgepack-runner --version",
        f"PATH={q(RUNNER_DIR)}:$PATH; edgepack-runner --version",
        f"sh -c {q(f'exec {runner} --version')}",
    ]
    for command in commands:
        out = adb.shell2(command, timeout=120)
        assert out.returncode == 0, (command, out.output)
        doc = json.loads(out.output.strip().splitlines()[-1])
        assert doc["target"] == "linux-aarch64", command
    # What the device says of itself agrees with what it runs.
    assert adb.shell("uname -m").strip() == "aarch64"
    assert adb.shell("getprop ro.edgepack.runner_target").strip() == "linux-aarch64"
    assert "emulated" in adb.shell("getprop ro.product.model")
    # x86 programs still run as they are, and a script is still a script.
    assert adb.shell("echo 'echo from a script' > /data/local/tmp/s.sh; "
                     "sh /data/local/tmp/s.sh").strip() == "from a script"


@pytest.fixture(scope="module")
def resnet20_bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("resnet20")
    model = out / "resnet20.onnx"
    r = run_cli("export", EXAMPLES / "resnet20.py:make_model", "-o", model,
                "--input", "input:1x3x32x32:float32")
    assert r.code == 0, r.stderr
    bundle = out / "bundle"
    r = run_cli("pack", model, "-o", bundle, "--input", f"input={IMAGES / 'cifar_32.png'}",
                "--mean", "0.49,0.48,0.45", "--std", "0.25,0.24,0.26", "--random-sets", "1")
    assert r.code == 0, r.stderr
    return bundle


def test_resnet20_on_an_emulated_arm_phone_passes_but_not_bit_for_bit(
        arm_phone, resnet20_bundle, host_runner, tmp_path):
    """ARM kernels differ from x86's in the last bits: deploy passes within tolerance, its
    outputs are not the host's bit for bit (the host runner's are), and the result says the
    device is emulated."""
    on_host = tmp_path / "host"
    r = run_cli("run", resnet20_bundle, "--engine", "native", "--outputs", on_host)
    assert r.code == 0, r.stderr
    outputs = tmp_path / "outputs"
    t0 = time.perf_counter()
    r = run_cli("deploy", resnet20_bundle, "--device", arm_phone.serial, "--json",
                "--iterations", "2", "--outputs", outputs, "--timeout", "600")
    wall = time.perf_counter() - t0
    assert r.code == 0, r.stderr + r.stdout
    doc = r.json()
    assert doc["runner_target"] == "linux-aarch64"
    assert any("emulated" in note for note in doc["notes"]), doc["notes"]
    assert all(v["passed"] for s in doc["sets"] for v in s["verdicts"])
    differs = []
    for k in range(len(doc["sets"])):
        for expected in sorted((resnet20_bundle / f"test_data_set_{k}").glob("output_*.pb")):
            device = _tensor(outputs / f"test_data_set_{k}" / expected.name)
            host = _tensor(on_host / f"test_data_set_{k}" / expected.name)
            assert np.array_equal(host, _tensor(expected))  # x86 against x86: bit for bit
            np.testing.assert_allclose(device, host, rtol=1e-4, atol=1e-5)
            differs.append(not np.array_equal(device, host))
            rel = np.max(np.abs(device - host)) / np.max(np.abs(host))
            print(f"set {k} {expected.name}: max abs diff / max |host| = {rel:.3g}")
    print(f"deploy to the emulated phone: {wall:.1f} s wall; inference "
          f"{doc['sets'][0]['runner']['latencies_ms']} ms")
    assert any(differs), "the ARM kernels gave the host's outputs bit for bit"


@pytest.fixture(scope="module")
def mlp_bundle(tmp_path_factory) -> Path:
    from tests.runner.conftest import mlp_model, save_model

    out = tmp_path_factory.mktemp("mlp")
    model = save_model(mlp_model(), out / "m")
    bundle = out / "b"
    assert run_cli("pack", model, "-o", bundle, "--random-sets", "1", "--dim", "N=2").code == 0
    return bundle


def test_bench_on_an_emulated_phone(arm_phone, mlp_bundle, tmp_path):
    r = run_cli("bench", mlp_bundle, "--device", arm_phone.serial, "--repeat", "1",
                "--iterations", "3", "--db", tmp_path / "h.db", "--json")
    assert r.code == 0, r.stderr + r.stdout
    doc = r.json()
    (device,) = doc["devices"]
    assert device["info"]["runner_target"] == "linux-aarch64" and device["info"]["emulated"]
    (result,) = doc["results"]
    # The figures stand beside a model name that says they are an emulator's.
    assert result["outcome"] == "pass" and "emulated" in result["model"]


@pytest.mark.parametrize(("mode", "said"), [("crash", "SIGSEGV"), ("hang", "hung past")])
def test_runner_fault_applies_to_the_emulated_runner(virtual_devices, aarch64_runner,
                                                     mlp_bundle, mode, said):
    """The fault library is x86: the guest gets an aarch64 build of it, so an emulated runner
    still crashes or hangs as asked (with the x86 one alone it would run and pass), and the
    device's timeout still kills the hung one through qemu."""
    from edgepack.devices.virtual.faults import Faults

    phone = virtual_devices.start(abi="arm64-v8a", emulate=True, userland=emulated_userland(),
                                  faults=Faults(runner=mode))
    r = run_cli("deploy", mlp_bundle, "--device", phone.serial, "--timeout", "5")
    assert r.code == 3, r.stderr + r.stdout
    assert phone.device.runner_fault_fired
    assert said in r.stderr, r.stderr


@pytest.mark.usefixtures("deadline")
def test_emulate_with_another_abi_is_refused(adb_env, tmp_path):
    r = run_cli("virtual-device", "--root", tmp_path / "root", "--emulate", "--abi", "x86_64")
    assert r.code == 2
    assert "arm64-v8a" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_slowdown_applies_to_the_emulated_runner(virtual_devices, aarch64_runner, mlp_bundle):
    """The slowdown knob's clock_gettime wrapper reaches the guest as an aarch64 build too."""
    phone = virtual_devices.start(abi="arm64-v8a", emulate=True, userland=emulated_userland())

    def median_ms() -> float:
        r = run_cli("deploy", mlp_bundle, "--device", phone.serial, "--iterations", "5",
                    "--json")
        assert r.code == 0, r.stderr
        return float(np.median(r.json()["sets"][0]["runner"]["latencies_ms"]))

    before = median_ms()
    phone.device.set_slowdown(0.0, 3.0)
    after = median_ms()
    assert after > 2 * before, (before, after)


def test_an_emulated_linux_board_gets_the_aarch64_runner_by_uname(virtual_devices,
                                                                  aarch64_runner, mlp_bundle):
    """A board has no properties: deploy picks its runner by `uname -m`, which the emulated
    device answers as its programs see it (aarch64), not as the x86 host."""
    board = virtual_devices.start(abi="arm64-v8a", emulate=True, linux_board=True)
    r = run_cli("deploy", mlp_bundle, "--device", board.serial, "--json")
    assert r.code == 0, r.stderr + r.stdout
    assert r.json()["runner_target"] == "linux-aarch64"
