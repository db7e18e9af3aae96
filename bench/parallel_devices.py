"""Four devices in parallel against one: `edgepack bench` on a transfer-bound bundle.

    python bench/parallel_devices.py [--devices 4] [--size-mb 32] [--bandwidth-mb 16] [--trials 3]

Each virtual device has its own link capped at --bandwidth-mb MB/s (a phone on its own USB
port), behind one real adb server, and a fresh root every trial so every push is a full one.
The bundle is one large initializer and next to no compute, so a run's time is the push. The
claim: N devices side by side finish within 1.3x the wall time of one. Prints both times, the
ratio, and the throughput. Needs Debian's adb; builds the host runner if it is not cached.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgepack.devices.virtual.harness import AdbServer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def transfer_bound_bundle(directory: Path, size_mb: int) -> Path:
    """ReduceSum(W * x) with W of size_mb MB: the push is everything, the run nothing."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgepack.bundle import PackOptions, pack
    from edgepack.inputs import InputRequest

    n = size_mb * 1024 * 1024 // 4
    w = numpy_helper.from_array(np.random.default_rng(0).random((1, n), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "w"], ["p"]),
         helper.make_node("ReduceSum", ["p"], ["y"], keepdims=1)],
        "transfer_bound",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = directory / "transfer_bound.onnx"
    onnx.save_model(model, path, save_as_external_data=True, location="weights.bin")
    return pack(path, directory / "bundle", InputRequest(random_sets=1, seed=0),
                PackOptions(name="transfer_bound")).path


def one_trial(bundle_path: Path, count: int, bandwidth: int, server: AdbServer, work: Path
              ) -> tuple[float, int]:
    """Fresh virtual devices, one bench over all of them: its wall time in seconds and the bytes
    pushed to one device (the runner and its library as well as the bundle)."""
    from edgepack.bench import device_target, run_bench
    from edgepack.bundle import load_bundle
    from edgepack.devices.adb import AdbDevice, ServerAddress
    from edgepack.devices.virtual import Faults
    from edgepack.devices.virtual.harness import DeviceFactory
    from edgepack.records import BenchParams

    trial = Path(tempfile.mkdtemp(prefix="trial-", dir=work))
    with DeviceFactory(server, trial) as factory:
        # In-process devices share this interpreter with the bench: a harder test than phones,
        # which do their side of the transfer on their own CPUs.
        devices = [factory.start(faults=Faults(bandwidth=bandwidth)) for _ in range(count)]
        address = ServerAddress(server.host, server.port)
        targets = [device_target(AdbDevice(d.serial, address)) for d in devices]
        params = BenchParams(repeat=1, iterations=1, warmup=0, probe_state=False)
        result = run_bench([load_bundle(bundle_path)], targets, params, work_dir=trial / "work")
    bad = [r for r in result.runs if r.status != "pass"]
    if bad:
        raise SystemExit(f"a run failed: {bad[0].serial}: {bad[0].error}")
    pushed = [r.result.transfer.bytes_pushed for r in result.runs if r.result]
    if min(pushed) < bundle_size(bundle_path):
        raise SystemExit(f"a push was incremental ({pushed}); the trial measures nothing")
    return result.wall_s, min(pushed)


def bundle_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--size-mb", type=int, default=32)
    parser.add_argument("--bandwidth-mb", type=float, default=16.0)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()

    from edgepack.devices.virtual.harness import AdbServer
    from edgepack.runner.build import build_runner

    build_runner("host")  # built once and cached; the virtual device runs the host's runner
    # A private adb server on a free port: a developer's own server and phones stay untouched.
    with AdbServer() as server:
        with tempfile.TemporaryDirectory(prefix="edgepack-parallel-") as tmp:
            work = Path(tmp)
            bundle = transfer_bound_bundle(work, args.size_mb)
            size = bundle_size(bundle)
            rate = int(args.bandwidth_mb * 1e6)
            one, many = [], []
            pushed = 0
            for _ in range(args.trials):  # interleaved, so drift hits both alike
                t, pushed = one_trial(bundle, 1, rate, server, work)
                one.append(t)
                many.append(one_trial(bundle, args.devices, rate, server, work)[0])
    t1, tn = statistics.median(one), statistics.median(many)
    ratio = tn / t1
    print(f"bundle {size / 1e6:.1f} MB; pushed per device {pushed / 1e6:.1f} MB (bundle, "
          f"runner and its onnxruntime library); link {args.bandwidth_mb:g} MB/s per device; "
          f"median of {args.trials} trial(s)")
    print(f"1 device:  {t1:.2f} s  (trials: {', '.join(f'{t:.2f}' for t in one)})")
    print(f"{args.devices} devices: {tn:.2f} s  (trials: {', '.join(f'{t:.2f}' for t in many)})")
    print(f"ratio {args.devices} devices / 1 device: {ratio:.2f}x (target <= 1.3x); pushed "
          f"{args.devices * pushed / tn / 1e6:.1f} MB/s in all vs {pushed / t1 / 1e6:.1f} MB/s")
    sys.exit(0 if ratio <= 1.3 else 1)


if __name__ == "__main__":
    main()
