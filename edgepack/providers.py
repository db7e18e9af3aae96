"""What each execution provider takes: the one table `edgepack check` and `pack --ops-allowed`
read.

A provider is one `Provider` in `PROVIDERS`: its label, where its operator list comes from, the
rule per operator (the versions it has kernels for, the `mode` values it takes, the producers it
runs only fused into, the conditions nobody checks), and what its partitioner needs (fixed
shapes, a rank limit). Issue 17's browser runtimes are more entries here; neither `check` nor
the rewrite has a list of its own.

This is its own module, not part of check.py, because the rewrite (at pack time) needs the
operator sets and nothing of check's session, partitioning and report code, and check needs
nothing of the rewrite: both import this, and this imports neither.

Where the lists come from:

- cpu: the kernels this machine's onnxruntime registers for its CPU provider, with their
  version ranges (`get_all_opkernel_def`). `check` also creates a session, which is the CPU's
  verdict: it knows what no op list says (type constraints, functions onnxruntime expands).
- xnnpack: onnxruntime publishes no list, so `XNNPACK_OPS` is transcribed from its sources.
- nnapi, coreml: the markdown lists in onnxruntime's wheel (`tools/mobile_helpers/*.md`), read
  with onnxruntime's own reader (`usability_checker._SupportedOpsChecker`), plus the few notes
  of those lists that are facts about a node edgepack can test (NNAPI's constant-only Pad).

The browser backends (issue 17), checked only when `--ep` names them:

- onnxjs, webgl: ONNX.js 0.1.8 and onnxruntime-web's WebGL backend (ONNX.js's engine, kept
  inside onnxruntime-web) publish their kernels as resolve-rule tables, `[op, domain, versions]`
  in op-resolve-rules.js. They are parsed out of the pinned, sha256-checked package in the cache
  (`edgepack.web.runtime.web_runtime`) when first needed, not transcribed: the package is the
  source, a new pin brings its own table with no code to update, and the parser refuses a file
  in which it does not recognise every rule (see `_resolve_rules`). Their version ranges are of
  the MODEL's opset for the domain, not of the operator (ONNX.js's `resolveOperator` matches
  `opset.version`): `Upsample 7-8` refuses an opset-9 model. The kernels read the attributes
  that later opsets turned into inputs (Reduce* axes at 18, ReduceSum/Squeeze/Unsqueeze/Split
  at 13), so an open range stops where the input form begins unless the table has a rule for it.
  Neither falls back to another backend: an operator it lacks fails the session.
- wasm: onnxruntime's CPU kernels compiled to WebAssembly, possibly a reduced set, with no list
  published: a probe (`edgepack.web.probe`) runs one of onnx's node test models per operator in
  Chromium and caches what ran, per runtime version.
- webgpu: the operator names of onnxruntime-web's JSEP table (lib/wasm/jsep/webgpu/
  op-resolve-rules.ts); the versions and types it registers live inside the .wasm. It is not
  probed: nodes it lacks fall back to the WASM CPU kernels, so a run tells nothing, and this
  machine has no GPU (Chromium offers SwiftShader's software adapter only).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_DOMAIN = "ai.onnx"
OpKey = tuple[str, str]  # (domain, op type); the default domain spelled "ai.onnx"
LATEST = 2**31 - 1  # onnxruntime's "and every later version" end of a kernel's range


def op_key(domain: str, op_type: str) -> OpKey:
    return (domain or DEFAULT_DOMAIN, op_type)


def op_name(key: OpKey) -> str:
    """"ai.onnx:Conv", the spelling of onnxruntime's tools and of check's reports."""
    return f"{key[0]}:{key[1]}"


def node_mode(node: Any) -> str:
    """A node's `mode` attribute; Pad's default is "constant"."""
    for attr in node.attribute:
        if attr.name == "mode":
            return attr.s.decode()
    return "constant" if node.op_type == "Pad" else ""


@dataclass(frozen=True)
class OpSupport:
    supported: bool
    why: str


@dataclass(frozen=True)
class OpRule:
    """What a provider takes of one operator."""

    versions: tuple[tuple[int, int], ...] = ((1, LATEST),)  # operator versions with a kernel
    caveat: str = ""  # the provider's conditions that nobody checks (shown by `check`)
    modes: frozenset[str] | None = None  # the `mode` values it takes; None: every one
    # It runs on the provider only fused into a node of one of these operators that produces
    # its first input (XNNPACK's Relu and Clip); empty: on its own.
    fused_into: frozenset[OpKey] = frozenset()

    def takes_version(self, version: int | None) -> bool:
        return version is None or any(lo <= version <= hi for lo, hi in self.versions)

    def version_why(self, of_opset: bool = False) -> str:
        what = "opset" if of_opset else "operator version"
        if len(self.versions) == 1 and self.versions[0][1] == LATEST:
            return f"needs {what} {self.versions[0][0]} or later"
        spans = ", ".join(str(lo) if lo == hi else f"{lo}+" if hi == LATEST else f"{lo}-{hi}"
                          for lo, hi in sorted(set(self.versions)))
        if of_opset:
            return f"no kernel at the model's opset (kernels for opsets {spans})"
        return f"no kernel for this version (kernels for versions {spans})"


# eq=False: one provider is one object (its cached table is keyed by identity).
@dataclass(frozen=True, eq=False)
class Provider:
    name: str  # what --ep and --ops-allowed say
    label: str
    source: str  # where its operator list comes from
    load: Callable[[], Mapping[OpKey, OpRule]]  # its operators (cached: see `ops`)
    absent: str  # why an operator missing from the list is not taken
    needs_fixed_shapes: bool = False  # its partitioner refuses nodes with dynamic shapes
    max_rank: int | None = None  # the highest tensor rank it takes
    session: bool = False  # `check`'s verdict is a session of this machine's onnxruntime
    extra: Mapping[OpKey, OpRule] = field(default_factory=dict)  # added to / narrowing `load`
    # The browser backends (issue 17):
    web: bool = False  # checked only when --ep names it (its list may need a download, a probe)
    # Its `versions` are of the model's opset for the operator's domain, not of the operator.
    versions_are_opsets: bool = False
    # It runs the whole graph or nothing: no partitions, a node it lacks fails the session.
    whole_graph: bool = False
    # It is offered the model as written, not onnxruntime's BASIC-optimized graph (ONNX.js's
    # engines never run onnxruntime's optimizer).
    as_written: bool = False
    probe_ep: str | None = None  # its list is the browser probe's of this backend
    # Why a given operator is not taken, where the source knows better than `absent`.
    explain: Callable[[OpKey], str | None] | None = None
    # It reads every int64/uint64 constant as a 32-bit number and refuses the model when one
    # does not fit ("int64 is not supported", ONNX.js's lib/onnxjs/tensor.js longToNumber):
    # PyTorch's open-ended slices (`x[:, 2:]`) end at 2**63 - 1.
    int32_constants: bool = False

    def ops(self) -> Mapping[OpKey, OpRule]:
        return _ops(self)

    def support(self, domain: str, op_type: str, version: int | None = None,
                modes: set[str] | frozenset[str] = frozenset()) -> OpSupport:
        """Does it have a kernel for this operator, at `version` (None: any), in each of
        `modes` (the values of `mode` the model's nodes use)? Placement (`fused_into`) is not
        asked here: it depends on where a node stands, see `takes_node`."""
        rule = self.ops().get(op_key(domain, op_type))
        if rule is None:
            why = self.explain(op_key(domain, op_type)) if self.explain else None
            return OpSupport(False, why or self.absent)
        if not rule.takes_version(version):
            return OpSupport(False, rule.version_why(self.versions_are_opsets))
        refused = sorted(set(modes) - rule.modes) if rule.modes is not None else []
        if refused:
            return OpSupport(False, f"takes mode {', '.join(sorted(rule.modes))} only, not "
                                    f"{', '.join(refused)}")
        return OpSupport(True, rule.caveat or "kernel")

    def takes_node(self, node: Any, version: int | None,
                   producer: Any = None, producer_version: int | None = None) -> bool:
        """Does this node run on the provider where it stands: its operator, version and mode,
        and for an operator it runs only fused, a producer it fuses into that it takes too."""
        modes = {node_mode(node)} if _has_modes(self, node) else set()
        if not self.support(node.domain, node.op_type, version, modes).supported:
            return False
        rule = self.ops()[op_key(node.domain, node.op_type)]
        if not rule.fused_into:
            return True
        return producer is not None and (
            op_key(producer.domain, producer.op_type) in rule.fused_into
            and self.takes_node(producer, producer_version))


def _has_modes(provider: Provider, node: Any) -> bool:
    rule = provider.ops().get(op_key(node.domain, node.op_type))
    return rule is not None and rule.modes is not None


def forget_tables() -> None:
    """Drop the cached tables: a probe has just added to one."""
    _ops.cache_clear()


@functools.cache
def _ops(provider: Provider) -> Mapping[OpKey, OpRule]:
    table = dict(provider.load())
    table.update(provider.extra)
    # onnxruntime turns Constant nodes into initializers when it loads a model: no provider is
    # offered one, so every provider "takes" it.
    table.setdefault(op_key("", "Constant"),
                     OpRule(caveat="an initializer once onnxruntime loads the model"))
    return table


# ---------------------------------------------------------------------------- the sources


def _onnxruntime_cpu() -> dict[OpKey, OpRule]:
    from onnxruntime.capi import _pybind_state as ort_c

    ranges: dict[OpKey, set[tuple[int, int]]] = {}
    for k in ort_c.get_all_opkernel_def():
        if k.provider == "CPUExecutionProvider":
            ranges.setdefault(op_key(k.domain, k.op_name), set()).add(tuple(k.version_range))
    return {key: OpRule(tuple(sorted(spans))) for key, spans in ranges.items()}


def _mobile_list(filename: str) -> Callable[[], dict[OpKey, OpRule]]:
    """A provider's list as the markdown in onnxruntime's wheel gives it (no versions: the
    lists name operators only), read with onnxruntime's own reader."""

    def load() -> dict[OpKey, OpRule]:
        uc = ort_tool("mobile_helpers.usability_checker")
        table = uc._SupportedOpsChecker(str(Path(uc.__file__).parent / filename))
        return {op_key(*name.split(":", 1)): OpRule(caveat=caveat.strip())
                for name, caveat in table._ops.items()}

    return load


def _table(ops: Mapping[OpKey, OpRule]) -> Callable[[], Mapping[OpKey, OpRule]]:
    return lambda: ops


_XNNPACK_FUSES_INTO = frozenset({op_key("", "Conv"), op_key("", "MaxPool"),
                                 op_key("", "AveragePool")})
_FUSED_ONLY = "only fused into a preceding Conv, MaxPool or AveragePool"

# XNNPACK's kernels, transcribed from onnxruntime's sources (onnxruntime publishes no list):
# onnxruntime/core/providers/xnnpack/xnnpack_execution_provider.cc (RegisterKernels) and
# detail/node_support_checker.cc at github.com/microsoft/onnxruntime commits 1b38b582 and
# 6479e4bc (the 1.2x series; the Android AAR edgepack builds against is 1.29). The NHWC kernels
# (Conv, pools, Resize) are registered from the version given; Relu and Clip run on XNNPACK
# only fused into a preceding Conv, MaxPool or AveragePool.
XNNPACK_OPS: dict[OpKey, OpRule] = {
    op_key("", "Conv"): OpRule(((11, LATEST),), "2D, constant weights, float or (u)int8 (QDQ)"),
    op_key("", "ConvTranspose"): OpRule(caveat="2D, constant weights"),
    op_key("", "MaxPool"): OpRule(((11, LATEST),), "2D, no indices output"),
    op_key("", "AveragePool"): OpRule(((11, LATEST),), "2D, count_include_pad=0"),
    op_key("", "Softmax"): OpRule(caveat="float or QDQ; last axis"),
    op_key("", "Resize"): OpRule(((10, LATEST),),
                                 "2D bilinear or nearest, constant scales/sizes"),
    op_key("", "Gemm"): OpRule(((7, LATEST),), "constant B, 2D"),
    op_key("", "MatMul"): OpRule(caveat="constant B, 2D"),
    op_key("", "QLinearConv"): OpRule(((10, LATEST),), "constant weights"),
    op_key("com.microsoft", "QLinearAveragePool"): OpRule(),
    op_key("com.microsoft", "QLinearSoftmax"): OpRule(),
    op_key("", "Relu"): OpRule(caveat=_FUSED_ONLY, fused_into=_XNNPACK_FUSES_INTO),
    op_key("", "Clip"): OpRule(caveat=_FUSED_ONLY + "; constant min/max",
                               fused_into=_XNNPACK_FUSES_INTO),
}

# ---------------------------------------------------------------------------- the browser

# A resolve rule: ['Op', 'domain', '7+' | '7-10' | '9', ...] (ONNX.js's matchSelector forms).
_RULE = re.compile(r"\[\s*'([A-Za-z_][A-Za-z0-9_]*)'\s*,\s*'([A-Za-z0-9_.]*)'\s*,\s*"
                   r"'([0-9]+)(\+|-[0-9]+)?'")
_COMMENT = re.compile(r"//[^\n]*")

# The opset at which an attribute these kernels read became an input: an open-ended rule from
# before it stops there (the kernel would reject or ignore the input; ReduceMean at opset 18
# fails ONNX.js with "invalid inputs detected").
_INPUT_FORM_FROM = {
    **{op: 18 for op in ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceLogSum",
                         "ReduceLogSumExp", "ReduceSumSquare", "ReduceL1", "ReduceL2")},
    **{op: 13 for op in ("ReduceSum", "Squeeze", "Unsqueeze", "Split")},
}


def parse_resolve_rules(text: str, table: str) -> dict[OpKey, OpRule]:
    """The rules of the JavaScript array `table` in an op-resolve-rules.js, as OpRules whose
    versions are opsets. Refuses (ValueError) a file in which some element of the array is not
    a rule it reads, so a package whose format changed fails loudly instead of shrinking."""
    start = text.find(f"{table} = [")
    end = text.find("\n];", start)
    if start < 0 or end < 0:
        raise ValueError(f"no array {table} in the file")
    body = _COMMENT.sub("", text[start + len(table) + 4:end])
    elements = _top_level_elements(body)
    rules = [m.groups() for m in (_RULE.match(body, at) for at in elements) if m]
    if not rules or len(rules) != len(elements):
        raise ValueError(f"{table}: read {len(rules)} rule(s) of {len(elements)} elements")
    spans: dict[OpKey, list[tuple[int, int]]] = {}
    for op, domain, lo, tail in rules:
        first = int(lo)
        last = LATEST if tail == "+" else int(tail[1:]) if tail else first
        spans.setdefault(op_key(domain, op), []).append((first, last))
    return {key: OpRule(_input_form_cap(key, sorted(s))) for key, s in spans.items()}


def _top_level_elements(body: str) -> list[int]:
    """Where each element of the array opens (its `[` at depth one), skipping quoted text."""
    found, depth, quote = [], 0, ""
    for i, ch in enumerate(body):
        if quote:
            quote = "" if ch == quote and body[i - 1] != "\\" else quote
        elif ch in "'\"`":
            quote = ch
        elif ch in "[({":
            if ch == "[" and depth == 0:
                found.append(i)
            depth += 1
        elif ch in "])}":
            depth -= 1
    return found


def _input_form_cap(key: OpKey, spans: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    cut = _INPUT_FORM_FROM.get(key[1]) if key[0] == DEFAULT_DOMAIN else None
    if cut is None or any(lo >= cut for lo, _ in spans):  # the table has an input-form rule
        return tuple(spans)
    return tuple((lo, min(hi, cut - 1)) for lo, hi in spans if lo < cut)


def _resolve_rules(runtime: str, path: str, table: str) -> Callable[[], dict[OpKey, OpRule]]:
    def load() -> dict[OpKey, OpRule]:
        from edgepack.errors import EdgepackError, ExitCode
        from edgepack.web.runtime import web_runtime

        rt = web_runtime(runtime)
        file = rt.root / path
        try:
            return parse_resolve_rules(file.read_text(), table)
        except (OSError, ValueError) as exc:
            raise EdgepackError(f"{rt.name} {rt.version}: cannot read its operator table "
                                f"{path} ({exc}); this is a bug in edgepack, please report it",
                                ExitCode.INTERNAL) from None

    return load


_JSEP_NAME = re.compile(r"^\s*\['([A-Za-z_][A-Za-z0-9_]*)'\s*,", re.M)
# JSEP's table names operators without their domain: these are onnxruntime's contrib ops.
_MS_OPS = frozenset({"Attention", "BiasAdd", "BiasSplitGelu", "FastGelu", "FusedConv",
                     "GatherBlockQuantized", "Gelu", "GroupQueryAttention", "MatMulNBits",
                     "MultiHeadAttention", "QuickGelu", "RotaryEmbedding",
                     "SkipLayerNormalization", "BiasGelu"})

# The JS provider's kernels that need no shader (they move no data, or run on the CPU side) are
# C++ alone, so the .ts table never names them; transcribed from onnxruntime's
# onnxruntime/core/providers/js/operators/{reshape,flatten,shape_op,squeeze,unsqueeze,
# constant_of_shape,if}.cc.
_JSEP_NATIVE = ("Reshape", "Flatten", "Shape", "Squeeze", "Unsqueeze", "ConstantOfShape", "If")


def _webgpu_names() -> dict[OpKey, OpRule]:
    from edgepack.web.runtime import ORT_WEB, web_runtime

    text = (web_runtime(ORT_WEB).root / "lib/wasm/jsep/webgpu/op-resolve-rules.ts").read_text()
    body = text[text.find("WEBGPU_OP_RESOLVE_RULES"):]
    table = {op_key("com.microsoft" if name in _MS_OPS else "", name): OpRule()
             for name in _JSEP_NAME.findall(body)}
    table.update({op_key("", name): OpRule(caveat="a C++ kernel of the JS provider")
                  for name in _JSEP_NATIVE})
    return table


def _probed(ep: str) -> Callable[[], dict[OpKey, OpRule]]:
    def load() -> dict[OpKey, OpRule]:
        from edgepack.web.probe import probed_rules

        return probed_rules(ep)

    return load


def _probe_why(ep: str) -> Callable[[OpKey], str | None]:
    def why(key: OpKey) -> str | None:
        from edgepack.web.probe import probe_why

        return probe_why(ep, key)

    return why


_ONNXJS_CONSTANT = {op_key("", "Constant"): OpRule(
    caveat="an initializer once the graph is loaded")}

# Rules of onnxruntime-web 1.30.0's WebGL table whose kernel fails every run: its Upsample-9
# (scales as an input) stops the first inference with "Invalid shape: NaN is not an integer"
# (Chromium 156, tests/web/test_check_onnxjs.py); the same graph at opset 8 runs.
_ORT_WEBGL_BROKEN = {op_key("", "Upsample"): OpRule(((7, 8),))}

_NNAPI_PAD = op_key("", "Pad")

# One entry per provider, in the order `check` reports them.
PROVIDERS: dict[str, Provider] = {p.name: p for p in (
    Provider("cpu", "onnxruntime's CPU provider",
             "the CPU kernels this machine's onnxruntime registers; `check` also creates a "
             "session", _onnxruntime_cpu, "no CPU kernel", session=True),
    Provider("xnnpack", "XNNPACK (Android, Linux on Arm)",
             "onnxruntime's XNNPACK kernel registrations (xnnpack_execution_provider.cc, "
             "node_support_checker.cc; 1.2x sources), transcribed in edgepack/providers.py",
             _table(XNNPACK_OPS), "no kernel"),
    Provider("nnapi", "Android NNAPI",
             "onnxruntime's nnapi_supported_ops.md and usability_checker",
             _mobile_list("nnapi_supported_ops.md"), "not in onnxruntime's supported-op list",
             needs_fixed_shapes=True,
             # The list's own note: "Only constant mode Pad is supported."
             extra={_NNAPI_PAD: OpRule(
                 caveat="Input pads and constant_value should be constant. Input pads values "
                        "should be non-negative.",
                 modes=frozenset({"constant"}))}),
    # CoreML as onnxruntime's ML Program format (the one its docs recommend; the older
    # NeuralNetwork format has a shorter list, coreml_supported_neuralnetwork_ops.md). CoreML
    # takes tensors of rank 5 at most, as the checker's check_coreml_partitions says.
    Provider("coreml", "Apple CoreML (ML Program)",
             "onnxruntime's coreml_supported_mlprogram_ops.md and usability_checker",
             _mobile_list("coreml_supported_mlprogram_ops.md"),
             "not in onnxruntime's supported-op list", needs_fixed_shapes=True, max_rank=5),
    Provider("wasm", "onnxruntime-web, WebAssembly (the browser)",
             "a probe: one of onnx's node test models per operator run in Chromium on "
             "onnxruntime-web's WASM backend, cached per runtime version (edgepack/web/probe.py)",
             _probed("wasm"), "the probe could not run it", web=True, whole_graph=True,
             probe_ep="wasm", explain=_probe_why("wasm")),
    Provider("webgl", "onnxruntime-web, WebGL (the browser)",
             "onnxruntime-web's WebGL resolve rules (lib/onnxjs/backends/webgl/"
             "op-resolve-rules.js), read from the pinned package",
             _resolve_rules("onnxruntime-web", "lib/onnxjs/backends/webgl/op-resolve-rules.js",
                            "WEBGL_OP_RESOLVE_RULES"),
             "not in onnxruntime-web's WebGL resolve rules", web=True,
             versions_are_opsets=True, whole_graph=True, as_written=True,
             extra={**_ONNXJS_CONSTANT, **_ORT_WEBGL_BROKEN}, int32_constants=True),
    Provider("webgpu", "onnxruntime-web, WebGPU (the browser)",
             "the operator names of onnxruntime-web's JSEP table (lib/wasm/jsep/webgpu/"
             "op-resolve-rules.ts), not their versions or types, which are registered inside "
             "the .wasm; not probed: what WebGPU lacks runs on the WASM kernels node by node, "
             "so a run cannot tell them apart, and this machine has no GPU (Chromium offers "
             "only SwiftShader's software adapter)",
             _webgpu_names, "not in onnxruntime-web's WebGPU table (runs on the WASM CPU "
             "kernels)", web=True),
    # ONNX.js picks WebGL where the browser has it (Chromium here does, through SwiftShader),
    # else its CPU backend; the table is its WebGL one, the backend edgepack's page uses.
    Provider("onnxjs", "ONNX.js 0.1.8 (the browser, WebGL backend)",
             "ONNX.js's WebGL resolve rules (lib/backends/webgl/op-resolve-rules.js), read from "
             "the pinned package",
             _resolve_rules("onnxjs", "lib/backends/webgl/op-resolve-rules.js",
                            "WEBGL_OP_RESOLVE_RULES"),
             "not in ONNX.js's WebGL resolve rules", web=True, versions_are_opsets=True,
             whole_graph=True, as_written=True, extra=_ONNXJS_CONSTANT,
             int32_constants=True),
)}


def provider(name: str) -> Provider | None:
    return PROVIDERS.get(name.lower())


def ort_tool(name: str) -> Any:
    """`onnxruntime.tools.<name>`, imported without running onnxruntime/tools/__init__.py:
    that imports torch whenever torch is installed (12 s here, and only `edgepack export` may
    import torch), for a helper none of these tools use."""
    import importlib
    import importlib.util
    import sys

    from edgepack.errors import EdgepackError, ExitCode

    if "onnxruntime.tools" not in sys.modules:
        import onnxruntime  # noqa: F401 - the parent package, for find_spec

        spec = importlib.util.find_spec("onnxruntime.tools")
        if spec is None:
            raise EdgepackError("this onnxruntime has no tools package", ExitCode.BAD_INPUT)
        # An unexecuted package module: its __path__ lets the submodules import normally.
        sys.modules["onnxruntime.tools"] = importlib.util.module_from_spec(spec)
    return importlib.import_module(f"onnxruntime.tools.{name}")
