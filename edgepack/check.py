"""`edgepack check`: will a model run on an execution provider, and how much of it.

What each provider takes is `edgepack/providers.py`'s table (the one `pack --ops-allowed`
reads too); the analysis is onnxruntime's own wherever onnxruntime publishes one:

- the partitions of every provider but the CPU: `onnxruntime.tools.mobile_helpers.
  usability_checker`'s partitioner (the tool behind `check_onnx_model_mobile_usability`; a
  copy of the C++ partitioner's logic), asking the provider's table node by node, with the
  dynamic-shape and rank blockers the provider's entry names; run on the model optimized to
  BASIC first, as its `analyze_model` does, since that is the graph an EP is given.
- CPU: onnxruntime itself on this machine: a session is created, and a missing kernel is the
  error onnxruntime names.
- the `required_operators.config` of a reduced build: the model saved in ORT format by
  onnxruntime and read by `onnxruntime.tools.ort_format_model.create_config_from_models`, the
  function behind `create_reduced_build_config` for ORT-format models.

A bundle is checked on its ONNX graph when it keeps one (`pack --format onnx|both`); a
`--format ort` bundle has only predict.ort, which onnxruntime loads and saves back as ONNX for
the analysis (see `check_bundle`).
"""
from __future__ import annotations

import re
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepack.errors import EdgepackError, ExitCode, short
from edgepack.providers import (
    DEFAULT_DOMAIN,
    PROVIDERS,
    OpKey,
    OpSupport,
    Provider,
    node_mode,
    op_key,
    op_name,
    ort_tool,
)

if TYPE_CHECKING:
    import onnx

    from edgepack.bundle.verify import Bundle

VERDICT_FULL = "runs fully"
VERDICT_PARTIAL = "runs partly"
VERDICT_NONE = "cannot"
VERDICT_UNKNOWN = "unknown"  # a probed backend whose probe has not covered the model's operators

# When `check` runs the browser probe: never, for the model's operators the cache lacks (the
# CLI's default), or for every operator onnx has a node test for (`--probe`).
PROBE_NONE, PROBE_MISSING, PROBE_ALL = "none", "missing", "all"

# Symbolic dims a bundle does not pin get this value in the `--fix-dim` advice: most
# such dims of a mobile model are a batch of one.
GUESSED_DIM = 1


# ---------------------------------------------------------------------------- records


@dataclass(frozen=True)
class OpUse:
    """One operator of the model (as written, before onnxruntime's optimizations)."""

    domain: str  # "ai.onnx" for the default domain, as onnxruntime's tools write it
    op_type: str
    opset: int  # the operator's version: the opset that defined it, as kernels are registered
    count: int
    support: dict[str, OpSupport] = field(default_factory=dict)  # per EP

    @property
    def key(self) -> str:
        return f"{self.domain}:{self.op_type}"


@dataclass(frozen=True)
class DimFix:
    """A symbolic dim that NNAPI and CoreML need fixed, and the `pack` option that fixes it."""

    name: str
    value: int
    inputs: list[str]  # the inputs that use it
    guessed: bool  # True when no bundle input set told the size

    @property
    def option(self) -> str:
        return f"--fix-dim {self.name}={self.value}"


@dataclass(frozen=True)
class Partitioning:
    nodes: int
    supported_nodes: int
    partitions: int
    partition_sizes: list[int]
    unsupported_ops: list[str]
    nodes_unsupported_by_op: int
    nodes_blocked_by_dynamic_shape: int
    nodes_blocked_by_rank: int

    @property
    def verdict(self) -> str:
        if self.nodes and self.supported_nodes == self.nodes:
            return VERDICT_FULL
        return VERDICT_PARTIAL if self.supported_nodes else VERDICT_NONE


@dataclass(frozen=True)
class EpReport:
    ep: str
    verdict: str  # VERDICT_FULL, VERDICT_PARTIAL or VERDICT_NONE
    partitioning: Partitioning
    reasons: list[str]  # why it does not run fully; empty when it does
    caveats: list[str]  # onnxruntime's conditions on supported ops that were not checked
    needs_fixed_dims: list[str]  # symbolic dims that block nodes on this EP
    if_fixed: Partitioning | None  # the same analysis with every dim fixed, when that differs
    source: str  # where the support data comes from
    # A browser runtime that runs the whole graph on this backend or fails (no partitions):
    # "cannot" as soon as one node is not taken, its count of taken nodes still reported.
    whole_graph: bool = False

    @property
    def summary(self) -> str:
        p = self.partitioning
        if self.whole_graph and self.verdict != VERDICT_FULL:
            what = ("cannot tell" if self.verdict == VERDICT_UNKNOWN
                    else "cannot run the model")
            return (f"{what} (takes {p.supported_nodes} of {p.nodes} nodes; no partitions: "
                    "a node it lacks fails the session)")
        if self.verdict == VERDICT_FULL:
            text = f"runs fully ({p.nodes} nodes, {p.partitions} partition(s))"
        elif self.verdict == VERDICT_PARTIAL:
            text = (f"runs partly ({p.supported_nodes} of {p.nodes} nodes, "
                    f"{p.partitions} partition(s))")
        else:
            text = "cannot run the model"
        if self.if_fixed is not None:
            text += (f"; with the dims fixed: {self.if_fixed.verdict} "
                     f"({self.if_fixed.supported_nodes} of {self.if_fixed.nodes} nodes, "
                     f"{self.if_fixed.partitions} partition(s))")
        return text


@dataclass(frozen=True)
class MobilePackage:
    runs: bool
    why: str


@dataclass(frozen=True)
class CheckReport:
    model: str
    bundle: str | None
    onnxruntime_version: str
    ir_version: int
    opset_imports: dict[str, int]
    nodes: int
    operators: list[OpUse]
    eps: list[EpReport]
    mobile_package: MobilePackage
    required_operators_config: str | None  # None when onnxruntime could not save the model
    fix_dims: list[DimFix]
    analyzed_graph: str  # which graph the partitions are of
    model_format: str = "onnx"  # of the file checked: onnx, or ort (a `pack --format ort` bundle)
    # What the check could not see, or saw of another file than the runner loads; empty for
    # a plain ONNX model.
    notes: list[str] = field(default_factory=list)

    def ep(self, name: str) -> EpReport | None:
        return next((e for e in self.eps if e.ep == name), None)

    def to_json(self) -> dict[str, Any]:
        from dataclasses import asdict

        doc = asdict(self)
        for ep, src in zip(doc["eps"], self.eps, strict=True):
            ep["summary"] = src.summary
        for dim, src in zip(doc["fix_dims"], self.fix_dims, strict=True):
            dim["option"] = src.option
        return doc


# ---------------------------------------------------------------------------- the providers


class _Checker:
    """A provider's rules with the interface usability_checker's partitioner calls
    (`is_op_supported`, and `get_caveats` for the report), so every provider is partitioned by
    onnxruntime's one partitioner whatever its list is made of."""

    def __init__(self, provider: Provider, graph: onnx.GraphProto, opsets: dict[str, int]):
        self._provider = provider
        self._opsets = opsets
        self._seen: set[OpKey] = set()
        self._producers = {out: node for node in graph.node for out in node.output}

    def _version(self, node: onnx.NodeProto) -> int | None:
        return _rule_version(self._provider, node.domain or DEFAULT_DOMAIN, node.op_type,
                             self._opsets)

    def is_op_supported(self, node: onnx.NodeProto) -> bool:
        producer = self._producers.get(node.input[0]) if node.input else None
        ok = self._provider.takes_node(node, self._version(node), producer,
                                       self._version(producer) if producer else None)
        if ok:
            self._seen.add(op_key(node.domain, node.op_type))
        return ok

    def get_caveats(self) -> list[str]:
        rules = self._provider.ops()
        return [f"{op_name(k)}: {rules[k].caveat}" for k in sorted(self._seen)
                if rules[k].caveat]


def _partition(provider: Provider, model: onnx.ModelProto, fixed: bool,
               opsets: dict[str, int]) -> tuple[Any, _Checker]:
    uc = ort_tool("mobile_helpers.usability_checker")
    checker = _Checker(provider, model.graph, opsets)
    return uc.check_partitioning(model.graph, checker, fixed, provider.max_rank or 999), checker


def default_eps() -> list[str]:
    """What `check` looks at when no --ep is given: the native providers. The browser backends
    are checked only when named (their lists need the runtime's package, or a browser probe)."""
    return [name for name, p in PROVIDERS.items() if not p.web]


def parse_check_eps(text: str | None) -> list[str]:
    """`--ep cpu,nnapi` -> the providers to check; None: the native ones (`default_eps`)."""
    if text is None:
        return default_eps()
    eps = [e.strip().lower() for e in text.split(",") if e.strip()]
    unknown = [e for e in eps if e not in PROVIDERS]
    if not eps or unknown:
        raise EdgepackError(f"--ep {text!r}: unknown execution provider "
                            f"{(unknown or [text])[0]!r}: choose from {', '.join(PROVIDERS)}",
                            ExitCode.BAD_INPUT)
    return list(dict.fromkeys(eps))


# ---------------------------------------------------------------------------- the analysis


def check_path(path: Path, eps: Sequence[str] | None = None, probe: str = PROBE_NONE,
               log: Any = None) -> CheckReport:
    """Check a model file or a bundle directory (see `check_bundle`); `probe` says when a
    probed browser backend (wasm) may run its probe in Chromium (PROBE_*)."""
    path = Path(path)
    if path.is_dir():
        from edgepack.bundle import load_bundle

        return check_bundle(load_bundle(path, verify=False), eps, probe, log)
    if path.is_file():
        return check_model(path, eps, probe=probe, log=log)
    raise EdgepackError(f"{path}: no such model file or bundle directory", ExitCode.BAD_INPUT)


def check_bundle(bundle: Bundle, eps: Sequence[str] | None = None, probe: str = PROBE_NONE,
                 log: Any = None) -> CheckReport:
    """A bundle's model, its symbolic dims sized by its first input set.

    The ONNX graph where the bundle keeps one (`--format onnx`; `both`, whose runner loads
    predict.ort converted from it). A `--format ort` bundle has predict.ort alone: onnxruntime
    loads it and saves its graph back as ONNX, and that graph is checked, with a note of what
    it cannot tell. In both ORT formats the required_operators.config is the bundle's own,
    made by the converter from the very file the runner loads."""
    info = bundle.manifest.model
    pinned: dict[tuple[str, int], int] = {}
    for test_set in bundle.manifest.test_sets[:1]:
        for tensor in test_set.inputs:
            for i, size in enumerate(tensor.shape):
                pinned[(tensor.name, i)] = int(size)
    notes: list[str] = []
    if info.onnx_file is not None:
        report = check_model(bundle.path / info.onnx_file, eps, pinned, bundle.name,
                             probe=probe, log=log)
        if info.file != info.onnx_file:
            notes.append(f"checked {info.onnx_file}, the ONNX model the bundle keeps; the runner "
                         f"loads {info.file}, which `pack --format {info.format}` converted from "
                         "it with onnxruntime's CPU optimizations applied")
    else:
        report = _check_ort_file(bundle.path / info.file, eps, pinned, bundle.name)
        notes.extend(report.notes)
    config = report.required_operators_config
    if info.operators_config is not None:
        own = bundle.path / info.operators_config
        if own.is_file():
            config = own.read_text()
            notes.append(f"required_operators.config: the bundle's {info.operators_config}, "
                         f"for {info.file}")
    return replace(report, required_operators_config=config, notes=notes)


def _check_ort_file(ort_path: Path, eps: Sequence[str] | None,
                    pinned: dict[tuple[str, int], int], bundle_name: str | None
                    ) -> CheckReport:
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="edgepack-check-ort-") as tmp:
        as_onnx = Path(tmp) / f"{ort_path.stem}.onnx"
        error = _save_as_onnx(ort_path, as_onnx)
        if error is not None:
            raise EdgepackError(
                f"{ort_path}: onnxruntime {ort.__version__} cannot load this ORT-format model "
                f"({_first_line(error)}), and the bundle keeps no ONNX graph: check the model "
                "it was packed from (`edgepack check MODEL.onnx`)", ExitCode.BAD_INPUT)
        report = check_model(as_onnx, eps, pinned, bundle_name, _ort_value_info(ort_path))
    # onnxruntime writes every domain it registers into the saved graph's imports.
    used = {op.domain for op in report.operators} | {DEFAULT_DOMAIN}
    return replace(
        report, model=str(ort_path), model_format="ort",
        opset_imports={d: v for d, v in report.opset_imports.items() if d in used},
        analyzed_graph=f"{ort_path.name}'s graph (saved back as ONNX by onnxruntime), after "
                       "onnxruntime's BASIC optimizations",
        notes=[f"{ort_path.name} is the only model in this bundle (`pack --format ort`): the "
               "operators and partitions are of its graph as pack converted it, already "
               "optimized for the CPU, so an operator fused for the CPU counts against a "
               "provider that would take the operators it replaced; the model as written could "
               "not be analysed: check the model it was packed from (`edgepack check "
               "MODEL.onnx`) for that"],
    )


def _save_as_onnx(ort_path: Path, out: Path) -> str | None:
    """onnxruntime loads an ORT-format file and writes its graph as ONNX, unchanged
    (no optimizations); onnxruntime's error when it cannot load it."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.optimized_model_filepath = str(out)
    so.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                "external_data.pb")
    try:
        ort.InferenceSession(str(ort_path), so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types per failure
        return str(exc)
    return None if out.is_file() else "onnxruntime wrote no graph"


def check_model(model_path: Path, eps: Sequence[str] | None = None,
                pinned: dict[tuple[str, int], int] | None = None,
                bundle_name: str | None = None,
                known_shapes: Sequence[onnx.ValueInfoProto] = (), probe: str = PROBE_NONE,
                log: Any = None) -> CheckReport:
    import onnx
    import onnxruntime as ort

    eps = list(eps) if eps is not None else default_eps()
    for name in eps:
        if name not in PROVIDERS:
            raise EdgepackError(f"unknown execution provider {name!r}: choose from "
                                f"{', '.join(PROVIDERS)}", ExitCode.BAD_INPUT)
    try:
        # The graph alone: the operators and dims are all this reads, and a model of several
        # GiB would otherwise be held whole (onnxruntime's session maps the weights instead).
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError, OSError, ...
        raise EdgepackError(f"{model_path}: not a readable ONNX model ({short(exc)})",
                            ExitCode.BAD_INPUT) from None
    from edgepack.bundle.weights import check_external_data

    check_external_data(model, model_path)
    if not model.graph.node and not model.graph.output:
        raise EdgepackError(f"{model_path}: not a readable ONNX model (no graph)",
                            ExitCode.BAD_INPUT)
    opsets = {(o.domain or DEFAULT_DOMAIN): o.version for o in model.opset_import}
    if DEFAULT_DOMAIN not in opsets and "" not in opsets:
        opsets.setdefault(DEFAULT_DOMAIN, 1)

    with tempfile.TemporaryDirectory(prefix="edgepack-check-") as tmp:
        # One session proves the CPU provider has every kernel and writes the BASIC-optimized
        # graph the EPs are offered; sessions of big models take seconds each.
        optimized = Path(tmp) / "basic.onnx"
        cpu_error = _basic_session(model_path, optimized)
        analyzed, graph_note = _analyzed_model(model_path if cpu_error else optimized,
                                               cpu_error is None, known_shapes)
        config = _required_operators_config(optimized, Path(tmp), model_path.name) \
            if cpu_error is None else None
    notes: list[str] = []
    if config is None and cpu_error is None:
        # onnxruntime could not save the graph as an ORT file: flatbuffers hold at most 2 GiB,
        # and the weights go inside. The kernels' versions are their schemas' (what the ORT
        # file would record), so the config is the same, computed from the graph.
        config = _config_from_graph(analyzed, model_path.name)
        notes.append("required_operators.config computed from the operators' schema versions: "
                     "onnxruntime could not save this model in ORT format (over 2 GiB of "
                     "weights, flatbuffers' limit), which a reduced build's mobile package also "
                     "needs; use --format onnx builds for it")
    missing = _missing_kernels(cpu_error)

    fix_dims = _fix_dims(model, pinned or {})
    counts: Counter[OpKey] = Counter()
    modes: dict[OpKey, set[str]] = {}
    for n in _all_nodes(model.graph):
        counts[op_key(n.domain, n.op_type)] += 1
        modes.setdefault(op_key(n.domain, n.op_type), set()).add(node_mode(n))
    notes.extend(_run_probes(eps, set(counts), probe, log))
    as_written = None
    reports: list[EpReport] = []
    for name in eps:
        provider = PROVIDERS[name]
        if provider.session:
            reports.append(_cpu_report(sum(counts.values()), cpu_error, missing, provider,
                                       ort.__version__))
            continue
        if provider.whole_graph:
            if provider.as_written and as_written is None:
                as_written, _ = _analyzed_model(model_path, False, known_shapes)
            reports.append(_whole_graph_report(
                provider, as_written if provider.as_written else analyzed, opsets))
            continue
        info, checker = _partition(provider, analyzed, provider.needs_fixed_shapes, opsets)
        part = _partitioning(info)
        if_fixed = None
        if part.nodes_blocked_by_dynamic_shape:
            fixed_info, _ = _partition(provider, analyzed, False, opsets)
            fixed = _partitioning(fixed_info)
            if_fixed = fixed if fixed.supported_nodes > part.supported_nodes else None
        reasons = []
        if part.unsupported_ops:
            reasons.append(f"{part.nodes_unsupported_by_op} node(s) of operators it lacks: "
                           f"{', '.join(part.unsupported_ops)}")
        if part.nodes_blocked_by_dynamic_shape:
            reasons.append(f"{part.nodes_blocked_by_dynamic_shape} node(s) have inputs of "
                           "dynamic shape: fix the symbolic dims ("
                           + (" ".join(d.option for d in fix_dims) or "unnamed dims: re-export "
                              "with fixed shapes") + ")")
        if part.nodes_blocked_by_rank:
            reasons.append(f"{part.nodes_blocked_by_rank} node(s) have inputs of too high a "
                           "rank")
        if part.partitions > 1:
            reasons.append(f"{part.partitions} partitions: each hand-over to the CPU and back "
                           "costs a copy")
        reports.append(EpReport(
            ep=name, verdict=part.verdict, partitioning=part, reasons=reasons,
            caveats=list(checker.get_caveats()),
            needs_fixed_dims=[d.name for d in fix_dims] if part.nodes_blocked_by_dynamic_shape
            else [],
            if_fixed=if_fixed, source=provider.source,
        ))

    written = [e.ep for e in reports if PROVIDERS[e.ep].as_written]
    if written:
        notes.append(f"{', '.join(written)}: the model as written, which is what those runtimes "
                     "load (ONNX.js's engine never runs onnxruntime's optimizer)")
    operators = []
    for (domain, op_type), count in sorted(counts.items()):
        version = _op_version(domain, op_type, opsets)
        support = {name: _op_support(PROVIDERS[name], domain, op_type,
                                     _rule_version(PROVIDERS[name], domain, op_type, opsets),
                                     modes[(domain, op_type)], missing, cpu_error)
                   for name in eps}
        operators.append(OpUse(domain, op_type, version or 0, count, support))

    cpu_ok = cpu_error is None
    mobile = MobilePackage(
        cpu_ok,
        "every operator has a CPU kernel in onnxruntime " + ort.__version__ + ": the "
        "onnxruntime-android package (a full build) runs it; a reduced build needs the "
        "required_operators.config below" if cpu_ok else
        f"onnxruntime's CPU provider cannot create a session: {_first_line(cpu_error)}",
    )
    return CheckReport(
        model=str(model_path), bundle=bundle_name, onnxruntime_version=ort.__version__,
        ir_version=int(model.ir_version), opset_imports=opsets,
        nodes=sum(counts.values()), operators=operators, eps=reports, mobile_package=mobile,
        required_operators_config=config, fix_dims=fix_dims, analyzed_graph=graph_note,
        notes=notes,
    )


def _all_nodes(graph: onnx.GraphProto) -> Any:
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _all_nodes(attr.g)
            for sub in attr.graphs:
                yield from _all_nodes(sub)


def _rule_version(provider: Provider, domain: str, op_type: str,
                  opsets: dict[str, int]) -> int | None:
    """The version a provider's rules are ranges of: the operator's, or for ONNX.js-style
    tables the model's opset for the domain."""
    if provider.versions_are_opsets:
        return opsets.get(domain)
    return _op_version(domain, op_type, opsets)


def _run_probes(eps: Sequence[str], ops: set[OpKey], probe: str, log: Any) -> list[str]:
    """Run the browser probe of each probed backend in `eps` as `probe` says; the notes."""
    notes = []
    for name in eps:
        ep = PROVIDERS[name].probe_ep
        if ep is None:
            continue
        from edgepack.web.probe import cache_path, load_cache
        from edgepack.web.probe import probe as run_probe

        cache = load_cache(ep)
        lacking = sorted(k for k in ops if cache is None or op_name(k) not in cache.ops)
        if probe == PROBE_ALL or (probe == PROBE_MISSING and lacking):
            run_probe(ep, None if probe == PROBE_ALL else lacking,
                      log=log or (lambda _: None))
            notes.append(f"{name}: probed in Chromium now ("
                         + ("every operator" if probe == PROBE_ALL else
                            f"{len(lacking)} operator(s) of this model") + f"); cached in "
                         f"{cache_path(ep)}")
        elif lacking:
            notes.append(f"{name}: the browser probe has not run yet for "
                         f"{', '.join(op_name(k) for k in lacking)}: `edgepack check MODEL "
                         f"--ep {name}` runs it (Chromium), `--probe` for every operator")
        else:
            notes.append(f"{name}: from the probe cached in {cache_path(ep)}")
    return notes


def _whole_graph_report(provider: Provider, model: onnx.ModelProto,
                        opsets: dict[str, int]) -> EpReport:
    """A runtime without partitions: every node taken, or the session fails."""
    checker = _Checker(provider, model.graph, opsets)
    lacking: Counter[str] = Counter()
    unknown: set[str] = set()
    taken = 0
    too_wide = _wide_int64_constants(model) if provider.int32_constants else {}
    for node in model.graph.node:
        wide = [name for name in node.input if name in too_wide]
        if wide:
            lacking[f"{op_name(op_key(node.domain, node.op_type))} (its int64 input {wide[0]} "
                    f"holds {too_wide[wide[0]]}, beyond 32 bits: the runtime reads int64 "
                    "constants as 32-bit numbers and refuses the model)"] += 1
            continue
        if checker.is_op_supported(node):
            taken += 1
            continue
        key = op_key(node.domain, node.op_type)
        why = provider.support(node.domain, node.op_type,
                               _rule_version(provider, key[0], node.op_type, opsets)).why
        lacking[f"{op_name(key)} ({why})"] += 1
        if why.startswith("not probed yet"):
            unknown.add(op_name(key))
    nodes = len(model.graph.node)
    full = taken == nodes
    part = Partitioning(nodes, taken, 1 if full and nodes else 0, [nodes] if full and nodes
                        else [], sorted({k.split(" (")[0] for k in lacking}),
                        sum(lacking.values()), 0, 0)
    known_missing = set(part.unsupported_ops) - unknown
    verdict = VERDICT_FULL if full else VERDICT_NONE if known_missing else VERDICT_UNKNOWN
    reasons = [f"{count} node(s) of {what}" for what, count in sorted(lacking.items())]
    if unknown:
        reasons.append(f"not probed yet: {', '.join(sorted(unknown))}")
    return EpReport(provider.name, verdict, part, reasons, list(checker.get_caveats()), [],
                    None, provider.source, whole_graph=True)


def _wide_int64_constants(model: onnx.ModelProto) -> dict[str, int]:
    """Constant int64/uint64 tensors (initializers, Constant nodes) holding a value outside
    int32 (uint32 for uint64), by name, with the first such value. Constants kept as external
    data are not read (check never loads weights); index tensors that small stay inline."""
    from onnx import TensorProto, numpy_helper

    limits = {TensorProto.INT64: (-(2**31), 2**31 - 1), TensorProto.UINT64: (0, 2**32 - 1)}
    tensors = [(t.name, t) for t in model.graph.initializer]
    for node in model.graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for attr in node.attribute:
                if attr.name == "value" and attr.HasField("t"):
                    tensors.append((node.output[0], attr.t))
    wide: dict[str, int] = {}
    for name, tensor in tensors:
        span = limits.get(tensor.data_type)
        if span is None or tensor.data_location == TensorProto.EXTERNAL:
            continue
        values = numpy_helper.to_array(tensor).reshape(-1)
        outside = values[(values < span[0]) | (values > span[1])]
        if outside.size:
            wide[name] = int(outside[0])
    return wide


def _op_version(domain: str, op_type: str, opsets: dict[str, int]) -> int | None:
    import onnx.defs

    opset = opsets.get(domain)
    if opset is None:
        return None
    try:
        schema = onnx.defs.get_schema(op_type, opset, "" if domain == "ai.onnx" else domain)
    except Exception:  # an operator onnx does not define (contrib ops): its domain's opset
        return opset
    return int(schema.since_version)


def _basic_session(model_path: Path, optimized: Path) -> str | None:
    """A CPU session at BASIC, as usability_checker.analyze_model's optimize_model makes it
    (external initializers, for models over 2 GB), saving the optimized graph; onnxruntime's
    error when it cannot create one (a missing kernel names the op)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(optimized)
    so.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                "external_data.pb")
    try:
        ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types per failure
        return str(exc)
    return None


_MISSING_KERNEL = re.compile(r"Could not find an implementation for (\w+)\((\d+)\)")


def _missing_kernels(error: str | None) -> set[str]:
    return {m.group(1) for m in _MISSING_KERNEL.finditer(error or "")}


def _first_line(text: str | None) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else "unknown error"
    return line[:300]


def _analyzed_model(source: Path, optimized: bool,
                    known: Sequence[onnx.ValueInfoProto] = ()) -> tuple[onnx.ModelProto, str]:
    """The graph an EP is offered, shapes inferred (strictly, as usability_checker's
    ModelProtoWithShapeInfo; loosely if that fails), and `known` shapes (onnxruntime's own, of
    an ORT-format file) for the values onnx's inference cannot reach, e.g. past a contrib op."""
    import onnx

    note = ("the model after onnxruntime's BASIC optimizations" if optimized
            else "the model as written (onnxruntime could not load it)")
    # Shapes and ops are all the analysis reads: weights stay on disk.
    model = onnx.load(str(source), load_external_data=False)
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception:
        model = onnx.shape_inference.infer_shapes(model)
    graph = model.graph
    have = {v.name for v in [*graph.input, *graph.output, *graph.value_info]}
    used = {name for n in graph.node for name in [*n.input, *n.output]}
    graph.value_info.extend(v for v in known if v.name in used and v.name not in have)
    return model, note


def _ort_value_info(ort_path: Path) -> list[onnx.ValueInfoProto]:
    """The tensor types and shapes onnxruntime stored for the main graph's values in an
    ORT-format file (its NodeArgs): what it inferred when it converted the model, contrib
    operators included, which onnx's shape inference does not know."""
    from onnx import helper

    fbs = "ort_format_model.ort_flatbuffers_py.fbs."
    session = ort_tool(fbs + "InferenceSession").InferenceSession
    tensor_type = ort_tool(fbs + "TypeInfoValue").TypeInfoValue.tensor_type
    shape_of = ort_tool(fbs + "TensorTypeAndShape").TensorTypeAndShape
    graph = session.GetRootAs(ort_path.read_bytes(), 0).Model().Graph()
    found = []
    for i in range(graph.NodeArgsLength()):
        arg = graph.NodeArgs(i)
        info = arg.Type()
        if info is None or info.ValueType() != tensor_type:
            continue
        tensor = shape_of()
        tensor.Init(info.Value().Bytes, info.Value().Pos)
        shape = tensor.Shape()
        if shape is None:  # rank unknown: nothing to add
            continue
        dims: list[int | str | None] = []
        for j in range(shape.DimLength()):
            value = shape.Dim(j).Value()
            param = value.DimParam() if value is not None else None
            dims.append(param.decode() if param else
                        int(value.DimValue()) if value is not None and value.DimType() == 1
                        else None)
        found.append(helper.make_tensor_value_info(arg.Name().decode(), tensor.ElemType(),
                                                   dims))
    return found


def _config_from_graph(model: onnx.ModelProto, label: str) -> str:
    """The required_operators.config of a graph, in the writer's layout: per domain and kernel
    version (the schema's since-version at the model's opset), the sorted operator names."""
    opsets = {(o.domain or DEFAULT_DOMAIN): o.version for o in model.opset_import}
    opsets.setdefault(DEFAULT_DOMAIN, opsets.get("", 1))
    required: dict[str, dict[int, set[str]]] = {}
    for n in _all_nodes(model.graph):
        domain = n.domain or DEFAULT_DOMAIN
        version = _op_version(domain, n.op_type, opsets) or 1
        required.setdefault(domain, {}).setdefault(version, set()).add(n.op_type)
    lines = ["# Generated from model/s:", f"# - {label}"]
    for domain in sorted(required):
        for version in sorted(required[domain]):
            lines.append(f"{domain};{version};{','.join(sorted(required[domain][version]))}")
    return "\n".join(lines) + "\n"


def _required_operators_config(optimized: Path, tmp: Path, label: str) -> str | None:
    """onnxruntime saves the BASIC-optimized model (as convert_onnx_models_to_ort optimizes
    for a reduced build) in ORT format, and its own config writer lists the kernels that file
    needs."""
    import onnxruntime as ort

    create_config_from_models = ort_tool("ort_format_model.utils").create_config_from_models
    ort_model = tmp / "model.ort"
    so = ort.SessionOptions()
    so.log_severity_level = 3
    # Already optimized: saving is all this session is for.
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.optimized_model_filepath = str(ort_model)
    so.add_session_config_entry("session.save_model_format", "ORT")
    out = tmp / "required_operators.config"
    import logging

    # Its logger announces every config it writes at INFO, on stderr.
    logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)
    try:
        ort.InferenceSession(str(optimized), so, providers=["CPUExecutionProvider"])
        create_config_from_models([ort_model], out, enable_type_reduction=False)
    except Exception:
        return None
    # The writer names the temporary ORT file; name the model instead.
    lines = [f"# - {label}" if line.startswith("# - ") else line
             for line in out.read_text().splitlines()]
    return "\n".join(lines) + "\n"


def _partitioning(info: Any) -> Partitioning:
    return Partitioning(
        nodes=int(info.num_nodes),
        supported_nodes=int(info.num_supported_nodes),
        partitions=int(info.num_partitions),
        partition_sizes=[len(g) for g in info.supported_groups],
        unsupported_ops=sorted(info.unsupported_ops),
        nodes_unsupported_by_op=int(info.nodes_unsupported_due_to_op),
        nodes_blocked_by_dynamic_shape=int(info.nodes_unsupported_due_to_dynamic_input),
        nodes_blocked_by_rank=int(info.num_unsupported_nodes_due_to_rank),
    )


def _cpu_report(nodes: int, error: str | None, missing: set[str], provider: Provider,
                version: str) -> EpReport:
    ok = error is None
    part = Partitioning(nodes, nodes if ok else 0, 1 if ok and nodes else 0,
                        [nodes] if ok and nodes else [], sorted(missing), 0, 0, 0)
    reasons = [] if ok else [f"onnxruntime {version} cannot create a CPU session: "
                             f"{_first_line(error)}"]
    return EpReport(provider.name, VERDICT_FULL if ok else VERDICT_NONE, part, reasons, [], [],
                    None, provider.source)


def _op_support(provider: Provider, domain: str, op_type: str, version: int | None,
                modes: set[str], missing: set[str], cpu_error: str | None) -> OpSupport:
    """The provider table's answer (the one `--ops-allowed` gets); for the CPU, the session on
    this machine has the last word, since it sees what no list says (type constraints, an
    ONNX function onnxruntime expands into operators it has)."""
    support = provider.support(domain, op_type, version, modes)
    if not provider.session:
        return support
    if op_type in missing:
        return OpSupport(False, "onnxruntime has no CPU kernel for this version")
    if cpu_error is not None and not missing:
        return OpSupport(False, f"the session failed: {_first_line(cpu_error)}")
    if not support.supported:
        return OpSupport(True, f"{support.why}, but the session loads it (onnxruntime expands "
                               "an ONNX function into operators it has)")
    return OpSupport(True, "CPU kernel")


def _fix_dims(model: onnx.ModelProto, pinned: dict[tuple[str, int], int]) -> list[DimFix]:
    initializers = {i.name for i in model.graph.initializer}
    found: dict[str, tuple[int | None, list[str]]] = {}
    for value in model.graph.input:
        if value.name in initializers or not value.type.HasField("tensor_type"):
            continue
        for i, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_param") and dim.dim_param:
                size, users = found.get(dim.dim_param, (None, []))
                size = size if size is not None else pinned.get((value.name, i))
                found[dim.dim_param] = (size, [*users, value.name])
    return [DimFix(name, size if size is not None else GUESSED_DIM, list(dict.fromkeys(users)),
                   size is None)
            for name, (size, users) in found.items()]


def write_config(report: CheckReport, path: Path) -> None:
    from edgepack.fileio import atomic_write_text

    if report.required_operators_config is None:
        raise EdgepackError(f"no required_operators.config for {report.model}: "
                            f"{report.mobile_package.why}", ExitCode.BAD_INPUT)
    atomic_write_text(Path(path), report.required_operators_config)
