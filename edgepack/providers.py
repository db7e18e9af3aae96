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
"""

from __future__ import annotations

import functools
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

    def version_why(self) -> str:
        if len(self.versions) == 1 and self.versions[0][1] == LATEST:
            return f"needs operator version {self.versions[0][0]} or later"
        spans = ", ".join(str(lo) if lo == hi else f"{lo}+" if hi == LATEST else f"{lo}-{hi}"
                          for lo, hi in sorted(set(self.versions)))
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

    def ops(self) -> Mapping[OpKey, OpRule]:
        return _ops(self)

    def support(self, domain: str, op_type: str, version: int | None = None,
                modes: set[str] | frozenset[str] = frozenset()) -> OpSupport:
        """Does it have a kernel for this operator, at `version` (None: any), in each of
        `modes` (the values of `mode` the model's nodes use)? Placement (`fused_into`) is not
        asked here: it depends on where a node stands, see `takes_node`."""
        rule = self.ops().get(op_key(domain, op_type))
        if rule is None:
            return OpSupport(False, self.absent)
        if not rule.takes_version(version):
            return OpSupport(False, rule.version_why())
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
