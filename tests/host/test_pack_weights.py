"""Packing streams weights (issue 16, part 1): external data copied into init.bin a chunk at a
time and hashed while copied, its source checked first (a missing, truncated or escaping data
file is bad input naming the tensor)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgepack.bundle import EXTERNAL_THRESHOLD, INIT, PREDICT, weights
from edgepack.fileio import sha256_file
from edgepack.tensors import read_tensor
from tests.conftest import run_cli

DIM = 96  # a 96x96 float32 weight is 36 KiB: over EXTERNAL_THRESHOLD, several chunks below


def _external(tensor: TensorProto, location: str, offset: int, data: bytes) -> TensorProto:
    del tensor.float_data[:]
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)),
                       ("length", str(len(data)))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def _model(root: Path, *, big: int = 3, location: str = "weights.bin",
           second: str = "data/more.bin") -> tuple[Path, dict[str, np.ndarray]]:
    """x -> MatMul by `big` external weights (in two data files, at unaligned offsets) -> Add an
    inline bias -> Mul by a small external scale -> Add a Constant node's external tensor."""
    rng = np.random.default_rng(7)
    arrays: dict[str, np.ndarray] = {}
    files: dict[str, bytearray] = {location: bytearray(b"\x01" * 13), second: bytearray(b"\x02")}
    inits, nodes, prev = [], [], "x"

    def place(name: str, array: np.ndarray, where: str) -> TensorProto:
        arrays[name] = array
        blob = files[where]
        offset = len(blob)
        blob += array.tobytes()
        blob += b"\x03" * 5  # unaligned on purpose: the packer lays out init.bin afresh
        return _external(numpy_helper.from_array(array, name), where, offset, array.tobytes())

    for i in range(big):
        w = (rng.standard_normal((DIM, DIM)) / DIM).astype(np.float32)
        inits.append(place(f"w{i}", w, location if i % 2 == 0 else second))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"h{i}"]))
        prev = f"h{i}"
    bias = rng.standard_normal(DIM).astype(np.float32)
    arrays["bias"] = bias
    inits.append(numpy_helper.from_array(bias, "bias"))  # inline raw_data, as today
    scale = np.full(DIM, 0.5, np.float32)  # external but small: becomes inline
    inits.append(place("scale", scale, location))
    const = rng.standard_normal((1, DIM)).astype(np.float32)
    const_tensor = place("shift", const, second)
    nodes += [
        helper.make_node("Add", [prev, "bias"], ["b"]),
        helper.make_node("Mul", ["b", "scale"], ["s"]),
        helper.make_node("Constant", [], ["shift"], value=const_tensor),
        helper.make_node("Add", ["s", "shift"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "streamed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, DIM])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, DIM])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    root.mkdir(parents=True, exist_ok=True)
    for where, blob in files.items():
        (root / where).parent.mkdir(parents=True, exist_ok=True)
        (root / where).write_bytes(bytes(blob))
    path = root / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path, arrays


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def test_external_weights_are_streamed_hashed_and_computed_from(tmp_path, monkeypatch):
    # A chunk smaller than every weight and not a divisor of any: each copy takes several reads
    # and ends on a partial chunk.
    monkeypatch.setattr(weights, "CHUNK", 5000)
    model, arrays = _model(tmp_path / "src")
    out = tmp_path / "b"
    r = run_cli("pack", model, "-o", out, "--json")
    assert r.code == 0, r.stderr

    manifest = json.loads((out / "manifest.json").read_text())
    entry = next(f for f in manifest["files"] if f["path"] == INIT)
    assert entry["sha256"] == sha256_file(out / INIT)  # the hash taken while copying
    assert entry["size"] == (out / INIT).stat().st_size
    assert manifest["model"]["external_tensors"] == 3
    # bias (raw_data), scale (small) and shift (the Constant's external tensor, lifted)
    assert manifest["model"]["inline_tensors"] == 3
    assert run_cli("inspect", out).code == 0  # every file against its hash

    predict = onnx.load(str(out / PREDICT), load_external_data=False)
    blob = (out / INIT).read_bytes()
    for tensor in predict.graph.initializer:
        if tensor.name.startswith("w"):
            ref = {e.key: e.value for e in tensor.external_data}
            offset, length = int(ref["offset"]), int(ref["length"])
            assert ref["location"] == INIT and offset % 4096 == 0
            assert blob[offset:offset + length] == arrays[tensor.name].tobytes()
        else:
            assert tensor.data_location == TensorProto.DEFAULT
            assert numpy_helper.to_array(tensor).tobytes() == arrays[tensor.name].tobytes()
    # The Constant node's external tensor (the model's data file is not in the bundle) is
    # carried inside predict.onnx or init.bin, never pointing back at the source.
    assert all(e.value == INIT for t in predict.graph.initializer for e in t.external_data
               if e.key == "location")
    assert not [n for n in predict.graph.node
                if n.op_type == "Constant" and n.attribute[0].t.external_data]

    # The expected outputs are the original model's, computed from the packed bundle.
    _, x = read_tensor(out / "test_data_set_0/input_0.pb")
    _, y = read_tensor(out / "test_data_set_0/output_0.pb")
    want = _session(model).run(None, {"x": x})[0]
    np.testing.assert_array_equal(y, want)
    assert run_cli("run", out, "--engine", "python", "--iterations", "1").code == 0


class _CountingReader(io.RawIOBase):
    """A real file that records the largest read asked of it; with `fd`, it also shows its
    descriptor, so the copy can go through the kernel (its reads are for the hash)."""

    def __init__(self, path: Path, fd: bool) -> None:
        self._fh = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._fd = fd
        self.largest = 0

    def fileno(self) -> int:
        if not self._fd:
            raise io.UnsupportedOperation("no descriptor")
        return self._fh.fileno()

    def tell(self) -> int:
        return self._fh.tell()

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # noqa: ANN001 - any writable buffer
        self.largest = max(self.largest, len(b))
        return self._fh.readinto(b)

    def read(self, size: int = -1) -> bytes:
        self.largest = max(self.largest, size if size >= 0 else 1 << 62)
        return self._fh.read(size)

    def readall(self) -> bytes:
        self.largest = 1 << 62
        return self._fh.read()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fh.seek(offset, whence)

    def close(self) -> None:
        self._fh.close()
        super().close()


@pytest.mark.parametrize("fd", [True, False], ids=["in-kernel", "through-python"])
def test_the_copy_never_reads_more_than_a_chunk(tmp_path, fd):
    data = os.urandom(300_001)
    (tmp_path / "src.bin").write_bytes(b"head" + data)
    src = _CountingReader(tmp_path / "src.bin", fd)
    src.seek(4)
    hasher = hashlib.sha256()
    with open(tmp_path / "dst.bin", "wb", buffering=0) as dst:
        dst.write(b"pad")
        weights.copy_chunks(src, dst, len(data), hasher, chunk=4096)
        dst.write(b"tail")
    src.close()
    assert 0 < src.largest <= 4096
    assert (tmp_path / "dst.bin").read_bytes() == b"pad" + data + b"tail"
    assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()


def test_packing_never_holds_a_whole_weight(tmp_path, monkeypatch):
    """Python-side allocations during a whole pack stay far below its one 16 MiB weight: the
    weight goes from its data file to init.bin a chunk at a time (loading the model with its
    weights, as pack once did, reads each one whole). onnxruntime's own memory is not traced:
    the benchmark, bench/pack_scale.py, measures that."""
    monkeypatch.setattr(weights, "CHUNK", 1 << 20)
    warm, _ = _model(tmp_path / "warm", big=1)  # first-use imports are not the copy's doing
    assert run_cli("pack", warm, "-o", tmp_path / "warm-b").code == 0
    rng = np.random.default_rng(1)
    w = rng.standard_normal((1024, 4096)).astype(np.float32)
    (tmp_path / "w.bin").write_bytes(w.tobytes())
    tensor = _external(numpy_helper.from_array(w, "w"), "w.bin", 0, w.tobytes())
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1024])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4096])], [tensor])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "big.onnx")
    tracemalloc.start()
    try:
        r = run_cli("pack", tmp_path / "big.onnx", "-o", tmp_path / "b")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.code == 0, r.stderr
    assert peak < w.nbytes // 4, peak
    predict = onnx.load(str(tmp_path / "b" / PREDICT), load_external_data=False)
    offset = int({e.key: e.value for e in predict.graph.initializer[0].external_data}["offset"])
    with open(tmp_path / "b" / INIT, "rb") as fh:
        fh.seek(offset)
        assert fh.read() == w.tobytes()


# ---------------------------------------------------------------------------- bad sources


def _refuse(tmp_path: Path, tensor: str, *phrases: str) -> None:
    out = tmp_path / "b"
    r = run_cli("pack", tmp_path / "src" / "model.onnx", "-o", out)
    assert r.code == 2, (r.stdout, r.stderr)
    assert f"tensor '{tensor}'" in r.stderr, r.stderr
    for phrase in phrases:
        assert phrase in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists() and not list(tmp_path.glob(".b.*"))


def test_a_missing_data_file_names_its_tensor(tmp_path):
    _model(tmp_path / "src")
    (tmp_path / "src" / "data" / "more.bin").unlink()
    _refuse(tmp_path, "w1", "data/more.bin", "missing")


def test_a_truncated_data_file_names_its_tensor(tmp_path):
    _model(tmp_path / "src")
    data = tmp_path / "src" / "weights.bin"
    with open(data, "r+b") as fh:
        fh.truncate(13 + DIM * DIM * 4 - 1)  # one byte short of w0
    _refuse(tmp_path, "w0", "truncated")


def test_a_length_that_does_not_fit_the_shape_names_its_tensor(tmp_path):
    path, _ = _model(tmp_path / "src")
    model = onnx.load(str(path), load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "length":
            entry.value = str(int(entry.value) - 4)
    path.write_bytes(model.SerializeToString())
    _refuse(tmp_path, "w0", "needs", "bytes")


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_a_data_file_outside_the_model_directory_is_refused(tmp_path, how):
    path, _ = _model(tmp_path / "src")
    outside = tmp_path / "elsewhere.bin"
    outside.write_bytes((tmp_path / "src" / "weights.bin").read_bytes())
    location = {"dotdot": "../elsewhere.bin", "absolute": str(outside),
                "symlink": "link.bin"}[how]
    if how == "symlink":
        (tmp_path / "src" / "link.bin").symlink_to(outside)
    model = onnx.load(str(path), load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
    path.write_bytes(model.SerializeToString())
    _refuse(tmp_path, "w0", "outside the model's directory")


def test_small_external_tensors_are_still_inline(tmp_path):
    """The threshold applies to external data as to raw_data: a tensor below it stays in
    predict.onnx, whatever file it came from."""
    path, arrays = _model(tmp_path / "src", big=1)
    assert arrays["scale"].nbytes <= EXTERNAL_THRESHOLD
    out = tmp_path / "b"
    assert run_cli("pack", path, "-o", out).code == 0
    predict = onnx.load(str(out / PREDICT), load_external_data=False)
    scale = next(t for t in predict.graph.initializer if t.name == "scale")
    assert scale.data_location == TensorProto.DEFAULT
    assert np.array_equal(numpy_helper.to_array(scale), arrays["scale"])


# ---------------------------------------------------------------------------- check reads graphs


def test_check_reads_the_graph_not_the_weights(tmp_path):
    """`check` of a model in external data: the data files are checked, not loaded, and one
    that lies outside the model's directory is refused naming the tensor, as pack refuses it."""
    path, _ = _model(tmp_path / "src")
    r = run_cli("check", path, "--ep", "cpu", "--json")
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["eps"][0]["verdict"] == "runs fully"

    model = onnx.load(str(path), load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = "../elsewhere.bin"
    (tmp_path / "elsewhere.bin").write_bytes((tmp_path / "src" / "weights.bin").read_bytes())
    path.write_bytes(model.SerializeToString())
    r = run_cli("check", path, "--ep", "cpu")
    assert r.code == 2, (r.stdout, r.stderr)
    assert "tensor 'w0'" in r.stderr and "outside the model's directory" in r.stderr, r.stderr
