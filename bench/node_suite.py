"""The onnx package's node conformance suite through `edgepack pack --inputs-from` and
`edgepack run --device host --engine native`.

    python bench/node_suite.py [--only REGEX] [--limit N] [--work DIR] [--json FILE]

Every case of onnx.backend.test.case.node is written out as the onnx package writes its test
data (model.onnx, test_data_set_<k>/input_<i>.pb and output_<i>.pb), then:
1. Python onnxruntime loads and runs it on each data set; a case it cannot run (an op or type
   it has no kernel for, an opset it does not know) is skipped and counted by reason. The
   StringNormalizer cases that ask for the en_US.UTF-8 locale are counted apart: onnxruntime
   builds that locale with std::locale, which fails on a machine without it (this one has only
   C.UTF-8), whichever engine runs the model.
2. `edgepack pack MODEL --inputs-from CASE_DIR --allow-nonfinite` and `edgepack run BUNDLE
   --device host --engine native` through edgepack's CLI entry point in this process (the code
   path a user's command takes, without a Python start-up per case); the run passes when the
   native runner's outputs match Python onnxruntime's within the bundle's tolerances.

Cases with sequence, map or optional inputs or outputs are counted apart: edgepack compares
tensors. Prints one line per failure with its reason, then the counts; exits 1 when any case
that Python onnxruntime runs fails.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


@dataclass
class Outcome:
    name: str
    status: str  # "pass" | "fail" | "ort-skip" | "locale" | "not-tensor"
    reason: str = ""
    dtypes: list[str] = field(default_factory=list)


def collect(only: str | None) -> list[Any]:
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the generators divide by zero on purpose
        cases = collect_testcases()
    if only:
        cases = [c for c in cases if re.search(only, c.name)]
    return cases


def _tensor_io(model: Any) -> bool:
    return all(v.type.HasField("tensor_type")
               for v in list(model.graph.input) + list(model.graph.output))


def write_case(case: Any, root: Path) -> Path:
    """The case as the onnx package's cmd_tools writes its test data."""
    from onnx import TensorProto, numpy_helper

    directory = root / case.name
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    (directory / "model.onnx").write_bytes(case.model.SerializeToString())
    for k, (inputs, outputs) in enumerate(case.data_sets):
        data = directory / f"test_data_set_{k}"
        data.mkdir()
        for prefix, values, infos in (("input", inputs, case.model.graph.input),
                                      ("output", outputs, case.model.graph.output)):
            for j, value in enumerate(values):
                proto = value if isinstance(value, TensorProto) \
                    else numpy_helper.from_array(value, infos[j].name)
                (data / f"{prefix}_{j}.pb").write_bytes(proto.SerializeToString())
    return directory


def ort_runs(case: Any, directory: Path) -> str | None:
    """None when Python onnxruntime loads the model and runs every data set; else why not."""
    import onnxruntime as ort

    from edgepack.ort_session import prepare, run_session
    from edgepack.tensors import read_tensor

    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    try:
        session = ort.InferenceSession(str(directory / "model.onnx"), opts,
                                       providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        for data in sorted(directory.glob("test_data_set_*")):
            feeds = {}
            for j, path in enumerate(sorted(data.glob("input_*.pb"))):
                name, array = read_tensor(path)
                feeds[name or names[j]] = array
            run_session(session, prepare(session, feeds))
    except Exception as exc:  # onnxruntime's own errors: the reason is all we keep
        return " ".join(str(exc).split())[:200]
    return None


def _cli(*args: str | Path) -> tuple[int, str, str]:
    from edgepack.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, out.getvalue(), err.getvalue()


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def pack_and_run(directory: Path, bundle: Path) -> str | None:
    """None when pack and the native run pass; else the reason."""
    code, _, err = _cli("pack", directory / "model.onnx", "-o", bundle, "--inputs-from",
                        directory, "--allow-nonfinite", "--force")
    if code != 0:
        return f"pack exit {code}: {_last_line(err)}"
    code, out, err = _cli("run", bundle, "--device", "host", "--engine", "native", "--warmup",
                          "0", "--iterations", "1", "--json")
    if code == 0:
        return None
    reasons = []
    with contextlib.suppress(ValueError, KeyError, TypeError):
        for s in json.loads(out)["sets"]:
            reasons += [f"{v['name']}: {v['reason']}" for v in s["verdicts"] if not v["passed"]]
    return f"run exit {code}: " + ("; ".join(reasons)[:300] or _last_line(err))


def _dtypes(model: Any) -> list[str]:
    from edgepack.tensors import dtype_name

    return sorted({dtype_name(v.type.tensor_type.elem_type)
                   for v in list(model.graph.input) + list(model.graph.output)
                   if v.type.HasField("tensor_type")})


def run_suite(cases: list[Any], work: Path, progress: bool,
              log: Path | None = None) -> list[Outcome]:
    outcomes = []
    for n, case in enumerate(cases, 1):
        if progress and n % 100 == 0:
            print(f"... {n} of {len(cases)}", file=sys.stderr, flush=True)
        outcomes.append(run_case(case, work))
        if log is not None:
            # One line per case as it ends: a long run stopped early still says what it found.
            with log.open("a") as f:
                f.write(json.dumps(asdict(outcomes[-1])) + "\n")
    return outcomes


def run_case(case: Any, work: Path) -> Outcome:
    kinds = _dtypes(case.model)
    if not _tensor_io(case.model):
        return Outcome(case.name, "not-tensor", "sequence, map or optional I/O")
    directory = write_case(case, work / "cases")
    try:
        why = ort_runs(case, directory)
        if why is not None:
            status = "locale" if "locale" in why.lower() else "ort-skip"
            return Outcome(case.name, status, why, kinds)
        why = pack_and_run(directory, work / "bundles" / case.name)
        shutil.rmtree(work / "bundles" / case.name, ignore_errors=True)
        return Outcome(case.name, "fail" if why else "pass", why or "", kinds)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="run the cases whose name matches this regex")
    parser.add_argument("--start", type=int, default=0,
                        help="skip the first N cases (to split the suite between processes)")
    parser.add_argument("--limit", type=int, help="run N cases only")
    parser.add_argument("--log", type=Path, help="append each case's outcome here as JSON lines")
    parser.add_argument("--work", type=Path, help="working directory (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="also write every case's outcome here")
    args = parser.parse_args(argv)

    cases = collect(args.only)[args.start:]
    if args.limit:
        cases = cases[: args.limit]
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="node-suite-") as tmp:
        outcomes = run_suite(cases, args.work or Path(tmp), progress=True, log=args.log)
    took = time.monotonic() - t0

    counts = Counter(o.status for o in outcomes)
    for o in outcomes:
        if o.status == "fail":
            print(f"FAIL {o.name} [{', '.join(o.dtypes)}]: {o.reason}")
    skipped = Counter(re.sub(r"\d+", "N", o.reason)[:90] for o in outcomes
                      if o.status == "ort-skip")
    ran = counts["pass"] + counts["fail"]
    print(f"{len(outcomes)} node cases in {took:.0f} s: Python onnxruntime runs {ran}; "
          f"{counts['pass']} pass, {counts['fail']} fail through pack + native run")
    print(f"  skipped: {counts['ort-skip']} Python onnxruntime cannot run, "
          f"{counts['locale']} need the en_US.UTF-8 locale (StringNormalizer; not on this "
          f"machine), {counts['not-tensor']} have sequence/map/optional I/O")
    for reason, n in skipped.most_common(8):
        print(f"    {n:4d} x {reason}")
    passed_types = Counter(t for o in outcomes if o.status == "pass" for t in o.dtypes)
    print("  passing cases by dtype: " + ", ".join(f"{t} {n}" for t, n in
                                                    sorted(passed_types.items())))
    if args.json:
        args.json.write_text(json.dumps([asdict(o) for o in outcomes], indent=1) + "\n")
    return 1 if counts["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())
