"""How `edgepack pack` scales with the size of a model's weights (issue 16, part 1).

    python bench/pack_scale.py [--sizes 0.5,1,1.5,2,2.5] [--dim 8192] [--dir /tmp] [--export 2.5]

For each size it builds a model in a temporary directory (a chain of MatMuls by dim x dim float32
weights, random, held in one external data file beside the model: 256 MiB each at dim 8192, so
2.5 GiB is ten of them, above protobuf's 2 GiB limit), then measures, each in a child process:

- `cp` of the weights file (the floor for moving the bytes once),
- one host inference: an onnxruntime session on the source model and one run (one thread, as
  pack's expected outputs),
- `edgepack pack` of the model, and `edgepack inspect` of the bundle (every file hashed).

and prints side by side: pack's peak RSS / weights bytes (goal <= 1.5) and pack's wall time /
(cp + inference) (goal <= 2), then how both grow per GiB. Peak RSS is the child's own, from
wait4. Everything built is deleted at the end. The machine's load average is printed before and
after: on a shared machine the times are only as good as that.

With --export GIB it also runs `edgepack export` on a torch module of that size (Linear layers;
the dynamo exporter writes external data above 1.5 GiB) and packs and inspects the result,
printing each one's time and peak RSS.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

GIB = 1 << 30

INFER = """
import sys, time, numpy as np, onnxruntime as ort
opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
opts.inter_op_num_threads = 1
opts.log_severity_level = 3
t0 = time.perf_counter()
s = ort.InferenceSession(sys.argv[1], opts, providers=["CPUExecutionProvider"])
dim = s.get_inputs()[0].shape[1]
s.run(None, {"x": np.random.default_rng(0).standard_normal((1, dim), dtype=np.float32)})
print(time.perf_counter() - t0)
"""


@dataclass(frozen=True)
class Child:
    wall: float  # seconds, the whole process
    peak_rss: int  # bytes
    stdout: str


def child(cmd: list[str]) -> Child:
    # Output to files, not pipes: wait4 reaps the child itself (for its own rusage), so
    # nothing may wait on it first, and an unread pipe could stall it.
    # Each step starts with no dirty pages: a copy's speed otherwise depends on how much the
    # step before it left for the disk to write back.
    os.sync()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}): {err.read().decode()[-2000:]}")
        return Child(wall, usage.ru_maxrss * 1024, out.read().decode())


def build(root: Path, count: int, dim: int) -> int:
    """model.onnx + weights.bin beside it; returns the weights' bytes. One weight in memory at
    a time: the bench must not be what fills the machine."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    inits, nodes, prev, offset = [], [], "x", 0
    with open(root / "weights.bin", "wb") as fh:
        for i in range(count):
            w = rng.standard_normal((dim, dim), dtype=np.float32)
            w *= 1 / np.sqrt(dim)  # keeps the chain's values near 1: no inf after ten layers
            fh.write(memoryview(w).cast("B"))
            t = TensorProto(name=f"w{i}", data_type=TensorProto.FLOAT, dims=[dim, dim],
                            data_location=TensorProto.EXTERNAL)
            for key, value in (("location", "weights.bin"), ("offset", str(offset)),
                               ("length", str(w.nbytes))):
                entry = t.external_data.add()
                entry.key, entry.value = key, value
            offset += w.nbytes
            del w
            inits.append(t)
            nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"h{i}"]))
            prev = f"h{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    graph = helper.make_graph(
        nodes, "scale", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, dim])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, dim])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, root / "model.onnx")
    return offset


@dataclass(frozen=True)
class Row:
    gib: float
    weights: int
    cp: Child
    infer: Child
    infer_inside: float  # session + run, without the interpreter's start
    pack: Child
    inspect: Child

    @property
    def rss_ratio(self) -> float:
        return self.pack.peak_rss / self.weights

    @property
    def time_ratio(self) -> float:
        return self.pack.wall / (self.cp.wall + self.infer.wall)


def measure(work: Path, gib: float, dim: int) -> Row:
    count = max(1, round(gib * GIB / (dim * dim * 4)))
    src = work / f"model-{gib:g}"
    src.mkdir()
    try:
        weights = build(src, count, dim)
        cp = child(["cp", str(src / "weights.bin"), str(work / "copy.bin")])
        (work / "copy.bin").unlink()
        infer = child([sys.executable, "-c", INFER, str(src / "model.onnx")])
        bundle = work / "bundle"
        pack = child([sys.executable, "-m", "edgepack", "pack", str(src / "model.onnx"),
                      "-o", str(bundle), "--force"])
        inspect = child([sys.executable, "-m", "edgepack", "inspect", str(bundle), "--json"])
        shutil.rmtree(bundle)
    finally:
        shutil.rmtree(src, ignore_errors=True)
    return Row(weights / GIB, weights, cp, infer, float(infer.stdout.strip()), pack, inspect)


MODULE = """
import torch


class Chain(torch.nn.Module):
    def __init__(self, count, dim):
        super().__init__()
        self.layers = torch.nn.ModuleList(
            torch.nn.Linear(dim, dim, bias=False) for _ in range(count))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def make_model():
    torch.manual_seed(0)
    return Chain(COUNT, DIM)
"""


def export_big(work: Path, gib: float, dim: int) -> None:
    """`edgepack export` of a torch module of `gib` GiB, then pack and inspect of what it
    wrote: the path a user takes with a model over protobuf's 2 GiB limit."""
    count = max(1, round(gib * GIB / (dim * dim * 4)))
    src = work / "export"
    src.mkdir()
    try:
        (src / "chain.py").write_text(MODULE.replace("COUNT", str(count)).replace("DIM", str(dim)))
        model = src / "chain.onnx"
        exp = child([sys.executable, "-m", "edgepack", "export", f"{src / 'chain.py'}:make_model",
                     "--input", f"x:1x{dim}:float32", "-o", str(model)])
        files = sorted(p.name for p in src.iterdir())
        weights = count * dim * dim * 4
        pack = child([sys.executable, "-m", "edgepack", "pack", str(model), "-o",
                      str(src / "bundle")])
        inspect = child([sys.executable, "-m", "edgepack", "inspect", str(src / "bundle")])
    finally:
        shutil.rmtree(src, ignore_errors=True)
    print(f"export of a {count * dim * dim * 4 / GIB:.2f} GiB module: {exp.wall:.1f} s, peak RSS "
          f"{exp.peak_rss / GIB:.2f} GiB ({exp.peak_rss / max(weights, 1):.2f}x the weights); "
          f"wrote {', '.join(files)}")
    print(f"  pack of it: {pack.wall:.1f} s, peak RSS {pack.peak_rss / GIB:.2f} GiB "
          f"({pack.peak_rss / max(weights, 1):.2f}x); inspect {inspect.wall:.1f} s, peak RSS "
          f"{inspect.peak_rss / GIB:.2f} GiB")


def slope(xs: list[float], ys: list[float]) -> float:
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="0.5,1,1.5,2,2.5",
                        help="GiB of weights, comma-separated")
    parser.add_argument("--dim", type=int, default=8192)
    parser.add_argument("--export", type=float, default=None, metavar="GIB",
                        help="also export a torch module of GIB GiB with edgepack export (takes "
                        "about 2x its size in RAM), then pack it")
    parser.add_argument("--dir", type=Path, default=None, help="where to build (default: TMPDIR)")
    args = parser.parse_args()
    sizes = [float(s) for s in args.sizes.split(",")]
    # A kill (timeout's TERM) unwinds like ^C, so the gigabytes built are deleted.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"({os.cpu_count()} cores)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgepack-pack-scale-", dir=args.dir) as tmp:
        for gib in sizes:
            rows.append(measure(Path(tmp), gib, args.dim))
            r = rows[-1]
            print(f"  {r.gib:4.2f} GiB done: pack {r.pack.wall:.1f} s", flush=True)
        if args.export:
            export_big(Path(tmp), args.export, args.dim)
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    head = (f"{'weights':>8} {'cp s':>6} {'infer s':>8} {'(in-proc)':>9} {'pack s':>7} "
            f"{'pack RSS':>9} {'RSS/w':>6} {'t/(cp+inf)':>10} {'inspect s':>9} {'insp RSS':>9}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r.gib:6.2f}Gi {r.cp.wall:6.2f} {r.infer.wall:8.2f} {r.infer_inside:9.2f} "
              f"{r.pack.wall:7.2f} {r.pack.peak_rss / GIB:7.2f}Gi {r.rss_ratio:6.2f} "
              f"{r.time_ratio:10.2f} {r.inspect.wall:9.2f} {r.inspect.peak_rss / GIB:7.2f}Gi")
    # The goals are the issue's, for its largest model; smaller ones carry pack's fixed costs
    # (interpreter, imports, one tensor mapped while onnxruntime prepacks it) over fewer bytes.
    big = rows[-1]
    print()
    print(f"at {big.gib:.2f} GiB: pack peak RSS / weights {big.rss_ratio:.2f} (goal <= 1.5: "
          f"{'met' if big.rss_ratio <= 1.5 else 'NOT met'}; worst over the sizes "
          f"{max(r.rss_ratio for r in rows):.2f})")
    print(f"at {big.gib:.2f} GiB: pack wall / (cp + inference) {big.time_ratio:.2f} (goal <= 2: "
          f"{'met' if big.time_ratio <= 2 else 'NOT met'}; worst over the sizes "
          f"{max(r.time_ratio for r in rows):.2f})")
    if len(rows) > 1:
        gibs = [r.gib for r in rows]
        print("growth per GiB of weights (least squares over the sizes):")
        for label, ys in (
            ("pack peak RSS", [r.pack.peak_rss / GIB for r in rows]),
            ("pack wall", [r.pack.wall for r in rows]),
            ("cp + inference wall", [r.cp.wall + r.infer.wall for r in rows]),
            ("inspect peak RSS", [r.inspect.peak_rss / GIB for r in rows]),
        ):
            unit = "GiB" if "RSS" in label else "s"
            print(f"  {label:20} {slope(gibs, ys):+.3f} {unit} per GiB")


if __name__ == "__main__":
    main()
