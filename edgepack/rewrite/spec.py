"""Which operators a target takes: `--ops-allowed SPEC`.

SPEC is a file in onnxruntime's reduced-build format (`domain;opset;Op1,Op2`, what
`create_reduced_build_config` writes and `check` prints), read with onnxruntime's own parser, or
the name of an execution provider: its operators are `edgepack/providers.py`'s entry, the table
`edgepack check` reads too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgepack.errors import EdgepackError, short
from edgepack.providers import (  # the rule modules import op_key, OpKey, node_mode here
    DEFAULT_DOMAIN,
    PROVIDERS,
    OpKey,
    node_mode,
    op_key,
)

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOMAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.]*")


def op_label(key: OpKey) -> str:
    return key[1] if key[0] == DEFAULT_DOMAIN else f"{key[0]}:{key[1]}"


@dataclass(frozen=True)
class OpsAllowed:
    """The operators a target takes. `modes` narrows an operator to some values of its `mode`
    attribute (a runtime whose Pad pads with constants only); an operator absent from `modes`
    is taken in every mode."""

    source: str  # what --ops-allowed named: a provider, or the config file's name
    ops: frozenset[OpKey]
    modes: dict[OpKey, frozenset[str]] = field(default_factory=dict)
    # A reduced build has the kernels of the opsets its config lists: domain -> those opsets
    # (empty for a provider, which takes every opset).
    opsets: dict[str, frozenset[int]] = field(default_factory=dict)
    # A provider's operator versions with a kernel, per operator (absent: every version); what
    # `allows_op` answers with a version, as `edgepack check` does per operator.
    versions: dict[OpKey, tuple[tuple[int, int], ...]] = field(default_factory=dict)
    # A browser runtime's kernels per operator as ranges of the MODEL's opset for the domain
    # (ONNX.js's resolver): unlike an operator's version, a rule can change that (the opset
    # rule converts the model), so `allows` checks it when given the model's opsets.
    opset_versions: dict[OpKey, tuple[tuple[int, int], ...]] = field(default_factory=dict)
    # The target reads int64 constants as 32-bit numbers (ONNX.js's engine): Slice bounds
    # beyond 32 bits are clamped (rewrite/int32.py).
    int32_constants: bool = False

    def allows_op(self, domain: str, op_type: str, version: int | None = None) -> bool:
        key = op_key(domain, op_type)
        if key not in self.ops:
            return False
        spans = self.versions.get(key)
        return version is None or spans is None or any(lo <= version <= hi
                                                       for lo, hi in spans)

    def allows(self, node: Any, opsets: dict[str, int] | None = None) -> bool:
        """Does the target take `node`; with the model's `opsets` (domain -> version, the
        default domain as ""), also at that opset."""
        key = op_key(node.domain, node.op_type)
        if key not in self.ops:
            return False
        if opsets is not None and not self.allows_at(key, opsets.get(node.domain or "")):
            return False
        if key in self.modes:
            return node_mode(node) in self.modes[key]
        return True


    def allows_at(self, key: OpKey, opset: int | None) -> bool:
        spans = self.opset_versions.get(key)
        return spans is None or opset is None or any(lo <= opset <= hi for lo, hi in spans)


# ---------------------------------------------------------------------------- providers


def _from_provider(name: str) -> OpsAllowed:
    """What a rewrite for provider `name` may keep or produce: every operator its entry lists,
    in the modes it lists (a rule turns a reflect Pad into Slice/Concat for NNAPI's
    constant-only Pad).

    Not checked per node, because no rewrite rule could change them: the operator version a
    kernel starts at (the model's opset decides it; `check` reports it) and where a node stands.
    A browser runtime's ranges of the model's opset (ONNX.js: Upsample at 7-8) are checked, as
    `opset_versions`: the opset rule converts the model to an opset they all take.
    So XNNPACK's Relu and Clip, which it runs only fused into a preceding Conv, MaxPool or
    AveragePool, are allowed: a rule never moves an activation away from its producer, no rule
    could turn a lone Relu into anything XNNPACK has, and refusing them would refuse Conv+Relu,
    the very pattern XNNPACK runs. A lone one stays on the CPU, which `check` shows."""
    provider = PROVIDERS.get(name)
    if provider is None:
        raise EdgepackError(
            f"--ops-allowed {name}: not a file, nor a provider edgepack knows the operators of "
            f"({', '.join(PROVIDERS)}); pass a required_operators.config "
            "(`domain;opset;Op1,Op2` lines) instead"
        )
    from edgepack.providers import LATEST

    if provider.probe_ep is not None:
        from edgepack.web.probe import require_probe

        require_probe(provider.probe_ep)  # an unprobed list would refuse every operator
    rules = provider.ops()
    spans = {k: r.versions for k, r in rules.items()}
    return OpsAllowed(
        name, frozenset(rules),
        modes={k: r.modes for k, r in rules.items() if r.modes is not None},
        versions={} if provider.versions_are_opsets else spans,
        opset_versions={k: v for k, v in spans.items() if v != ((1, LATEST),)}
        if provider.versions_are_opsets else {},
        int32_constants=provider.int32_constants,
    )


def ops_for_ep(name: str) -> set[OpKey]:
    """The (domain, op) pairs execution provider `name` takes; EdgepackError (exit 2) for a
    provider nobody knows."""
    return set(_from_provider(name.lower()).ops)


# ---------------------------------------------------------------------------- the option


def load_ops_allowed(spec: str) -> OpsAllowed:
    """--ops-allowed SPEC: a required_operators.config file, else a provider name."""
    path = Path(spec)
    if path.is_file():
        return _from_config(path)
    if path.exists():
        raise EdgepackError(f"--ops-allowed {spec}: is a directory, not a "
                            "required_operators.config file")
    if "/" in spec or path.suffix:
        raise EdgepackError(f"--ops-allowed {spec}: no such file")
    return _from_provider(spec.lower())


def _from_config(path: Path) -> OpsAllowed:
    from edgepack.providers import ort_tool

    parse_config = ort_tool("reduced_build_config_parser").parse_config
    where = f"--ops-allowed {path}"
    try:
        required, _ = parse_config(str(path))
    except (ValueError, RuntimeError, UnicodeDecodeError) as exc:
        raise EdgepackError(f"{where}: malformed operator config ({short(exc)}); each line is "
                            "DOMAIN;OPSET[,OPSET];Op1,Op2 (or a # comment)") from None
    if required is None:  # !no_ops_specified_means_all_ops_are_required and nothing listed
        raise EdgepackError(f"{where}: lists no operators, which onnxruntime reads as 'all of "
                            "them'; nothing to rewrite for")
    ops: set[OpKey] = set()
    opsets: dict[str, frozenset[int]] = {}
    for domain, by_opset in required.items():
        if not _DOMAIN.fullmatch(domain):
            raise EdgepackError(f"{where}: malformed operator config (domain {domain!r})")
        opsets[domain] = frozenset(by_opset)
        for names in by_opset.values():
            for name in names:
                if not _NAME.fullmatch(name):
                    raise EdgepackError(f"{where}: malformed operator config (operator "
                                        f"{name!r} in domain {domain})")
                ops.add(op_key("" if domain == DEFAULT_DOMAIN else domain, name))
    if not ops:
        raise EdgepackError(f"{where}: lists no operators")
    return OpsAllowed(path.name, frozenset(ops), {}, opsets)
