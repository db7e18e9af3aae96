"""The linux-aarch64 runner, cross-built against the manylinux aarch64 wheel's library, run under
qemu-user with an ARM /proc/cpuinfo: its outputs match the host's within a tolerance (different
kernels, so not bit for bit)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from onnx import TensorProto, numpy_helper

from edgepack.runner.result import RunConfig
from tests.conftest import onnx_test_data, unavailable
from tests.runner.conftest import mlp_model, ort_run, save_model, write_set


@pytest.fixture(scope="module", params=["gcc", "zig"])
def aarch64_runner(request, tmp_path_factory):
    """Built with Debian's cross gcc (into the usual cache), and with zig against glibc 2.28
    (into a cache of its own, as one cache holds one runner per target: the downloads and
    zig's own cache are shared)."""
    from edgepack.runner import qemu
    from edgepack.runner.build import build_runner, find_zig
    from edgepack.runner.cache import cache_root

    compiler = request.param
    reason = qemu.unavailable_reason()
    if compiler == "gcc" and shutil.which("aarch64-linux-gnu-gcc") is None:
        reason = "aarch64-linux-gnu-gcc is not installed (apt-get install gcc-aarch64-linux-gnu)"
    if compiler == "zig":
        try:
            find_zig()
        except Exception as exc:  # noqa: BLE001 - the message says what to install
            reason = str(exc)
    if reason:
        unavailable(reason)
    if compiler == "gcc":
        return build_runner("linux-aarch64", compiler="gcc")
    root = tmp_path_factory.mktemp("zig-cache")
    for shared in ("downloads", "zig"):
        (cache_root() / shared).mkdir(parents=True, exist_ok=True)
        (root / shared).symlink_to(cache_root() / shared)
    return build_runner("linux-aarch64", compiler="zig", root=root)


def test_aarch64_runner_is_an_arm_binary_with_its_library(aarch64_runner):
    from edgepack.runner.fetch import elf_machine
    from edgepack.runner.targets import ZIG_GLIBC

    assert aarch64_runner.push_files == ["edgepack-runner", "libonnxruntime.so.1"]
    for name in aarch64_runner.push_files:
        assert elf_machine(aarch64_runner.directory / name) == "aarch64"
    assert aarch64_runner.requires_glibc is not None
    if aarch64_runner.compiler == "zig":
        # As old a glibc as onnxruntime's own library asks for (Jetson's Ubuntu 20.04 has 2.31).
        assert aarch64_runner.requires_glibc == ZIG_GLIBC


def test_version_under_qemu(aarch64_runner):
    from edgepack.runner.qemu import probe_qemu

    info = probe_qemu(aarch64_runner)
    assert info.target == "linux-aarch64" and info.onnxruntime_version == aarch64_runner.ort_version


def _compare(actual_dir, expected: list[np.ndarray]) -> None:
    for i, exp in enumerate(expected):
        arr = numpy_helper.to_array(TensorProto.FromString(
            (actual_dir / f"output_{i}.pb").read_bytes()))
        np.testing.assert_allclose(arr, exp, rtol=1e-4, atol=1e-5)


def test_mlp_under_qemu_matches_host(aarch64_runner, tmp_path):
    from edgepack.runner.qemu import run_qemu

    model = save_model(mlp_model(), tmp_path / "m")
    x = np.random.default_rng(3).standard_normal((4, 64)).astype(np.float32)
    write_set(tmp_path / "s", [("x", x)])
    result = run_qemu(aarch64_runner, model, tmp_path / "s", tmp_path / "out",
                      RunConfig(warmup=0, iterations=2))
    assert result.extra["target"] == "linux-aarch64" and len(result.latencies_ms) == 2
    _compare(tmp_path / "out", ort_run(model, {"x": x}))


def test_conv_model_under_qemu_matches_host(aarch64_runner, tmp_path):
    from edgepack.runner.qemu import run_qemu

    case = onnx_test_data() / "pytorch-converted" / "test_Conv2d"
    x = numpy_helper.to_array(TensorProto.FromString(
        (case / "test_data_set_0" / "input_0.pb").read_bytes()))
    result = run_qemu(aarch64_runner, case / "model.onnx", case / "test_data_set_0",
                      tmp_path / "out", RunConfig(warmup=0, iterations=1, threads=2))
    assert result.threads == 2
    import onnxruntime as ort

    name = ort.InferenceSession(str(case / "model.onnx")).get_inputs()[0].name
    _compare(tmp_path / "out", ort_run(case / "model.onnx", {name: x}))


def test_strings_under_qemu_are_the_hosts_bytes(aarch64_runner, tmp_path):
    """String kernels are exact: the aarch64 runner writes what onnx writes for the host's
    outputs, NUL bytes and non-ASCII included; and it counts its threads there too."""
    import onnxruntime as ort

    from edgepack.runner.qemu import run_qemu
    from edgepack.tensors import write_tensor
    from tests.runner.test_strings import AWKWARD, strings_model

    model = save_model(strings_model(), tmp_path / "m")
    x = np.array(AWKWARD, dtype=object)
    (tmp_path / "s").mkdir()
    write_tensor(tmp_path / "s" / "input_0.pb", "x", x)
    result = run_qemu(aarch64_runner, model, tmp_path / "s", tmp_path / "out",
                      RunConfig(warmup=0, iterations=1, threads=2))
    assert result.threads_used == 2
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    for i, (meta, expected) in enumerate(zip(session.get_outputs(), session.run(None, {"x": x}),
                                             strict=True)):
        assert (tmp_path / "out" / f"output_{i}.pb").read_bytes() == \
            numpy_helper.from_array(expected, meta.name).SerializeToString()
