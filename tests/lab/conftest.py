"""Fixtures of the device-lab tests: small bundles, synthetic run results, fake devices."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from edgepack.bench import Target
from edgepack.bundle import Tolerance
from edgepack.compare import Metrics, OutputVerdict
from edgepack.devices.base import DeviceInfo, ShellResult
from edgepack.records import DeployResult, SetResult
from edgepack.runner.result import RunConfig, RunnerResult, TensorInfo
from edgepack.stats import latency_stats
from tests.conftest import IMAGES, run_cli, unavailable
from tests.devices.conftest import adb_env, adb_server, virtual_devices  # noqa: F401 - fixtures


@pytest.fixture(autouse=True)
def _private_history(tmp_path, monkeypatch):
    # Never write a developer's (or CI's) real ~/.local/share/edgepack/history.db.
    monkeypatch.setenv("EDGEPACK_DB", str(tmp_path / "history.db"))


def image_model(path: Path, size: int = 28) -> Path:
    """Conv -> ReLU -> mean -> Conv -> Sigmoid: a [1, 1, H, W] picture in, one out."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array((rng.standard_normal((8, 1, 3, 3)) * 0.3).astype(np.float32),
                                 "w1")
    w2 = numpy_helper.from_array((rng.standard_normal((1, 1, 3, 3)) * 0.3).astype(np.float32),
                                 "w2")
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("ReduceMean", ["r1"], ["m"], axes=[1], keepdims=1),
        helper.make_node("Conv", ["m", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c2"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes, "picture",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, size, size])],
        [w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.fixture(scope="session")
def lab_bundle(tmp_path_factory) -> Path:
    """A bundle whose output is an image: the digit 7 through two convolutions."""
    out = tmp_path_factory.mktemp("lab-bundle")
    model = image_model(out / "picture.onnx")
    bundle = out / "picture"
    r = run_cli("pack", model, "-o", bundle, "--name", "picture",
                "--input", f"input={IMAGES / 'digit_7.png'}", "--color", "gray")
    assert r.code == 0, r.stderr
    return bundle


# ---------------------------------------------------------------------------- synthetic results


def device_info(serial: str, model: str = "Pixel 7", sdk: int = 34,
                abi: str = "arm64-v8a") -> DeviceInfo:
    return DeviceInfo(serial=serial, kind="android", state="device", model=model,
                      manufacturer="Google", abis=[abi], sdk=sdk, virtual=True)


def verdict(name: str = "output", passed: bool = True) -> OutputVerdict:
    metrics = Metrics(max_abs_error=0.0 if passed else 0.5, max_rel_error=0.0 if passed else 1.0,
                      mean_abs_error=0.0 if passed else 0.1, cosine_similarity=1.0,
                      snr_db=float("inf") if passed else 3.0, mismatched=0 if passed else 7,
                      total=784)
    return OutputVerdict(name, passed, "within tolerance" if passed else
                         "7 of 784 elements beyond rtol=0.001 atol=0.0001",
                         Tolerance(1e-3, 1e-4), "float32", [1, 1, 28, 28], "float32",
                         [1, 1, 28, 28], metrics)


def deploy_result(
    serial: str,
    latencies: Sequence[float],
    *,
    model: str = "Pixel 7",
    passed: bool = True,
    config: RunConfig | None = None,
    bundle: tuple[str, str] = ("picture", "ab" * 32),
    profile_file: str | None = None,
) -> DeployResult:
    config = config or RunConfig(iterations=len(latencies))
    runner = RunnerResult(
        runner_version="0.1.0", onnxruntime_version="1.32.0", engine="native",
        ep_requested=config.ep, ep_used=config.ep, threads=config.threads,
        optimization=config.optimization, session_create_ms=12.5, first_inference_ms=3.25,
        latencies_ms=list(latencies), peak_rss_kb_after_load=40_000, peak_rss_kb_end=51_200,
        inputs=[TensorInfo("input", "float32", [1, 1, 28, 28])],
        outputs=[TensorInfo("output", "float32", [1, 1, 28, 28])],
        profile_file=profile_file,
    )
    return DeployResult(
        bundle_name=bundle[0], bundle_sha256=bundle[1], device=device_info(serial, model),
        config=config, engine="native", runner_target="android-arm64-v8a",
        sets=[SetResult(0, runner, [verdict(passed=passed)])],
        stats=latency_stats(list(latencies)), started_at="2025-01-01T00:00:00+00:00",
        wall_s=1.0, run_s=0.5)


def samples(seed: int, n: int = 50, median: float = 10.0, cv: float = 0.04) -> list[float]:
    """Latencies as phones give them: log-normal around a median, a few slow outliers."""
    rng = np.random.default_rng(seed)
    x = median * np.exp(rng.normal(0.0, cv, n))
    spikes = rng.random(n) < 0.03
    x[spikes] *= rng.uniform(1.5, 3.0, int(spikes.sum()))
    return x.tolist()


# ---------------------------------------------------------------------------- fake devices


DUMPSYS = """@@battery
Current Battery Service state:
  AC powered: false
  USB powered: true
  Wireless powered: false
  status: 2
  level: {level}
  scale: 100
  temperature: {battery}
@@thermal
Thermal Status: {status}
Current temperatures from HAL:
\tTemperature{{mValue={cpu:.1f}, mType=0, mName=cpu0, mStatus={status}}}
\tTemperature{{mValue=25.0, mType=2, mName=battery, mStatus=0}}
@@cpufreq
cpu0|schedutil|1800000|{max_khz}|2400000
cpu4|schedutil|2400000|{max_khz}|2400000
@@zones
"""


class FakePhone:
    """A device for the bench loop: a scripted run function and a shell that answers the state
    probe, warming up by `heat` degrees per probe."""

    def __init__(self, serial: str, run: Callable[[RunConfig], DeployResult] | None = None,
                 model: str = "Pixel 7", heat: float = 0.0, throttle_after: int | None = None):
        self.serial = serial
        self.model = model
        self.calls = 0
        self.probes = 0
        self.heat = heat
        self.throttle_after = throttle_after
        self.alive = True
        self.lock = threading.Lock()
        self._run = run or (lambda config: deploy_result(
            serial, samples(self.calls, config.iterations), model=model, config=config))

    def shell(self, command: str, timeout: float | None = None) -> ShellResult:
        if not self.alive:
            raise OSError("device offline")
        if command.startswith("echo ok"):
            return ShellResult(0, "ok\n", "")
        with self.lock:
            self.probes += 1
            n = self.probes
        throttled = self.throttle_after is not None and n > self.throttle_after
        text = DUMPSYS.format(level=80, battery=300 + int(self.heat * 10 * n),
                              status=2 if throttled else 0, cpu=40.0 + self.heat * n,
                              max_khz=1200000 if throttled else 2400000)
        return ShellResult(0, text, "")

    def target(self) -> Target:
        def run(bundle, config, work_dir):  # noqa: ANN001, ANN202
            self.calls += 1
            return self._run(config)

        return Target(self.serial, run, describe=lambda: device_info(self.serial, self.model),
                      shell=self.shell)


@pytest.fixture(scope="session")
def host_runner():
    """The host runner, built once: what the host target and a virtual device run."""
    from edgepack.runner.build import build_runner

    try:
        return build_runner("host")
    except Exception as exc:  # no compiler or onnxruntime headers on this machine
        unavailable(f"the host runner cannot be built here: {exc}")
