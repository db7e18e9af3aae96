"""How many device runs and how much wall time `edgepack diagnose` takes to find an injected
divergence, all at once and by bisection.

For ResNet-20, the super-resolution net, fast-neural-style (exported from examples/) and the
onnx package's light_resnet50: pack with one random input set, start a virtual device whose
runner perturbs the middle node of the graph (`--runner-fault perturb:NODE:0.05`), then run
`edgepack diagnose --json` with the default budget (all intermediate tensors at once) and with a
budget of 1 KB (bisection). Each row says whether the node found is the one perturbed, how many
device runs it took and the wall time (diagnose's own figure, host reference included, and the
whole command's). Bisection compares the graph's cut at each probe, not only its outputs: it
finds light_resnet50's perturbed node although the model's flat softmax makes its outputs
agree. --emulate runs the device as an emulated ARM phone (qemu-user; needs the linux-aarch64
runner).

    python bench/diagnose_bench.py [--models a,b] [--emulate] [--json FILE]

Needs the host runner (edgepack runner build --target host), torch (export) and cc.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
sys.path.insert(0, str(REPO))  # run as a script from a checkout, installed or not

# name -> (export arguments, or None for an ONNX file given as is; the file)
MODELS: dict[str, tuple[list[str] | None, str]] = {
    "resnet20": (["--input", "input:1x3x32x32:float32", "--opset", "18"],
                 "resnet20.py:make_model"),
    "super_resolution": (["--input", "input:1x1x224x224:float32"],
                         "super_resolution.py:make_model"),
    "fast_neural_style": (["--input", "input:1x3x64x64:float32", "--exporter", "torchscript",
                           "--opset", "9"], "fast_neural_style.py:make_model"),
    "light_resnet50": (None, "light_resnet50.onnx"),
}


def cli(*args: str, env: dict[str, str], ok: tuple[int, ...] = (0,)) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "edgepack", *args], capture_output=True,
                          text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode not in ok:
        raise SystemExit(f"edgepack {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return wall, proc.stdout


def model_file(name: str, tmp: Path, env: dict[str, str]) -> Path:
    export, ref = MODELS[name]
    out = tmp / f"{name}.onnx"
    if export is None:
        import onnx

        shutil.copyfile(Path(onnx.__file__).parent / "backend/test/data/light" / ref, out)
    else:
        cli("export", str(EXAMPLES / ref), "-o", str(out), *export, env=env)
    return out


def middle_node(bundle: Path) -> str:
    """The middle residual Add (or Sum) of the graph, else its middle node, as diagnose names it.
    A residual sum, because scaling the input of a convolution followed by an instance norm
    changes nothing after the norm (fast-neural-style): bisection, which follows the outputs'
    divergence, would rightly find nothing."""
    import onnx

    model = onnx.load(str(bundle / "predict.onnx"), load_external_data=False)
    nodes = [(i, n) for i, n in enumerate(model.graph.node)
             if n.op_type not in ("Constant", "Shape", "Gather", "Unsqueeze", "Concat",
                                  "ConstantOfShape", "Reshape")]
    sums = [(i, n) for i, n in nodes if n.op_type in ("Add", "Sum")]
    i, node = (sums or nodes)[len(sums or nodes) // 2]
    return node.name or f"{node.op_type}#{i}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--emulate", action="store_true",
                        help="an emulated ARM phone (virtual-device --abi arm64-v8a --emulate)")
    args = parser.parse_args()

    from edgepack.devices.virtual.harness import AdbServer, DeviceFactory
    from edgepack.runner.cache import find_runner

    target = "linux-aarch64" if args.emulate else "host"
    if find_runner(target) is None:
        raise SystemExit(f"build the runner first: edgepack runner build --target {target}")
    device_args = ["--abi", "arm64-v8a", "--emulate"] if args.emulate else []
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgepack-diag-bench-") as tmp_text:
        tmp = Path(tmp_text)
        with AdbServer() as server, DeviceFactory(server, tmp / "devices") as devices:
            env = {**os.environ, **server.env(),
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                               os.environ.get("PYTHONPATH")]))}
            for name in args.models.split(","):
                model = model_file(name, tmp, env)
                bundle = tmp / f"{name}.bundle"
                cli("pack", str(model), "-o", str(bundle), "--random-sets", "1", env=env)
                node = middle_node(bundle)
                dev = devices.start(separate_process=True,
                                    args=[*device_args, "--runner-fault", f"perturb:{node}:0.05"])
                for label, extra in (("all-at-once", []), ("bisect", ["--budget", "0.001"])):
                    wall, out = cli("diagnose", str(bundle), "--device", dev.serial, "--json",
                                    "--timeout", "1800", *extra, env=env, ok=(0, 1))
                    doc = json.loads(out)
                    found = (doc["first_divergent"] or {}).get("node")
                    rows.append({"model": name, "mode": label, "strategy": doc["strategy"],
                                 "nodes": doc["nodes"], "device_runs": doc["device_runs"],
                                 "wall_s": round(doc["wall_s"], 2),
                                 "command_s": round(wall, 2),
                                 "exposed_mb": round(doc["exposed_bytes"] / 1e6, 2),
                                 "injected": node, "found": found, "right": found == node,
                                 "notes": doc["notes"]})
                    print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'model':<18} {'mode':<12} {'nodes':>5} {'MB':>7} {'runs':>4} {'wall s':>7} "
          f"{'cmd s':>6}  found")
    for r in rows:
        print(f"{r['model']:<18} {r['mode']:<12} {r['nodes']:>5} {r['exposed_mb']:>7} "
              f"{r['device_runs']:>4} {r['wall_s']:>7} {r['command_s']:>6}  "
              f"{'yes' if r['right'] else 'NO: ' + str(r['found'])}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
