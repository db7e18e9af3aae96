"""What a rule sees of the model (`Context`) and hands back (`Replacement`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgepack.rewrite.spec import OpKey, op_key


@dataclass
class Replacement:
    """What replaces one node: nodes in order (the last ones write the node's outputs), and the
    initializers they read."""

    nodes: list[Any]
    initializers: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class NodeRule:
    """Replaces one node of `ops` by allowed ones; `rewrite` returns None where it cannot (an
    attribute it does not handle, a rank it cannot infer), and the next rule is tried."""

    name: str
    ops: frozenset[OpKey] | None  # None: any operator (the rule decides by itself)
    rewrite: Callable[[Any, Context], Replacement | None]


@dataclass(frozen=True)
class ModelRule:
    """Rewrites the whole model at once (an opset conversion); returns None where it cannot.

    A rule `for_target` is also handed the target's OpsAllowed: `matches(node, model, allowed)`
    and `rewrite(model, allowed)` (the opset it converts to depends on the target's ranges)."""

    name: str
    ops: frozenset[OpKey] | None  # None: `matches` says which nodes it rewrites
    rewrite: Callable[..., Any | None]
    matches: Callable[..., bool] | None = None  # (node, model[, allowed]) -> bool
    for_target: bool = False

    def hits(self, n: Any, model: Any, allowed: Any = None) -> bool:
        if self.ops is not None:
            return key_of(n) in self.ops
        if self.matches is None:
            return False
        return self.matches(n, model, allowed) if self.for_target else self.matches(n, model)

    def apply(self, model: Any, allowed: Any = None) -> Any | None:
        return self.rewrite(model, allowed) if self.for_target else self.rewrite(model)


class Context:
    """The model's state for one pass: its opsets, the constant values of tensors (initializers
    and Constant nodes), the types shape inference found, and fresh names."""

    def __init__(self, model: Any) -> None:
        import onnx
        from onnx import numpy_helper

        self.model = model
        self.opsets = {(o.domain or ""): int(o.version) for o in model.opset_import}
        self.opset = self.opsets.get("", self.opsets.get("ai.onnx", 1))
        self.ir_version = int(model.ir_version)
        graph = model.graph
        self.initializers = {t.name: t for t in graph.initializer}
        self._constants: dict[str, Any] = {}
        for node in graph.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                for attr in node.attribute:
                    if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                        self._constants[node.output[0]] = attr.t
        self.types: dict[str, Any] = {}
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
        except Exception:  # noqa: BLE001 - without inference, rules that need ranks decline
            inferred = model
        for group in (inferred.graph.input, inferred.graph.output, inferred.graph.value_info):
            for v in group:
                self.types[v.name] = v.type
        for t in graph.initializer:
            self.types.setdefault(t.name, onnx.helper.make_tensor_type_proto(
                t.data_type, list(t.dims)))
        self._used = {n for node in graph.node for n in (*node.input, *node.output, node.name)}
        # Values something reads: a node (subgraphs included: they see the outer scope) or
        # the graph's outputs.
        self.read = {o.name for o in graph.output} | _inputs_read(graph)
        self._used |= {v.name for v in (*graph.input, *graph.output, *graph.initializer)}
        self._numpy = numpy_helper
        self._shared: dict[tuple[str, tuple[int, ...], bytes], str] = {}

    def constant(self, name: str) -> np.ndarray | None:
        """The value of `name` when it is an initializer or a Constant node's output."""
        tensor = self.initializers.get(name) or self._constants.get(name)
        if tensor is None or not name:
            return None
        return self._numpy.to_array(tensor)

    def rank(self, name: str) -> int | None:
        tp = self.types.get(name)
        if tp is None or not tp.HasField("tensor_type") or not tp.tensor_type.HasField("shape"):
            return None
        return len(tp.tensor_type.shape.dim)

    def elem_type(self, name: str) -> int | None:
        tp = self.types.get(name)
        if tp is None or not tp.HasField("tensor_type") or not tp.tensor_type.elem_type:
            return None
        return int(tp.tensor_type.elem_type)

    def fresh(self, base: str) -> str:
        base = base or "rw"
        name, n = base, 0
        while name in self._used:
            n += 1
            name = f"{base}_{n}"
        self._used.add(name)
        return name

    def const(self, base: str, array: np.ndarray, out: Replacement) -> str:
        """An initializer holding `array` (added to `out`); returns its name. Small ones are
        shared: every Slice of a Pad rewrite reads the same few axes and steps."""
        array = np.asarray(array)
        small = array.nbytes <= 64
        key = (array.dtype.str, array.shape, array.tobytes())
        if small and key in self._shared:
            return self._shared[key]
        name = self.fresh(base)
        out.initializers.append(self._numpy.from_array(array, name))
        if small:
            self._shared[key] = name
        return name


def _inputs_read(graph: Any) -> set[str]:
    read: set[str] = set()
    for n in graph.node:
        read.update(n.input)
        for attr in n.attribute:
            for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                read |= _inputs_read(g) | {o.name for o in g.output}
    return read


def node(op_type: str, inputs: list[str], outputs: list[str], name: str, **attrs: Any) -> Any:
    from onnx import helper

    return helper.make_node(op_type, inputs, outputs, name=name, **attrs)


def key_of(n: Any) -> OpKey:
    return op_key(n.domain, n.op_type)


def attribute(n: Any, name: str, default: Any = None) -> Any:
    from onnx import helper

    for attr in n.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default
