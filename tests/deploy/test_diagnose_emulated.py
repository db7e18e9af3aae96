"""diagnose against an emulated ARM phone (`virtual-device --abi arm64-v8a --emulate`, issue 15):
onnxruntime's ARM kernels differ from the host's x86 ones in the last bits (about 1e-7 of a
tensor's magnitude), which must not read as a divergence, while an injected fault still does.
Slow: qemu-user runs the runner."""

from __future__ import annotations

import time

import pytest

from tests.conftest import run_cli
from tests.deploy.conftest import emulated_userland

pytestmark = pytest.mark.slow


def test_diagnose_on_an_emulated_arm_phone(virtual_devices, aarch64_runner, bundles, tmp_path):
    from edgepack.devices.virtual.faults import Faults

    bundle = bundles["resnet20"]
    phone = virtual_devices.start(abi="arm64-v8a", emulate=True, userland=emulated_userland())
    t0 = time.perf_counter()
    r = run_cli("diagnose", bundle, "--device", phone.serial, "--json", "--timeout", "600")
    wall = time.perf_counter() - t0
    assert r.code == 0, r.stderr + r.stdout
    doc = r.json()
    assert doc["first_divergent"] is None and doc["device_runs"] == 1
    # The ARM kernels did compute: some tensors differ from the host's, all within tolerance.
    errors = [row["scaled_error"] for row in doc["table"] if row["scaled_error"] is not None]
    assert len(errors) == len(doc["table"]) > 20
    assert 0 < max(errors) < 1e-4, max(errors)
    print(f"diagnose on the emulated phone: {wall:.1f} s wall, largest error "
          f"{max(errors):.3g} of a tensor's magnitude")

    # A faulty kernel on the ARM phone (the middle residual Add): found, with the ARM
    # differences before it within.
    import onnx

    adds = [n.name for n in onnx.load(str(bundle / "predict.onnx"),
                                      load_external_data=False).graph.node if n.op_type == "Add"]
    node = adds[len(adds) // 2]
    faulty = virtual_devices.start(abi="arm64-v8a", emulate=True, userland=emulated_userland(),
                                   faults=Faults(runner=f"perturb:{node}:0.05"))
    t0 = time.perf_counter()
    r = run_cli("diagnose", bundle, "--device", faulty.serial, "--json", "--timeout", "600")
    wall = time.perf_counter() - t0
    assert r.code == 1, r.stderr + r.stdout
    first = r.json()["first_divergent"]
    assert (first["node"], first["op_type"]) == (node, "Add"), first
    assert all(i["within"] for i in first["inputs"])
    print(f"diagnose of a perturbed node on the emulated phone: {wall:.1f} s wall")
