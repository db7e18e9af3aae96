"""Deploy benchmarks on virtual devices behind a private adb server, measured side by side.

    python bench/deploy_bench.py [--size-mb 256] [--weights-mb 100] [--runs 5]

1. Push throughput: edgepack's push (64 KiB sync DATA chunks on adbutils' connection) against
   `adb push` of the same file to the same virtual device, interleaved. Target >= 0.9x.
2. Redeploy of an unchanged bundle with 100 MB of weights, against its first deploy to a fresh
   device. Target <= 10 % of the first deploy's wall time: the deploy's own wall time, the
   `wall_s` its report carries (the same wall time item 3 starts from). The whole command's
   time is printed beside it: a fixed ~0.45 s of it is Python and the imports of the CLI's
   dependencies, which no deploy design removes.
3. Deploy overhead: wall time minus push and runner time. Target <= 1 s. And deploy never
   imports torch.

The virtual device runs in its own process, as a phone is its own machine. Needs the host runner
(`edgepack runner build --target host`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def weights_model(path: Path, weights_mb: int) -> Path:
    """A table lookup: weights_mb of float32 in one initializer, almost no compute."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rows = weights_mb * 2**20 // (4 * 256)
    table = np.random.default_rng(0).standard_normal((rows, 256), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["rows"], axis=0)],
        "lookup",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [4])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, [4, 256])],
        [numpy_helper.from_array(table, "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path), save_as_external_data=True, location="lookup.data")
    return path


def cli(*args: str, env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "edgepack", *args], env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"edgepack {' '.join(args)} failed:\n{proc.stderr}")
    return wall, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--weights-mb", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--usb-mbs", type=int, default=35,
                        help="the capped link's rate in MB/s (adb push over USB 2.0: 20-40)")
    args = parser.parse_args()

    from edgepack.devices.adb import AdbDevice, ServerAddress
    from edgepack.devices.virtual.harness import AdbServer, DeviceFactory
    from edgepack.runner.cache import find_runner

    if find_runner("host") is None:
        raise SystemExit("build the host runner first: edgepack runner build --target host")
    with tempfile.TemporaryDirectory(prefix="edgepack-bench-") as tmp_text:
        tmp = Path(tmp_text)
        with AdbServer() as server, DeviceFactory(server, tmp / "devices") as devices:
            env = {**os.environ, **server.env()}
            # An installed edgepack runs from bytecode; with PYTHONDONTWRITEBYTECODE set (as on
            # these machines) every command would compile edgepack's sources afresh, 50-80 ms
            # that no user pays.
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            os.environ.update(server.env())

            # ---------------------------------------------------------------- 1. push
            dev = devices.start(separate_process=True)
            blob = tmp / "blob.bin"
            with open(blob, "wb") as fh:
                for _ in range(args.size_mb):
                    fh.write(os.urandom(2**20))
            ours = AdbDevice(dev.serial, ServerAddress(server.host, server.port))
            adb_s, ours_s = [], []
            for k in range(args.runs):
                t0 = time.perf_counter()
                server.run("push", str(blob), f"/data/local/tmp/adb_{k}.bin", serial=dev.serial,
                           timeout=600).check_returncode()
                adb_s.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                ours.push(blob, f"/data/local/tmp/ours_{k}.bin")
                ours_s.append(time.perf_counter() - t0)
                ours.shell("rm -f /data/local/tmp/adb_*.bin /data/local/tmp/ours_*.bin")
            mb = args.size_mb * 2**20 / 1e6
            adb_rate, our_rate = mb / statistics.median(adb_s), mb / statistics.median(ours_s)
            print(f"push {args.size_mb} MiB, median of {args.runs} interleaved runs:")
            print(f"  adb push        {adb_rate:8.1f} MB/s")
            print(f"  edgepack push   {our_rate:8.1f} MB/s")
            print(f"  ratio {our_rate / adb_rate:.2f}x (target >= 0.9x)")
            blob.unlink()

            # ---------------------------------------------------------------- 2. redeploy
            model = weights_model(tmp / "lookup.onnx", args.weights_mb)
            bundle = tmp / "lookup.bundle"
            cli("pack", str(model), "-o", str(bundle), env=env)
            overheads: list[float] = []
            fresh = None
            # Loopback moves a GB/s, which no phone does: the same comparison is also made with
            # the device's link capped at what adb push achieves over USB 2.0.
            for link, flags in (("loopback, uncapped", []),
                                (f"link capped at {args.usb_mbs} MB/s (USB 2.0)",
                                 ["--bandwidth", str(args.usb_mbs * 1_000_000)])):
                rows = {"first": ([], []), "again": ([], [])}
                for _ in range(max(1, args.runs // 2)):
                    fresh = devices.start(separate_process=True, args=flags)
                    base = ["deploy", str(bundle), "--device", fresh.serial, "--iterations", "3",
                            "--json"]
                    for key in ("first", "again"):
                        wall, out = cli(*base, env=env)
                        doc = json.loads(out)
                        rows[key][0].append(wall)
                        rows[key][1].append(doc["wall_s"])
                        overheads.append(doc["wall_s"] - doc["transfer"]["push_s"] - doc["run_s"])
                    assert doc["transfer"]["bytes_pushed"] == 0
                print(f"deploy of a bundle with {args.weights_mb} MiB of weights, {link} "
                      f"(median of {len(rows['first'][0])}):")
                first, again = (statistics.median(rows[k][1]) for k in ("first", "again"))
                print(f"  deploy wall time (the report's wall_s): first {first:6.2f} s, redeploy "
                      f"{again:5.2f} s (nothing pushed): ratio {again / first:.3f} "
                      "(target <= 0.10)")
                cmd_first, cmd_again = (statistics.median(rows[k][0]) for k in ("first", "again"))
                print(f"  whole command, for reference:        first {cmd_first:6.2f} s, redeploy "
                      f"{cmd_again:5.2f} s: ratio {cmd_again / cmd_first:.3f}; "
                      f"{cmd_again - again:.2f} s of the redeploy is the process around the "
                      "deploy (interpreter start, imports of typer/pydantic, adbutils/requests, "
                      "numpy; bundle load; output)")

            # ---------------------------------------------------------------- 3. overhead
            print("deploy overhead (deploy's wall time minus push and runner time):")
            print(f"  median {statistics.median(overheads):.3f} s, max {max(overheads):.3f} s "
                  "(target <= 1 s)")
            assert fresh is not None
            probe = subprocess.run(
                [sys.executable, "-c",
                 "import sys; from edgepack.cli import main\n"
                 "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
                 "print('torch imported' if 'torch' in sys.modules else 'torch not imported')",
                 "deploy", str(bundle), "--device", fresh.serial, "--json"],
                env=env, capture_output=True, text=True)
            print(f"  {probe.stdout.strip().splitlines()[-1]} by deploy")


if __name__ == "__main__":
    main()
