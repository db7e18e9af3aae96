"""What onnxruntime-web's WASM backend runs, found by running it.

onnxruntime-web's WASM backend is onnxruntime's CPU kernels compiled to WebAssembly, possibly a
reduced set, and the package publishes no list of them. So `edgepack check --ep wasm` asks the
browser: per operator, one of the onnx package's own node test models (the cases
`onnx.backend.test.case.node` generates, the ones bench/node_suite.py runs natively; single-node
models with their inputs and expected outputs) is run once through `Browser.run`, and what ran
is cached per runtime version and backend in cache_root()/web/probe-<runtime>-<version>-<ep>.json
(written whole under a temporary name, then renamed). A check probes the operators of its model
that the cache lacks (the first check that needs them); `check --probe` probes every operator
onnx has a node test for. A later check, or `pack --ops-allowed wasm`, reads the cache without a
browser.

An operator "runs" when a session is created and a run returns; its outputs are compared with
onnx's expected ones and a difference is kept as a caveat, not a refusal (the kernel exists).
Up to three cases per operator are tried (the float32 ones first): a case can fail on its
input type while the operator has a kernel. onnx stamps a case with the operator's newest
version, which may be of an opset the runtime calls "under development": such a case is tried
again stamped with the operator's previous version.
"""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepack.errors import EdgepackError, ExitCode
from edgepack.fileio import atomic_write_text, cache_root
from edgepack.providers import OpKey, OpRule, forget_tables, op_key, op_name
from edgepack.web.runtime import ORT_WEB, PINS

if TYPE_CHECKING:
    from edgepack.web.browser import Browser

Log = Callable[[str], None]
PROBE_FORMAT = 1
CASES_PER_OP = 3
PROBE_EPS = ("wasm",)  # webgpu falls back to the WASM kernels per node: a run proves nothing
_SAVE_EVERY = 10  # operators between two writes of the cache, so an interrupted probe keeps most


@dataclass(frozen=True)
class OpProbe:
    op: str  # "ai.onnx:Add"
    ran: bool
    case: str  # the onnx node test it ran (or the last one tried); "" when onnx has none
    version: int  # the operator's version in that case's model
    why: str = ""  # the runtime's words when it did not run; a difference when it ran


@dataclass(frozen=True)
class ProbeCache:
    runtime: str
    runtime_version: str
    ep: str
    chromium: str
    ops: dict[str, OpProbe] = field(default_factory=dict)
    format: int = PROBE_FORMAT


def _quiet(_: str) -> None:
    pass


def cache_path(ep: str) -> Path:
    pin = PINS[ORT_WEB]
    return cache_root() / "web" / f"probe-{pin.name}-{pin.version}-{ep}.json"


def load_cache(ep: str) -> ProbeCache | None:
    """The probe of `ep` for the pinned runtime version; None when none has run (or the file is
    of another version or format: a new pin is probed anew)."""
    path = cache_path(ep)
    try:
        doc = json.loads(path.read_text())
        pin = PINS[ORT_WEB]
        if (doc.get("format") != PROBE_FORMAT or doc.get("runtime_version") != pin.version
                or doc.get("ep") != ep):
            return None
        return ProbeCache(doc["runtime"], doc["runtime_version"], doc["ep"], doc["chromium"],
                          {k: OpProbe(**v) for k, v in doc["ops"].items()})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a damaged cache is probed anew, never trusted


def _save(cache: ProbeCache) -> None:
    path = cache_path(cache.ep)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(asdict(cache), indent=1, sort_keys=True) + "\n")
    forget_tables()


# ---------------------------------------------------------------------------- what providers read


def probed_rules(ep: str) -> dict[OpKey, OpRule]:
    cache = load_cache(ep)
    if cache is None:
        return {}
    rules = {}
    for name, p in cache.ops.items():
        if p.ran:
            caveat = f"probed: onnx's {p.case} (version {p.version}) ran"
            rules[_key(name)] = OpRule(caveat=f"{caveat}; {p.why}" if p.why else caveat)
    return rules


def probe_why(ep: str, key: OpKey) -> str | None:
    cache = load_cache(ep)
    p = cache.ops.get(op_name(key)) if cache is not None else None
    if p is None:
        return (f"not probed yet: `edgepack check MODEL --ep {ep}` probes a model's operators "
                "in Chromium, `--probe` every operator")
    if not p.case:
        return "onnx has no node test to probe it with"
    return f"did not run in the probe ({p.case}: {p.why})"


def require_probe(ep: str) -> None:
    if load_cache(ep) is None:
        raise EdgepackError(f"the {ep} operator list comes from a browser probe that has not run "
                            f"yet: run `edgepack check --ep {ep} --probe` (or check a model with "
                            f"--ep {ep}) first", ExitCode.BAD_INPUT)


def _key(name: str) -> OpKey:
    domain, op = name.split(":", 1)
    return op_key("" if domain == "ai.onnx" else domain, op)


# ---------------------------------------------------------------------------- the cases


@functools.cache
def node_cases() -> dict[OpKey, list[Any]]:
    """onnx's node test cases of one node and tensor inputs/outputs, per operator, the
    float32 ones first, then the simplest (shortest) names. Once per process: onnx generates
    every case at once (half a minute here) and refuses to generate them twice."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the generators divide by zero on purpose
        cases = collect_testcases()
    found: dict[OpKey, list[Any]] = {}
    for case in cases:
        graph = case.model.graph
        if len(graph.node) != 1 or not case.data_sets:
            continue
        if not all(v.type.HasField("tensor_type") for v in [*graph.input, *graph.output]):
            continue
        n = graph.node[0]
        found.setdefault(op_key(n.domain, n.op_type), []).append(case)
    for group in found.values():
        group.sort(key=lambda c: (not _all_of(c, _FLOAT32), not _all_of(c, _COMMON),
                                  len(c.name), c.name))
    return found


_FLOAT32 = frozenset({1})
# float, uint8, int8, int32, int64, bool, float16, double: what any runtime's kernels have first.
_COMMON = frozenset({1, 2, 3, 6, 7, 9, 10, 11})


def _all_of(case: Any, types: frozenset[int]) -> bool:
    graph = case.model.graph
    return all(v.type.tensor_type.elem_type in types for v in [*graph.input, *graph.output])


def _at_older_opset(model: Any) -> Any | None:
    """The single-node model stamped with the operator's previous version, for a case onnx
    generated at an opset the runtime calls "under development" (the operator itself is older):
    None when there is none."""
    import onnx
    import onnx.defs

    n = model.graph.node[0]
    opset = next((o.version for o in model.opset_import if o.domain == n.domain), None)
    if opset is None or opset <= 1:
        return None
    try:
        older = int(onnx.defs.get_schema(n.op_type, opset - 1, n.domain).since_version)
    except Exception:  # noqa: BLE001 - no earlier version of the operator
        return None
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for o in copy.opset_import:
        if o.domain == n.domain:
            o.version = older
    return copy


def _version(model: Any) -> int:
    import onnx.defs

    n = model.graph.node[0]
    opset = next((o.version for o in model.opset_import if o.domain == n.domain), 0)
    try:
        return int(onnx.defs.get_schema(n.op_type, opset, n.domain).since_version)
    except Exception:  # noqa: BLE001 - an operator onnx's registry does not know
        return int(opset)


# ---------------------------------------------------------------------------- the probe


def probe(ep: str, ops: Iterable[OpKey] | None = None, *, browser: Browser | None = None,
          log: Log = _quiet) -> ProbeCache:
    """Probe the operators `ops` (None: every one onnx has a node test for) that the cache
    lacks, save and return the cache. A browser is opened (and closed) if none is given."""
    if ep not in PROBE_EPS:
        raise EdgepackError(f"--probe: only {', '.join(PROBE_EPS)} is probed (onnxruntime-web "
                            f"runs what {ep} lacks on the WASM kernels, so a run there proves "
                            "nothing)", ExitCode.BAD_INPUT)
    cache = load_cache(ep)
    cases = node_cases()
    wanted = list(cases) if ops is None else list(dict.fromkeys(ops))
    todo = [k for k in wanted if cache is None or op_name(k) not in cache.ops]
    if not todo and cache is not None:
        return cache
    if browser is None:
        from edgepack.web.browser import open_browser

        with open_browser(log=log) as opened:
            return _probe(ep, todo, cases, cache, opened, log)
    return _probe(ep, todo, cases, cache, browser, log)


def _probe(ep: str, todo: list[OpKey], cases: dict[OpKey, list[Any]],
           cache: ProbeCache | None, browser: Browser, log: Log) -> ProbeCache:
    import tempfile

    pin = PINS[ORT_WEB]
    results = dict(cache.ops) if cache is not None else {}
    log(f"probing {len(todo)} operator(s) on onnxruntime-web {pin.version} ({ep}) in "
        f"Chromium {browser.info.chromium}")
    with tempfile.TemporaryDirectory(prefix="edgepack-probe-") as tmp:
        for i, key in enumerate(todo, 1):
            results[op_name(key)] = _probe_op(ep, key, cases.get(key, []), browser, Path(tmp))
            if i % _SAVE_EVERY == 0:
                _save(ProbeCache(ORT_WEB, pin.version, ep, browser.info.chromium, results))
    done = ProbeCache(ORT_WEB, pin.version, ep, browser.info.chromium, results)
    _save(done)
    ran = sum(1 for k in todo if results[op_name(k)].ran)
    log(f"probed {len(todo)} operator(s): {ran} ran; cached in {cache_path(ep)}")
    return done


def _probe_op(ep: str, key: OpKey, cases: list[Any], browser: Browser, tmp: Path) -> OpProbe:
    first: OpProbe | None = None  # the first case's failure: the float32 one, when any
    for case in cases[:CASES_PER_OP]:
        model = case.model
        for _attempt in range(2):
            path = tmp / f"{case.name}.onnx"
            path.write_bytes(model.SerializeToString())
            graph = model.graph
            inputs, expected = case.data_sets[0]
            feeds = {v.name: _array(a) for v, a in zip(graph.input, inputs, strict=False)}
            version = _version(model)
            try:
                run = browser.run(path, [feeds], ep=ep, threads=1, iterations=1,
                                  timeout_s=60.0)
            except EdgepackError as exc:  # WebRunError, or an input the runtime cannot take
                failed = OpProbe(op_name(key), False, case.name, version, exc.message[:300])
                first = first or failed
                older = _at_older_opset(model) if "under development" in exc.message else None
                if older is None:
                    break
                model = older
                continue
            finally:
                path.unlink(missing_ok=True)
            return OpProbe(op_name(key), True, case.name, version,
                           _difference(run.outputs[0], graph.output, expected, case))
    return first or OpProbe(op_name(key), False, "", 0)


def _array(value: Any) -> Any:
    import numpy as np
    from onnx import TensorProto, numpy_helper

    return numpy_helper.to_array(value) if isinstance(value, TensorProto) else np.asarray(value)


def _difference(got: dict[str, Any], outputs: Any, expected: list[Any], case: Any) -> str:
    import numpy as np

    for info, want in zip(outputs, expected, strict=False):
        have = got.get(info.name)
        want = _array(want)
        if have is None or have.shape != want.shape:
            return f"output {info.name!r} differs in shape from onnx's expected"
        if want.dtype.kind in "fc":
            close = np.allclose(have, want, rtol=max(case.rtol, 1e-3), atol=max(case.atol, 1e-5),
                                equal_nan=True)
        else:
            close = np.array_equal(have, want)
        if not close:
            return f"output {info.name!r} differs from onnx's expected values"
    return ""
