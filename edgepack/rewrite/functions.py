"""Any operator onnx defines as a function (LayerNormalization, GroupNormalization, Gelu,
HardSwish, Mish, ...) replaced by its function body, as onnx's schema gives it: the body for
the model's opset, context-dependent bodies built for the node's attributes and input types.

A body is written for one opset; it is used only when each of its operators means the same at
the model's opset (see `_same_schema`), so a body never borrows another version's semantics.
Functions the model defines itself (an exporter's module hierarchy) are inlined by onnx's
inliner, all at once, nested ones included.
"""

from __future__ import annotations

from typing import Any

from edgepack.rewrite.graph import Context, ModelRule, NodeRule, Replacement


def function_body(n: Any, ctx: Context) -> Replacement | None:
    body = _body(n, ctx)
    if body is None:
        return None
    import onnx

    body_opset = next((o.version for o in body.opset_import if o.domain in ("", "ai.onnx")),
                      None)
    if any(o.domain not in ("", "ai.onnx") for o in body.opset_import):
        return None
    for inner in body.node:
        if inner.domain not in ("", "ai.onnx") or body_opset is None:
            return None
        if not _same_schema(inner.op_type, body_opset, ctx.opset):
            return None
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for a in inner.attribute):
            return None  # renaming inside subgraphs is not worth its risk here
    base = n.name or n.op_type
    rename: dict[str, str] = {"": ""}
    for i, formal in enumerate(body.input):
        rename[formal] = n.input[i] if i < len(n.input) else ""
    for i, formal in enumerate(body.output):
        rename[formal] = n.output[i] if i < len(n.output) and n.output[i] else \
            ctx.fresh(f"{base}/{formal}")
    given = {a.name: a for a in n.attribute}
    schema = onnx.defs.get_schema(n.op_type, ctx.opset, n.domain)
    out = Replacement([])
    for inner in body.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(inner)
        copy.name = ctx.fresh(f"{base}/{inner.op_type}")
        del copy.input[:]
        del copy.output[:]
        for name in inner.input:
            copy.input.append(rename.setdefault(name, ctx.fresh(f"{base}/{name}")))
        for name in inner.output:
            copy.output.append(rename.setdefault(name, ctx.fresh(f"{base}/{name}")))
        del copy.attribute[:]
        for attr in inner.attribute:
            if not attr.ref_attr_name:
                copy.attribute.append(attr)
                continue
            # An attribute the body takes from the node's: the node's value, else the schema's
            # default, else (an optional attribute left out) none at all.
            source = given.get(attr.ref_attr_name)
            if source is None:
                default = schema.attributes.get(attr.ref_attr_name)
                if default is None or not default.default_value.name:
                    continue
                source = default.default_value
            value = onnx.AttributeProto()
            value.CopyFrom(source)
            value.name = attr.name
            copy.attribute.append(value)
        out.nodes.append(copy)
    return out


def _body(n: Any, ctx: Context) -> Any | None:
    import onnx

    domain = n.domain if n.domain != "ai.onnx" else ""
    try:
        schema = onnx.defs.get_schema(n.op_type, ctx.opsets.get(domain, ctx.opset), domain)
    except onnx.defs.SchemaError:
        return None
    opset = ctx.opsets.get(domain, ctx.opset)
    data = None
    if schema.has_function:
        versions = [v for v in schema.function_opset_versions if v <= opset]
        if versions:
            data = schema.get_function_with_opset_version(max(versions))
    elif schema.has_context_dependent_function:
        versions = [v for v in schema.context_dependent_function_opset_versions if v <= opset]
        types = []
        for name in n.input:
            elem = ctx.elem_type(name) if name else None
            if name and elem is None:
                return None  # the body depends on input types shape inference did not find
            types.append(onnx.helper.make_tensor_type_proto(elem or 0, None).SerializeToString())
        if versions:
            try:
                data = schema.get_context_dependent_function_with_opset_version(
                    max(versions), n.SerializeToString(), types)
            except Exception:  # noqa: BLE001 - a node the builder refuses: no body
                return None
    if not data:
        return None
    body = onnx.FunctionProto()
    body.ParseFromString(data)
    return body if body.node else None


def _same_schema(op_type: str, body_opset: int, model_opset: int) -> bool:
    """The operator means the same at both opsets: the same schema, or schemas that differ in
    the types they take and in optional attributes they add (opset 19 and 21 added float8 and
    int4 to most operators), with the same inputs and outputs; a change of meaning (ReduceMean's
    axes becoming an input) changes those."""
    import onnx

    try:
        a = onnx.defs.get_schema(op_type, body_opset)
        b = onnx.defs.get_schema(op_type, model_opset)
    except onnx.defs.SchemaError:
        return False
    if a.since_version == b.since_version:
        return True

    def io(s: Any) -> tuple[list[str], list[str]]:
        return [i.name for i in s.inputs], [o.name for o in s.outputs]

    # A new optional attribute (CastLike's saturate, for float8) keeps the old meaning by its
    # default: that is how onnx changes an operator compatibly.
    added = set(b.attributes) - set(a.attributes)
    return (io(a) == io(b) and set(a.attributes) <= set(b.attributes)
            and not any(b.attributes[name].required for name in added))


RULES = [NodeRule("function body (onnx schema)", None, function_body)]


def _calls_local_function(n: Any, model: Any) -> bool:
    return any(f.domain == n.domain and f.name == n.op_type for f in model.functions)


def inline_local_functions(model: Any) -> Any | None:
    from onnx import inliner

    try:
        return inliner.inline_local_functions(model)
    except Exception:  # noqa: BLE001 - the inliner refuses: the calls stay, named as unruled
        return None


LOCAL_RULES = [ModelRule("model-local function -> its body (onnx inliner)", None,
                         inline_local_functions, _calls_local_function)]
