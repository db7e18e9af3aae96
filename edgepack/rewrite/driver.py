"""Rules applied until every node is one the target takes, and the result checked against the
model as given.

Each pass rewrites every disallowed node of the main graph by the first rule that applies to
it (model-wide rules, which change the opset the others work at, go first); a pass that changes
nothing while some node is still disallowed names that operator (exit 2). Rules may produce
operators that other rules then rewrite (a function body holding another function), so the
passes run to a fixed point, bounded in passes and in growth, in case two rules undo each other.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgepack.bundle.schema import Rewrite, RuleRun, TensorSpec, Tolerance
from edgepack.errors import EdgepackError, ExitCode, short
from edgepack.rewrite import (
    depth_to_space,
    folding,
    functions,
    inference,
    norm,
    opset,
    pad,
    resize,
    softmax,
    variadic,
)
from edgepack.rewrite.fixdim import FixDim, fix_dims
from edgepack.rewrite.graph import Context, ModelRule, NodeRule, Replacement, key_of
from edgepack.rewrite.spec import OpsAllowed, op_label

if TYPE_CHECKING:
    from edgepack.inputs import InputValue

# In the order they are tried: folding before anything that might read a folded constant,
# specific decompositions before the generic function body (InstanceNormalization has none,
# but a decomposition written for a target beats a schema's general body).
# The opset rule goes before Upsample->Resize: a target that has Upsample at another opset
# (ONNX.js: 7-8) takes the model converted there rather than a Resize it may lack.
RULES: list[NodeRule | ModelRule] = [*opset.RULES, *functions.LOCAL_RULES, *folding.RULES,
                                     *norm.RULES,
                                     *pad.RULES, *resize.RULES, *variadic.RULES,
                                     *depth_to_space.RULES,
                                     *inference.RULES, *softmax.RULES, *functions.RULES]
MAX_PASSES = 64
MAX_GROWTH = 64  # nodes after at most this many times the nodes before (plus a margin)


@dataclass(frozen=True)
class Transformed:
    model: Any  # onnx.ModelProto
    record: Rewrite


def transform_model(model: Any, allowed: OpsAllowed | None, fixes: list[FixDim],
                    rules: list[NodeRule | ModelRule] | None = None) -> Transformed:
    """Fix the dims asked for, then rewrite until `allowed` takes every node. `model` is
    changed in place or replaced; use the returned one."""
    nodes_before, opset_before = len(model.graph.node), _opset(model)
    if fixes:
        fix_dims(model, fixes)
    runs: dict[tuple[str, str], int] = {}
    if allowed is not None:
        if allowed.int32_constants:
            from edgepack.rewrite import int32

            clamped = int32.clamp_slice_bounds(model)
            if clamped:
                runs[(int32.NAME, "Slice")] = clamped
        model = rewrite_graph(model, allowed, runs, RULES if rules is None else rules)
        _check_opsets(model, allowed, runs)
    record = Rewrite(
        ops_allowed=None if allowed is None else allowed.source,
        fixed_dims=[f.text() for f in fixes],
        rules=[RuleRun(rule, op, count) for (rule, op), count in runs.items()],
        nodes_before=nodes_before,
        nodes_after=len(model.graph.node),
        opset_before=opset_before,
        opset_after=_opset(model),
        max_abs_error=None,
    )
    return Transformed(model, record)


def rewrite_graph(model: Any, allowed: OpsAllowed, runs: dict[tuple[str, str], int],
                  rules: list[NodeRule | ModelRule]) -> Any:
    import onnx

    start = len(model.graph.node)
    for _ in range(MAX_PASSES):
        _refuse_subgraphs(model, allowed)
        opsets = _opsets(model)
        bad = [n for n in model.graph.node if not allowed.allows(n, opsets)]
        if not bad:
            return model
        converted = _model_rules(model, bad, rules, runs, allowed)
        if converted is not None:
            model = converted
            continue
        ctx = Context(model)
        kept: list[Any] = []
        added: list[Any] = []
        stuck: list[Any] = []
        for n in model.graph.node:
            if allowed.allows(n, opsets):
                kept.append(n)
                continue
            done = _best(n, ctx, rules, allowed, runs)
            if done is None:
                stuck.append(n)
                kept.append(n)
                continue
            kept += done.nodes
            added += done.initializers
        if len(stuck) == len(bad):
            _no_rule(stuck, allowed, runs)
        graph = model.graph
        del graph.node[:]
        graph.node.extend(kept)
        graph.initializer.extend(added)
        if model.ir_version < 4:  # before IR 4 every initializer is also a graph input
            graph.input.extend(onnx.helper.make_tensor_value_info(
                t.name, t.data_type, list(t.dims)) for t in added)
        if len(graph.node) > MAX_GROWTH * start + 10_000:
            raise EdgepackError(f"--ops-allowed {allowed.source}: the rewrite rules keep "
                                f"growing the graph ({start} -> {len(graph.node)} nodes); this "
                                "is a bug in edgepack, please report it", ExitCode.INTERNAL)
    raise EdgepackError(f"--ops-allowed {allowed.source}: the rewrite rules did not settle in "
                        f"{MAX_PASSES} passes (rewritten: {_summary(runs)}); this is a bug in "
                        "edgepack, please report it", ExitCode.INTERNAL)


def _best(n: Any, ctx: Context, rules: list[NodeRule | ModelRule], allowed: OpsAllowed,
          runs: dict[tuple[str, str], int]) -> Replacement | None:
    """The first rule whose nodes the target all takes, else the first that applies (its
    nodes are rewritten in the next pass): one step of look-ahead picks Log(Softmax) over
    LogSoftmax's ReduceMax body for NNAPI, and the body where ReduceMax is allowed."""
    first: tuple[str, Replacement] | None = None
    for rule in rules:
        if isinstance(rule, ModelRule) or (rule.ops is not None and key_of(n) not in rule.ops):
            continue
        done = rule.rewrite(n, ctx)
        if done is None:
            continue
        if all(allowed.allows(m, ctx.opsets) for m in done.nodes):
            first = (rule.name, done)
            break
        if first is None:
            first = (rule.name, done)
    if first is None:
        return None
    key = (first[0], op_label(key_of(n)))
    runs[key] = runs.get(key, 0) + 1
    return first[1]


def _model_rules(model: Any, bad: list[Any], rules: list[NodeRule | ModelRule],
                 runs: dict[tuple[str, str], int], allowed: OpsAllowed) -> Any | None:
    for rule in rules:
        if not isinstance(rule, ModelRule):
            continue
        hits = [n for n in bad if rule.hits(n, model, allowed)]
        if not hits:
            continue
        converted = rule.apply(model, allowed)
        if converted is not None:
            for n in hits:
                key = (rule.name, op_label(key_of(n)))
                runs[key] = runs.get(key, 0) + 1
            return converted
    return None


def _no_rule(stuck: list[Any], allowed: OpsAllowed, runs: dict[tuple[str, str], int]) -> None:
    first = stuck[0]
    label = op_label(key_of(first))
    same = sum(1 for n in stuck if key_of(n) == key_of(first))
    others = sorted({op_label(key_of(n)) for n in stuck} - {label})
    raise EdgepackError(
        f"--ops-allowed {allowed.source}: no rule rewrites {label} ({same} node(s), the first "
        f"{first.name or 'unnamed'!r}) into operators it allows"
        + (f"; nor {', '.join(others)}" if others else "")
        + f"; rewritten so far: {_summary(runs)}"
    )


def _summary(runs: dict[tuple[str, str], int]) -> str:
    return ", ".join(f"{op} x{count} ({rule})" for (rule, op), count in runs.items()) or \
        "nothing"


def _refuse_subgraphs(model: Any, allowed: OpsAllowed) -> None:
    import onnx

    opsets = _opsets(model)

    def visit(graph: Any, owner: str) -> None:
        for n in graph.node:
            if owner and not allowed.allows(n, opsets):
                raise EdgepackError(
                    f"--ops-allowed {allowed.source}: {op_label(key_of(n))} inside the "
                    f"subgraph of {owner!r} is not allowed, and edgepack rewrites the main "
                    "graph only")
            for attr in n.attribute:
                subs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
                for g in subs:
                    visit(g, n.name or n.op_type)

    visit(model.graph, "")


def _check_opsets(model: Any, allowed: OpsAllowed, runs: dict[tuple[str, str], int]) -> None:
    """A reduced build of onnxruntime holds the kernel versions of the opsets its config names:
    a model at another opset (the Upsample rule moves it to 10) would miss them at run time."""
    used = {n.domain or "ai.onnx" for n in model.graph.node}
    for o in model.opset_import:
        domain = o.domain or "ai.onnx"
        listed = allowed.opsets.get(domain)
        if domain in used and listed and o.version not in listed:
            raise EdgepackError(
                f"--ops-allowed {allowed.source}: lists {domain} opset(s) "
                f"{', '.join(map(str, sorted(listed)))}, and the "
                + ("rewritten " if runs else "") + f"model is at opset {o.version}"
                + (f" (rewritten: {_summary(runs)})" if runs else "")
                + f"; add {o.version} to that line if the build has its kernels")


def _opsets(model: Any) -> dict[str, int]:
    """domain -> opset, the default domain as "" (as a node's `domain` spells it)."""
    return {("" if o.domain == "ai.onnx" else o.domain): int(o.version)
            for o in model.opset_import}


def _opset(model: Any) -> int:
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


# ---------------------------------------------------------------------------- the check


def check_rewrite(original: Path, transformed: Transformed, outputs: list[TensorSpec],
                  input_sets: list[list[InputValue]], tolerance_for: Callable[[TensorSpec],
                                                                            Tolerance],
                  out_dir: Path) -> Transformed:
    """The rewritten model against the model file as given, on every input set, with the
    outputs' own tolerances and edgepack.compare's metrics. A difference: exit 1, the rewritten
    model kept as OUT.rejected (as export keeps a model PyTorch disagrees with), no bundle."""
    from edgepack.compare import compare_output
    from edgepack.ort_session import reference_session

    rejected = out_dir.with_name(out_dir.name + ".rejected")
    tmp = out_dir.with_name(f".{out_dir.name}.rewritten-{os.getpid()}.onnx")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        try:
            data = transformed.model.SerializeToString()
        except ValueError as exc:  # protobuf's 2 GiB limit: the rewrite holds every weight
            raise EdgepackError(f"the rewritten model cannot be serialized ({short(exc)}); "
                                "--ops-allowed and --fix-dim take models under 2 GiB") from None
        tmp.write_bytes(data)
        try:
            after_session = reference_session(tmp)
        except EdgepackError as exc:
            os.replace(tmp, rejected)
            raise EdgepackError(f"the rewritten model does not load ({exc.message}); kept as "
                                f"{rejected}; this is a bug in edgepack, please report it",
                                ExitCode.INTERNAL) from None
        before_session = reference_session(original)
        failures: list[str] = []
        worst: float | None = None
        for k, values in enumerate(input_sets):
            feeds = {v.name: v.array for v in values}
            before = _run(before_session, feeds, k, "the original model")
            after = _run(after_session, feeds, k, "the rewritten model")
            for spec, b, a in zip(outputs, before, after, strict=True):
                verdict = compare_output(spec.name, np.asarray(b), np.asarray(a),
                                         tolerance_for(spec))
                err = verdict.metrics.max_abs_error if verdict.metrics else None
                if err is not None and (worst is None or err > worst):
                    worst = float(err)
                if not verdict.passed:
                    failures.append(f"input set {k}, output {spec.name!r}: {verdict.reason}")
        if failures:
            os.replace(tmp, rejected)
            raise EdgepackError(
                f"the rewritten model differs from the original beyond the tolerance "
                f"({failures[0]}" + (f"; and {len(failures) - 1} more" if failures[1:] else "")
                + f"); no bundle written, the rewritten model kept as {rejected}",
                ExitCode.MISMATCH)
    finally:
        tmp.unlink(missing_ok=True)
    return replace(transformed, record=replace(transformed.record, max_abs_error=worst))


def _run(session: Any, feeds: dict[str, np.ndarray], k: int, what: str) -> list[Any]:
    try:
        return session.run(None, feeds)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
        raise EdgepackError(f"onnxruntime could not run {what} on input set {k}: "
                            f"{short(exc)}") from None
