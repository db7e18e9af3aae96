"""The executor seam: one small bundle through every executor (the host's native runner, the
Python engine, the aarch64 runner under qemu, a virtual device over the real adb server) by the
one `run_bundle`, and what a device executor costs and needs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgepack.bundle import load_bundle
from edgepack.errors import EdgepackError, ExitCode
from edgepack.executors import (
    DeployListener,
    HostExecutor,
    NativeExecutor,
    PythonExecutor,
    QemuExecutor,
    run_bundle,
)
from edgepack.runner.result import RunConfig
from tests.conftest import run_cli, unavailable


def mlp(path: Path) -> Path:
    """x[1, 16] -> MatMul -> Add -> Relu -> y[1, 8]: small enough for qemu to run in a blink."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    w = numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["a"]),
         helper.make_node("Relu", ["a"], ["y"])],
        "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def pack(tmp: Path, sets: int) -> Path:
    bundle = tmp / f"mlp{sets}"
    r = run_cli("pack", mlp(tmp / "mlp.onnx"), "-o", bundle, "--name", f"mlp{sets}",
                "--random-sets", str(sets))
    assert r.code == 0, r.stderr
    return bundle


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory) -> Path:
    return pack(tmp_path_factory.mktemp("seam"), 2)


@pytest.fixture(scope="module")
def one_set(tmp_path_factory) -> Path:
    return pack(tmp_path_factory.mktemp("seam1"), 1)


class Stages(DeployListener):
    def __init__(self) -> None:
        self.heard: list[str] = []

    def stage(self, text: str) -> None:
        self.heard.append(text)


class CountingDevice:
    """A Device that is no AdbDevice: the protocol's members and nothing else, each call
    counted, passed on to a real AdbDevice."""

    def __init__(self, serial: str) -> None:
        from edgepack.devices.adb import AdbDevice

        self._inner = AdbDevice(serial)
        self.serial = serial
        self.calls: list[str] = []

    def info(self):  # noqa: ANN201
        self.calls.append("info")
        return self._inner.info()

    def shell(self, command, timeout=None):  # noqa: ANN001, ANN201
        self.calls.append("shell")
        return self._inner.shell(command, timeout)

    def push(self, local, remote, progress=None, mode=0o644, **part):  # noqa: ANN001, ANN003, ANN201
        self.calls.append("push")
        return self._inner.push(local, remote, progress, mode, **part)

    def pull(self, remote, local):  # noqa: ANN001, ANN201
        self.calls.append("pull")
        return self._inner.pull(remote, local)

    def free_bytes(self, path):  # noqa: ANN001, ANN201
        self.calls.append("free_bytes")
        return self._inner.free_bytes(path)


def qemu_executor() -> QemuExecutor:
    from edgepack.runner import qemu
    from edgepack.runner.build import build_runner

    reason = qemu.unavailable_reason()
    if reason is None and shutil.which("aarch64-linux-gnu-gcc") is None:
        reason = "aarch64-linux-gnu-gcc is not installed (apt-get install gcc-aarch64-linux-gnu)"
    if reason:
        unavailable(reason)
    return QemuExecutor(build_runner("linux-aarch64", compiler="gcc"))


@pytest.mark.parametrize("kind", ["native", "python", "qemu", "device"])
def test_one_bundle_through_every_executor(kind, two_sets, host_runner, request, tmp_path):
    """The same bundle gives the same DeployResult shape and passing verdicts whoever runs it;
    outputs and the profile land in the work directory on this machine."""
    bundle = load_bundle(two_sets)
    if kind == "device":
        from edgepack.deploy import DeviceExecutor

        device = CountingDevice(request.getfixturevalue("virtual_device").serial)
        executor = DeviceExecutor(device)
    else:
        executor = {"native": lambda: NativeExecutor(host_runner), "python": PythonExecutor,
                    "qemu": qemu_executor}[kind]()
    listener = Stages()
    work = tmp_path / "work"
    result = run_bundle(executor, bundle, RunConfig(warmup=1, iterations=3, profile=True),
                        work, listener)

    assert result.passed and result.bundle_name == "mlp2" and result.bundle_sha256
    assert [s.index for s in result.sets] == [0, 1]
    assert [[v.name for v in s.verdicts] for s in result.sets] == [["y"], ["y"]]
    # The first set is timed with the whole configuration, the second only proves its outputs.
    assert [len(s.runner.latencies_ms) for s in result.sets] == [3, 1]
    assert result.stats.count == 3 and result.config.iterations == 3
    assert 0 < result.run_s <= result.wall_s
    for k in (0, 1):
        assert (work / f"test_data_set_{k}" / "output_0.pb").is_file()
    profile = result.sets[0].runner.profile_file
    assert profile and Path(profile).parent == work / "test_data_set_0" and Path(profile).is_file()
    assert result.sets[1].runner.profile_file is None
    assert listener.heard[-2:] == [f"{result.device.serial}: running input set {k}"
                                   for k in (0, 1)]

    engine, target, serial = {
        "native": ("native", "host", "host"), "python": ("python", None, "host"),
        "qemu": ("native", "linux-aarch64", "qemu-aarch64"),
        "device": ("native", "host", executor.device.serial if kind == "device" else ""),
    }[kind]
    assert (result.engine, result.runner_target, result.device.serial) == (engine, target, serial)
    assert all(s.runner.engine == engine for s in result.sets)
    if kind == "device":
        # What only a device knows reaches the result: its facts, what moved, and in what order.
        assert result.device.virtual and result.device.kind == "android"
        assert result.transfer.files_pushed > 0 and result.transfer.pull_s > 0
        assert listener.heard[0].endswith("reading device properties")
        assert "pushing the host runner and mlp2" in listener.heard[1]
        assert result.sets[0].runner.onnxruntime_version == host_runner.ort_version
    else:
        assert result.transfer.files_pushed == 0 and result.transfer.pull_s == 0
        assert result.device.kind == "host"
    if kind in ("native", "qemu"):
        assert result.notes[0].startswith("engine: native runner ")


def test_a_redeploy_is_five_round_trips_through_the_device_protocol(one_set, host_runner,
                                                                     virtual_device, monkeypatch,
                                                                     tmp_path):
    """deploy takes any Device: one that is not an AdbDevice deploys. A redeploy of an unchanged
    bundle costs the device five services: its facts; lock and survey; the run; the pull;
    cleanup and unlock."""
    from edgepack.deploy import DeployOptions, deploy

    bundle = load_bundle(one_set)
    config = RunConfig(warmup=0, iterations=2)
    first = deploy(bundle, CountingDevice(virtual_device.serial), config)
    assert first.passed and first.transfer.files_pushed > 0

    opened: list[str] = []
    serve = virtual_device.device.service_handler
    monkeypatch.setattr(virtual_device.device, "service_handler",
                        lambda service: opened.append(service) or serve(service))
    device = CountingDevice(virtual_device.serial)
    again = deploy(bundle, device, config, DeployOptions(work_dir=tmp_path / "out"))
    assert again.passed and again.transfer.files_pushed == 0
    assert device.calls == ["info", "shell", "shell", "pull", "shell"]
    assert len(opened) == 5, opened
    assert [s.split(":", 1)[0] for s in opened] == ["shell,v2"] * 3 + ["sync", "shell,v2"]
    assert (tmp_path / "out" / "test_data_set_0" / "output_0.pb").is_file()


def _no_cpu_mask() -> str:
    return format(1 << (max(os.sched_getaffinity(0)) + 1), "x")


@pytest.mark.parametrize("make", [lambda runner: NativeExecutor(runner),
                                  lambda runner: PythonExecutor()], ids=["native", "python"])
def test_every_host_engine_honours_the_cpu_affinity(make, one_set, host_runner):
    """The Python engine pins itself as the native runner is pinned, whoever calls it (the
    bench pinned its thread for it; `run_bundle` alone did not)."""
    bundle = load_bundle(one_set)
    mask = _no_cpu_mask()
    with pytest.raises(EdgepackError, match=f"cpu affinity {mask} selects none") as err:
        run_bundle(make(host_runner), bundle, RunConfig(iterations=1, cpu_affinity=mask))
    assert err.value.exit_code == ExitCode.BAD_INPUT
    before = os.sched_getaffinity(0)
    one = format(1 << min(before), "x")
    result = run_bundle(make(host_runner), bundle, RunConfig(iterations=1, cpu_affinity=one))
    assert result.passed and os.sched_getaffinity(0) == before


def test_the_host_executor_chooses_its_engine_at_each_run(one_set, host_runner, monkeypatch,
                                                          tmp_path):
    bundle = load_bundle(one_set)
    config = RunConfig(iterations=1)
    with pytest.raises(EdgepackError, match="--engine must be one of auto, native, python"):
        run_bundle(HostExecutor("gpu"), bundle, config)
    auto = HostExecutor("auto")
    assert run_bundle(auto, bundle, config).engine == "native"
    # No runner built (an empty cache): auto says it falls back, native says how to build one.
    monkeypatch.setenv("EDGEPACK_CACHE_DIR", str(tmp_path / "empty"))
    fallback = run_bundle(auto, bundle, config)
    assert fallback.engine == "python" and fallback.runner_target is None
    assert "no host runner built" in fallback.notes[0]
    with pytest.raises(EdgepackError, match="the host runner is not built") as err:
        run_bundle(HostExecutor("native"), bundle, config)
    assert err.value.exit_code == ExitCode.BAD_INPUT
    with pytest.raises(EdgepackError, match="linux-aarch64 runner is not built") as err:
        run_bundle(QemuExecutor(), bundle, config)
    assert err.value.exit_code == ExitCode.DEVICE
