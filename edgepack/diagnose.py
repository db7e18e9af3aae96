"""`edgepack diagnose`: the first node whose output goes wrong on a device.

A debug copy of the bundle's predict.onnx lists intermediate tensors as extra graph outputs; it
is packed into a temporary bundle with the same input set (a debug bundle is a bundle: the device
path is the ordinary one, push, run, pull) and run through the executor seam, and the host
reference is the same debug model run as expected outputs are made (onnxruntime CPU, one thread,
ort_session.reference_session). Tensors are compared one by one in the graph's topological order.

The tolerance of one tensor (`tensor_tolerance`): rtol and atol are its dtype's defaults
(edgepack.dtypes), and atol is raised to rtol * max|reference| of that tensor. An intermediate
tensor has no tolerance of its own, and the error a different but correct kernel makes grows with
the tensor's magnitude, not with each element's: a near-zero element of a tensor whose values
reach 100 may differ by 100 * rtol after an honest reordering of a sum. An element diverges when
|device - reference| > atol' + rtol * |reference|; a tensor diverges when any element does.

The first divergent node is the first node, in topological order, one of whose outputs
diverges; its inputs are, by that order, all within (the report shows their errors).

Strategy (`--budget MB`): when all intermediate tensors (sizes from the host run) fit in the
budget, they are exposed at once, one device run. Otherwise the search bisects over the
topological order, one device run per step: about log2(nodes) runs, plus one last run for the
divergent node's inputs and the table of the error along the graph after it (as many tensors as
the budget holds). A step at position P exposes the graph's cut there: every tensor made at or
before P that a later node (or the graph's outputs) still uses. Everything after P is computed
from that cut, so the first P whose cut diverges is a node whose output diverges while its
inputs (all in the previous cut) are within: the answer needs no assumption that a divergence
reaches the graph's outputs (light_resnet50's flat softmax makes its outputs agree whatever
the scale of its logits). Bisection does assume that once the cut diverges it stays divergent;
a divergence that a later node cancels (an instance norm undoing a scale error) before the
probed cuts is seen only all at once.

Nodes inside subgraphs (the bodies of If, Loop, Scan) cannot be graph outputs: the search
covers the main graph, whose node holding the body shows the body's result, and the report
lists the nodes it could not search.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgepack.compare import Metrics, compare_output, read_outputs
from edgepack.errors import EdgepackError, ExitCode, short

if TYPE_CHECKING:
    from edgepack.bundle import Bundle
    from edgepack.executors import Executor
    from edgepack.runner.result import RunConfig


@dataclass(frozen=True)
class TensorCheck:
    """One tensor, device against host reference."""

    tensor: str
    within: bool
    reason: str
    max_ref: float | None  # max |reference|, what the tolerance scales with
    metrics: Metrics | None


@dataclass(frozen=True)
class NodeRow:
    """One node of the table: its first checked output."""

    index: int  # position in the topological order
    node: str
    op_type: str
    output: str
    within: bool
    max_abs_error: float | None
    max_rel_error: float | None
    mismatched: int | None
    total: int | None
    # max abs error / max |reference|: the error on the scale the tolerance is scaled to, which
    # the HTML plot draws (max_rel_error explodes on near-zero elements of a large tensor)
    scaled_error: float | None = None
    scaled_tolerance: float | None = None  # atol / max |reference|: no element diverges below
    provider: str | None = None  # where the profile says the node ran (--ep), None: unknown


@dataclass(frozen=True)
class Divergence:
    node: str
    op_type: str
    index: int
    output: str
    module: str | None  # the PyTorch module (host/nodes.json), None when unknown
    provider: str | None  # where the profile says it ran (--ep), None when unknown
    metrics: Metrics | None
    reason: str
    inputs: list[TensorCheck]


@dataclass(frozen=True)
class Unsearched:
    """A main-graph node holding subgraphs (If, Loop, Scan): the nodes of its bodies cannot be
    exposed as outputs, so the search sees only the holder's outputs."""

    node: str
    op_type: str
    inner_nodes: list[str]  # every node of its bodies, nested bodies included


@dataclass(frozen=True)
class Diagnosis:
    bundle: str
    device: str
    strategy: str  # "all-at-once" or "bisect"
    device_runs: int
    nodes: int
    exposed_bytes: int  # every intermediate tensor of the input set, from the host run
    budget_bytes: int
    first_divergent: Divergence | None
    table: list[NodeRow]
    wall_s: float
    notes: list[str] = field(default_factory=list)
    not_searched: list[Unsearched] = field(default_factory=list)

    @property
    def diverged(self) -> bool:
        return self.first_divergent is not None


def tensor_tolerance(reference: np.ndarray) -> tuple[float, float, float | None]:
    """(rtol, atol, max|reference|) for one tensor: its dtype's default tolerance with atol
    scaled to the tensor's magnitude (the module docstring says why)."""
    from edgepack.bundle.schema import default_tolerance
    from edgepack.tensors import array_dtype

    base = default_tolerance(array_dtype(reference))
    if reference.dtype.kind not in "fc" or reference.size == 0:
        return base.rtol, base.atol, None
    finite = np.abs(reference[np.isfinite(reference)])
    peak = float(finite.max()) if finite.size else 0.0
    return base.rtol, max(base.atol, base.rtol * peak), peak


def check_tensor(name: str, reference: np.ndarray, actual: np.ndarray | None) -> TensorCheck:
    from edgepack.bundle.schema import Tolerance

    rtol, atol, peak = tensor_tolerance(reference)
    verdict = compare_output(name, reference, actual, Tolerance(rtol=rtol, atol=atol))
    return TensorCheck(name, verdict.passed, verdict.reason, peak, verdict.metrics)


@dataclass(frozen=True)
class _Node:
    index: int
    name: str
    op_type: str
    inputs: list[str]
    outputs: list[str]  # the ones that can be exposed


class Diagnoser:
    """One diagnosis: the bundle's graph, the host reference of every tensor, and the device
    runs made so far."""

    def __init__(self, bundle: Bundle, executor: Executor, config: RunConfig, work: Path,
                 budget_bytes: int, set_index: int = 0,
                 stage: Callable[[str], None] | None = None) -> None:
        import onnx

        from edgepack.bundle.schema import INIT, PREDICT

        self.bundle, self.executor, self.config = bundle, executor, config
        self.work, self.budget, self.set_index = work, budget_bytes, set_index
        self.stage = stage or (lambda _text: None)
        self.started = time.perf_counter()  # the wall time counts the host reference too
        self.device_runs = 0
        self.notes: list[str] = []
        predict = bundle.path / PREDICT
        if bundle.manifest.model.file != PREDICT or not predict.is_file():
            raise EdgepackError(f"{bundle.path}: diagnose needs the bundle's {PREDICT} as the "
                                "model the device runs (pack --format onnx)", ExitCode.BAD_INPUT)
        if not 0 <= set_index < len(bundle.manifest.test_sets):
            raise EdgepackError(f"--set {set_index}: the bundle has "
                                f"{len(bundle.manifest.test_sets)} input set(s)",
                                ExitCode.BAD_INPUT)
        self.model = onnx.load(str(predict), load_external_data=False)
        self.init = bundle.path / INIT if (bundle.path / INIT).is_file() else None
        graph_outputs = [o.name for o in self.model.graph.output]
        self.graph_outputs = graph_outputs
        self.nodes: list[_Node] = []
        for i, node in enumerate(self.model.graph.node):
            outs = [o for o in node.output if o] if node.op_type != "Constant" else []
            self.nodes.append(_Node(i, node.name or f"{node.op_type}#{i}", node.op_type,
                                    [x for x in node.input if x], outs))
        self.producer = {o: n for n in self.nodes for o in n.outputs}
        # The last main-graph node using each tensor, a body's use counting as its holder's
        # (a body reads outer tensors by name, not through the holder's inputs).
        self.last_use: dict[str, int] = {}
        self.not_searched: list[Unsearched] = []
        for i, node in enumerate(self.model.graph.node):
            inner: list[str] = []
            used = set(node.input) | _subgraph_names(node, inner)
            for name in used:
                if name:
                    self.last_use[name] = i
            if inner:
                self.not_searched.append(Unsearched(self.nodes[i].name, node.op_type, inner))
        if self.not_searched:
            count = sum(len(u.inner_nodes) for u in self.not_searched)
            holders = ", ".join(f"{u.node} ({u.op_type}, {len(u.inner_nodes)})"
                                for u in self.not_searched[:5])
            self.notes.append(f"{count} node(s) inside subgraphs were not searched (a body's "
                              f"tensors cannot be exposed); their holders' outputs were: "
                              f"{holders}{', ...' if len(self.not_searched) > 5 else ''}")
        self.reference = self._host_reference()
        self.exposed_bytes = sum(int(a.nbytes) for a in self.reference.values())

    # ------------------------------------------------------------------ host reference

    def _debug_model(self, names: list[str]) -> Any:
        """The model with `names` as extra outputs, typed from the host run when known."""
        import onnx
        from onnx import helper

        from edgepack.tensors import array_dtype

        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        present = {o.name for o in model.graph.output}
        reference = getattr(self, "reference", {})
        for name in names:
            if name in present:
                continue
            present.add(name)
            array = reference.get(name)
            if array is None:
                model.graph.output.append(onnx.ValueInfoProto(name=name))
                continue
            from edgepack.dtypes import lookup

            elem = lookup(array_dtype(array))
            model.graph.output.append(helper.make_tensor_value_info(
                name, elem.onnx if elem else onnx.TensorProto.FLOAT, list(array.shape)))
        return model

    def _write_model(self, model: Any, stem: str) -> Path:
        """Every debug model goes into one directory beside one copy of init.bin: onnxruntime
        refuses external data that resolves outside the model's directory (symlinks too), and
        the ONNX checker pack runs refuses hard-linked data."""
        from edgepack.bundle.schema import INIT

        directory = self.work / "models"
        directory.mkdir(parents=True, exist_ok=True)
        if self.init is not None and not (directory / INIT).exists():
            shutil.copyfile(self.init, directory / INIT)
        path = directory / f"{stem}.onnx"
        path.write_bytes(model.SerializeToString())
        return path

    def _feeds(self) -> dict[str, np.ndarray]:
        from edgepack.tensors import read_tensor

        test_set = self.bundle.manifest.test_sets[self.set_index]
        return {f.name: read_tensor(self.bundle.path / f.file)[1] for f in test_set.inputs}

    def _host_reference(self) -> dict[str, np.ndarray]:
        from edgepack.ort_session import prepare, reference_session, run_session

        self.stage("host reference: every intermediate tensor")
        names = [o for n in self.nodes for o in n.outputs]
        path = self._write_model(self._debug_model(names), "host")
        session = reference_session(path)
        wanted = [o.name for o in session.get_outputs()]
        try:
            values = run_session(session, prepare(session, self._feeds()))
        except Exception as exc:  # noqa: BLE001 - onnxruntime's errors have no common type
            raise EdgepackError(f"onnxruntime could not run the debug model on the host: "
                                f"{short(exc)}", ExitCode.BAD_INPUT) from None
        result = {n: v for n, v in zip(wanted, values, strict=True)
                  if isinstance(v, np.ndarray)}
        expected = self.bundle.expected_outputs(self.set_index)
        tolerances = {o.name: o.tolerance for o in self.bundle.manifest.outputs}
        for name, array in expected.items():
            verdict = compare_output(name, array, result.get(name), tolerances[name])
            if not verdict.passed:
                raise EdgepackError(
                    f"{self.bundle.path}: the host cannot reproduce the bundle's expected output "
                    f"{name!r} ({verdict.reason}); repack it with this onnxruntime before "
                    "diagnosing a device", ExitCode.BAD_INPUT)
        return result

    # ------------------------------------------------------------------ device runs

    def device_run(self, names: list[str]) -> dict[str, np.ndarray]:
        """One run of the debug bundle exposing `names` on the executor; the arrays it got."""
        from edgepack.bundle.packer import PackOptions, pack
        from edgepack.inputs import InputRequest

        self.device_runs += 1
        run = self.device_runs
        self.stage(f"device run {run}: {len(names)} tensor(s) exposed")
        path = self._write_model(self._debug_model(names), f"debug-{run}")
        debug = pack(path, self.work / f"bundle-{run}",
                     InputRequest(dirs=[self.bundle.set_dir(self.set_index)]),
                     PackOptions(name=f"{self.bundle.name}.diagnose", force=True,
                                 allow_nonfinite=True))
        out_dir = self.work / f"out-{run}"
        with self.executor.prepare(debug, self.config) as prepared:
            self.device = prepared.info.serial
            result = prepared.run_set(0, self.config, out_dir)
        self.profile = result.profile_file
        outputs = [o.name for o in debug.manifest.outputs]
        got = read_outputs(out_dir, outputs)
        path.unlink()
        shutil.rmtree(self.work / f"bundle-{run}", ignore_errors=True)
        return got

    def check(self, got: dict[str, np.ndarray], name: str) -> TensorCheck:
        return check_tensor(name, self.reference[name], got.get(name))

    def node_diverges(self, got: dict[str, np.ndarray], node: _Node) -> TensorCheck | None:
        for out in node.outputs:
            if out in self.reference and out in got:
                c = self.check(got, out)
                if not c.within:
                    return c
        return None

    # ------------------------------------------------------------------ strategies

    def run(self) -> Diagnosis:
        checkable = [n for n in self.nodes if any(o in self.reference for o in n.outputs)]
        if self.exposed_bytes <= self.budget:
            strategy = "all-at-once"
            got = self.device_run([o for n in checkable for o in n.outputs
                                   if o in self.reference])
            first = next((n for n in checkable if self.node_diverges(got, n)), None)
            table_nodes = checkable
        else:
            strategy = "bisect"
            first, got, table_nodes = self._bisect(checkable)
        divergence = self._divergence(first, got) if first is not None else None
        table = [self._row(n, got) for n in table_nodes
                 if any(o in got for o in n.outputs)]
        return Diagnosis(self.bundle.name, getattr(self, "device", "?"), strategy,
                         self.device_runs, len(self.nodes), self.exposed_bytes, self.budget,
                         divergence, table, time.perf_counter() - self.started, self.notes,
                         self.not_searched)

    def cut(self, node: _Node) -> list[str]:
        """The tensors made at or before `node` that a later node or the graph's outputs use:
        everything after `node` is computed from them (and the graph's inputs and weights)."""
        outputs = set(self.graph_outputs)
        return [o for n in self.nodes[:node.index + 1] for o in n.outputs
                if o in self.reference
                and (self.last_use.get(o, -1) > node.index or o in outputs)]

    def _bisect(self, checkable: list[_Node]) -> tuple[_Node | None, dict[str, np.ndarray],
                                                       list[_Node]]:
        # lo: a position whose cut is within (-1: the graph's inputs); hi: the answer's
        # candidate, confirmed once a cut at or before it was seen diverging.
        lo, hi = -1, len(checkable) - 1
        confirmed = False
        probes = 0
        while hi - lo > 1:
            mid = (lo + hi) // 2
            cut = self.cut(checkable[mid])
            got = self.device_run(cut)  # the graph's outputs come along in every run
            probes += 1
            if not confirmed:
                wrong = {o for o in self.graph_outputs
                         if o in self.reference and not self.check(got, o).within}
                # The earliest producer of a wrong graph output diverges for sure.
                early = min((i for i, n in enumerate(checkable) if set(n.outputs) & wrong),
                            default=None)
                if early is not None and early < hi:
                    hi, confirmed = early, True
                if mid >= hi:
                    continue
            if any(not self.check(got, x).within for x in cut):
                hi, confirmed = mid, True
            else:
                lo = mid
        first, got, later = self._last_run(checkable, hi)
        if not confirmed and self.node_diverges(got, first) is None:
            self.notes.append(f"bisection found every cut it probed ({probes}) within, and the "
                              "outputs agree; a divergence that a later node cancels between "
                              "two probed cuts is seen only all at once (a larger --budget)")
            return None, got, [first] + later
        return first, got, [first] + later

    def _last_run(self, checkable: list[_Node], hi: int
                  ) -> tuple[_Node, dict[str, np.ndarray], list[_Node]]:
        """The divergent node's inputs and outputs, and as much of the graph after it as the
        budget holds, evenly spread: one device run."""
        first = checkable[hi]
        names = [x for x in first.inputs + first.outputs if x in self.reference]
        used = sum(int(self.reference[x].nbytes) for x in names)
        after = checkable[hi + 1:]
        sizes = [sum(int(self.reference[o].nbytes) for o in n.outputs if o in self.reference)
                 for n in after]
        room = max(0, self.budget - used)
        count = len(after)
        while count and sum(sorted(sizes)[-count:]) > room:
            count //= 2
        step = max(1, len(after) // count) if count else 0
        later = after[::step][:count] if step else []
        got = self.device_run(names + [o for n in later for o in n.outputs
                                       if o in self.reference])
        return first, got, later

    def _divergence(self, node: _Node, got: dict[str, np.ndarray]) -> Divergence:
        check = self.node_diverges(got, node)
        output = check.tensor if check else node.outputs[0]
        inputs = [self.check(got, x) if x in got else
                  TensorCheck(x, True, "a graph input or weight: the same bytes on both sides",
                              None, None)
                  for x in node.inputs if x in got or x not in self.producer]
        return Divergence(node.name, node.op_type, node.index, output, self.module_of(node),
                          self.provider_of(node), check.metrics if check else None,
                          check.reason if check else "", inputs)

    def _row(self, node: _Node, got: dict[str, np.ndarray]) -> NodeRow:
        out = next(o for o in node.outputs if o in got)
        c = self.check(got, out)
        m = c.metrics
        scaled = tolerance = None
        if c.max_ref and m is not None and m.max_abs_error is not None:
            scaled = float(m.max_abs_error) / c.max_ref
            tolerance = tensor_tolerance(self.reference[out])[1] / c.max_ref
        return NodeRow(node.index, node.name, node.op_type, out, c.within,
                       m.max_abs_error if m else None, m.max_rel_error if m else None,
                       m.mismatched if m else None, m.total if m else None, scaled, tolerance,
                       self.provider_of(node))

    # ------------------------------------------------------------------ what the node is

    def module_of(self, node: _Node) -> str | None:
        """The PyTorch module a node came from, from the node map pack kept on the host."""
        from edgepack.bundle.schema import NODE_MAP

        path = self.bundle.path / NODE_MAP
        try:
            doc = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            return None
        for entry in doc.get("nodes", []):
            if entry.get("graph") == "main" and entry.get("name") == node.name:
                return module_name(entry.get("metadata", {}))
        return None

    def provider_of(self, node: _Node) -> str | None:
        return self._providers().get(node.name)

    def _providers(self) -> dict[str, str]:
        """Node name -> provider, from the last device run's profile (read once per run)."""
        profile = getattr(self, "profile", None)
        if not profile or self.config.ep == "cpu":
            return {}
        cached = getattr(self, "_provider_cache", None)
        if cached is not None and cached[0] == profile:
            return cached[1]
        found: dict[str, str] = {}
        try:
            doc = json.loads(Path(profile).read_text("utf-8"))
        except (OSError, ValueError):
            doc = {}
        events = doc.get("traceEvents", []) if isinstance(doc, dict) else doc
        for ev in events if isinstance(events, list) else []:
            name = ev.get("name") if isinstance(ev, dict) else None
            if ev_is_node(ev) and isinstance(name, str) and name.endswith("_kernel_time"):
                args = ev.get("args") if isinstance(ev.get("args"), dict) else {}
                if args.get("provider"):
                    found.setdefault(name[:-len("_kernel_time")], str(args["provider"]))
        self._provider_cache = (profile, found)
        return found


def ev_is_node(ev: Any) -> bool:
    return isinstance(ev, dict) and ev.get("cat") == "Node"


def _subgraph_names(node: Any, inner: list[str]) -> set[str]:
    """Every tensor name the bodies of `node` (and their bodies) refer to; their nodes' names
    are appended to `inner`."""
    from onnx import AttributeProto

    names: set[str] = set()
    graphs = [a.g for a in node.attribute if a.type == AttributeProto.GRAPH]
    graphs += [g for a in node.attribute if a.type == AttributeProto.GRAPHS for g in a.graphs]
    for graph in graphs:
        for i, sub in enumerate(graph.node):
            inner.append(sub.name or f"{sub.op_type}#{i} in {graph.name or node.op_type}")
            names.update(sub.input)
            names.update(_subgraph_names(sub, inner))
    return names


_OPERATORS = ("aten.", "prims.", "torch.ops.", "<built-in", "_operator.")


def module_name(metadata: dict[str, str]) -> str | None:
    """'layer1.0.conv1 (Conv2d)' from a dynamo export's name scopes and class hierarchy: one
    entry per module from the root down, the last one the operator (aten.*) itself."""
    scopes = _listed(metadata.get("pkg.torch.onnx.name_scopes"))
    classes = _listed(metadata.get("pkg.torch.onnx.class_hierarchy"))
    if not scopes:
        return None
    if len(scopes) > 1 and classes and classes[-1].startswith(_OPERATORS):
        scopes, classes = scopes[:-1], classes[:-1]
    path = scopes[-1] or "<root>"
    cls = classes[len(scopes) - 1].rsplit(".", 1)[-1] if len(classes) >= len(scopes) else None
    return f"{path} ({cls})" if cls else path


def _listed(text: str | None) -> list[str]:
    if not text:
        return []
    import ast

    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return [text]
    return [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)]


def diagnose(bundle: Bundle, executor: Executor, config: RunConfig, budget_bytes: int,
             set_index: int = 0, stage: Callable[[str], None] | None = None) -> Diagnosis:
    with tempfile.TemporaryDirectory(prefix="edgepack-diagnose-") as tmp:
        return Diagnoser(bundle, executor, config, Path(tmp), budget_bytes, set_index,
                         stage).run()


# ---------------------------------------------------------------------------- --against-float


@dataclass(frozen=True)
class LayerLoss:
    """One activation the quantized model quantizes, on the host, over the bundle's input sets.
    SQNR in dB (higher is better), onnxruntime.quantization.qdq_loss_debug's measure."""

    tensor: str  # the float model's tensor name
    node: str | None  # the float model's node computing it (None: a graph input)
    op_type: str | None
    module: str | None
    float_sqnr_db: float | None  # the quantized model's value against the float model's:
    # everything lost up to here
    drop_db: float | None  # float_sqnr_db of its worst measured input (the nearest measured
    # tensors upstream, through the Conv a Relu was folded into) minus its own: what this step
    # lost by itself (None: no measured input)
    qdq_sqnr_db: float  # the quantized model's tensor against its own quantize-dequantize
    # (low where the quantizer folded a Relu into the range: the clipping is intended)


@dataclass(frozen=True)
class FloatLoss:
    bundle: str
    float_model: str
    sets: int
    worst: LayerLoss | None  # the largest drop_db: where int8 loses the most
    layers: list[LayerLoss]  # in the float model's topological order


def against_float(bundle: Bundle, float_model: Path) -> FloatLoss:
    """Which layer of a quantized bundle loses the most accuracy in int8, on the host: the
    quantized predict.onnx and the float model it was packed from, every QDQ activation exposed
    (qdq_loss_debug.modify_model_output_intermediate_tensors), run on the bundle's input sets
    and matched by qdq_loss_debug's naming (X_QuantizeLinear_Output / _DequantizeLinear_Output
    against the float X)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    from edgepack.bundle.schema import PREDICT
    from edgepack.fileio import sha256_file
    from edgepack.tensors import read_tensor

    if bundle.manifest.quantization is None:
        raise EdgepackError(f"{bundle.path}: --against-float needs a quantized bundle (pack "
                            "--quantize int8)", ExitCode.BAD_INPUT)
    if not float_model.is_file():
        raise EdgepackError(f"--against-float {float_model}: no such file", ExitCode.BAD_INPUT)
    if sha256_file(float_model) != bundle.manifest.provenance.sha256:
        raise EdgepackError(f"--against-float {float_model}: not the model {bundle.name} was "
                            f"packed from ({bundle.manifest.provenance.file}, sha256 "
                            f"{bundle.manifest.provenance.sha256[:12]}...)", ExitCode.BAD_INPUT)
    sets = [{f.name: read_tensor(bundle.path / f.file)[1] for f in t.inputs}
            for t in bundle.manifest.test_sets]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter(sets)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    with tempfile.TemporaryDirectory(prefix="edgepack-against-float-") as tmp:
        qdq_aug, float_aug = Path(tmp) / "qdq.onnx", Path(tmp) / "float.onnx"
        try:
            modify_model_output_intermediate_tensors(bundle.path / PREDICT, qdq_aug)
            modify_model_output_intermediate_tensors(float_model, float_aug)
            qdq_acts = collect_activations(str(qdq_aug), Reader())
            float_acts = collect_activations(str(float_aug), Reader())
        except Exception as exc:  # noqa: BLE001 - onnxruntime's errors have no common type
            raise EdgepackError(f"onnxruntime could not run the models for --against-float: "
                                f"{short(exc)}", ExitCode.BAD_INPUT) from None
        errors = compute_activation_error(create_activation_matching(qdq_acts, float_acts))
    model = onnx.load(str(float_model), load_external_data=False)
    producer = {o: (i, n) for i, n in enumerate(model.graph.node) for o in n.output}
    node_modules: dict[str, str | None] = {}
    for node in model.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        node_modules[node.name] = module_name(meta)
    measured = {t: float(e["xmodel_err"]) for t, e in errors.items() if "xmodel_err" in e}
    layers = []
    for tensor, err in errors.items():
        if "qdq_err" not in err:
            continue
        index, node = producer.get(tensor, (None, None))
        own = measured.get(tensor)
        before = [measured[x] for x in _measured_inputs(node, producer, measured)] \
            if node else []
        drop = (min(before) - own) if before and own is not None else None
        layers.append((index if index is not None else -1, LayerLoss(
            tensor, (node.name or f"{node.op_type}#{index}") if node else None,
            node.op_type if node else None, node_modules.get(node.name) if node else None,
            own, drop, float(err["qdq_err"]))))
    ordered = [loss for _, loss in sorted(layers, key=lambda pair: pair[0])]
    finite = [x for x in ordered if x.drop_db is not None and np.isfinite(x.drop_db)]
    worst = max(finite, key=lambda x: x.drop_db or 0.0) if finite else None
    return FloatLoss(bundle.name, str(float_model), len(sets), worst, ordered)


def _measured_inputs(node: Any, producer: dict[str, tuple[int, Any]],
                     measured: dict[str, float]) -> set[str]:
    """The nearest tensors upstream of `node` that were measured."""
    found: set[str] = set()
    seen: set[str] = set()
    stack = [x for x in node.input if x]
    while stack:
        x = stack.pop()
        if x in seen:
            continue
        seen.add(x)
        if x in measured:
            found.add(x)
        elif x in producer:
            stack.extend(i for i in producer[x][1].input if i)
    return found
