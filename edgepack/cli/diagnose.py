"""`edgepack diagnose`: which node goes wrong on a device (the work is edgepack.diagnose)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from edgepack.cli.app import app
from edgepack.cli.devices import ServerOpt
from edgepack.cli.options import EpOpt, JsonOpt
from edgepack.errors import EdgepackError, ExitCode


@app.command()
def diagnose(
    bundle: Annotated[Path, typer.Argument(help="A bundle directory (from `edgepack pack`).")],
    device: Annotated[str, typer.Option(
        "--device", help="Serial of an adb device, host (onnxruntime on this machine), or "
        "browser (headless Chromium).")],
    ep: EpOpt = "cpu",
    budget: Annotated[float, typer.Option(
        "--budget", help="MB of intermediate tensors one run may expose: below it all at "
        "once, above it a bisection over the nodes (one device run per step).")] = 256.0,
    input_set: Annotated[int, typer.Option(
        "--set", help="The bundle's input set to run.")] = 0,
    timeout: Annotated[float, typer.Option(
        "--timeout", help="Seconds one runner invocation may take.")] = 600.0,
    against_float: Annotated[Path | None, typer.Option(
        "--against-float", help="A quantized bundle on the host (--device host): which layer "
        "loses the most accuracy in int8 against FLOAT_MODEL, the model it was packed from.")
    ] = None,
    report: Annotated[Path | None, typer.Option(
        "--report", help="Also write an HTML report here: the error along the graph plotted "
        "per node, the first divergent node marked.")] = None,
    server: ServerOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Find the first node, in topological order, whose output on the device diverges from the
    host's (onnxruntime CPU, one thread), with its inputs' errors, its PyTorch module (for an
    `edgepack export`ed model) and the error along the graph after it. Exit 0: nothing diverges,
    1: a divergence found, 2: bad input, 3: device failure. With --against-float, a quantized
    bundle's int8 loss per layer against its float model, on the host."""
    import sys

    from edgepack.bundle import load_bundle
    from edgepack.diagnose import diagnose as run_diagnosis
    from edgepack.runner.result import RunConfig

    if not (budget > 0 and budget < 1e9):
        raise EdgepackError(f"--budget {budget}: expected more than 0 MB", ExitCode.BAD_INPUT)
    if report is not None and (report.is_dir() or not report.parent.is_dir()):
        raise EdgepackError(f"--report {report}: expected a file in an existing directory",
                            ExitCode.BAD_INPUT)
    if against_float is not None:
        if report is not None:
            raise EdgepackError("--report plots a device diagnosis; --against-float has none "
                                "(use --json)", ExitCode.BAD_INPUT)
        _against_float(bundle, device, against_float, json_out)
        return
    config = RunConfig(warmup=0, iterations=1, ep=ep, timeout_s=timeout, profile=ep != "cpu")
    b = load_bundle(bundle)
    if device == "host":
        from edgepack.executors import PythonExecutor

        executor = PythonExecutor()
    elif device == "browser":
        from edgepack.web.executor import BrowserExecutor

        executor = BrowserExecutor()
    else:
        from edgepack.cli.devices import _server
        from edgepack.deploy import DeviceExecutor
        from edgepack.devices.adb import resolve_device

        executor = DeviceExecutor(resolve_device(device, _server(server)))
    quiet = json_out or not sys.stderr.isatty()
    result = run_diagnosis(b, executor, config, int(budget * 1e6), input_set,
                           None if quiet else lambda text: typer.echo(text, err=True))
    if report is not None:
        from edgepack.report.diagnose_report import write_diagnose_report

        write_diagnose_report(result, report)
    if json_out:
        from edgepack.serialize import to_jsonable

        typer.echo(json.dumps(to_jsonable(result), indent=1))
    else:
        _render(result)
        if report is not None:
            typer.echo(f"report: {report}")
    if result.diverged:
        raise typer.Exit(int(ExitCode.MISMATCH))


def _against_float(bundle: Path, device: str, model: Path, json_out: bool) -> None:
    from edgepack.bundle import load_bundle
    from edgepack.diagnose import against_float

    if device != "host":
        raise EdgepackError("--against-float compares on this machine: pass --device host",
                            ExitCode.BAD_INPUT)
    r = against_float(load_bundle(bundle), model)
    if json_out:
        from edgepack.serialize import to_jsonable

        typer.echo(json.dumps(to_jsonable(r), indent=1))
        return
    typer.echo(f"{r.bundle} against {r.float_model}, {r.sets} input set(s), SQNR in dB "
               "(higher is better)")
    w = r.worst
    if w is not None:
        typer.echo(f"loses the most: {w.node} ({w.op_type}), tensor {w.tensor}, module "
                   f"{w.module or 'unknown'}: {_g(w.drop_db)} dB lost there, "
                   f"{_g(w.float_sqnr_db)} dB against the float model after it")
    typer.echo(f"  {'tensor':<28} {'op':<12} {'vs float':>9} {'lost':>6}  module")
    for x in r.layers:
        typer.echo(f"  {x.tensor[:28]:<28} {(x.op_type or 'input')[:12]:<12} "
                   f"{_g(x.float_sqnr_db):>9} {_g(x.drop_db):>6}  {x.module or ''}")


def _g(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _render(r: object) -> None:
    from edgepack.diagnose import Diagnosis

    assert isinstance(r, Diagnosis)
    typer.echo(f"strategy: {r.strategy}, {r.device_runs} device run(s) on {r.device}, "
               f"{r.nodes} node(s), {r.exposed_bytes / 1e6:.1f} MB of intermediate tensors "
               f"(budget {r.budget_bytes / 1e6:.0f} MB), {r.wall_s:.1f} s")
    for text in r.notes:
        typer.echo(f"note: {text}")
    for held in r.not_searched:
        names = ", ".join(held.inner_nodes[:20]) + (", ..." if len(held.inner_nodes) > 20 else "")
        typer.echo(f"not searched, inside {held.node} ({held.op_type}): {names}")
    d = r.first_divergent
    if d is None:
        typer.echo("nothing diverges: every tensor compared is within its tolerance")
        return
    m = d.metrics
    typer.echo(f"first divergent node: {d.node} ({d.op_type}, #{d.index}), output {d.output}")
    typer.echo(f"  module: {d.module or 'unknown (no node map in the bundle)'}")
    if d.provider:
        typer.echo(f"  provider: {d.provider}")
    if m is not None:
        typer.echo(f"  output: max abs {_g(m.max_abs_error)}, max rel {_g(m.max_rel_error)}, "
                   f"cosine {_g(m.cosine_similarity)}, SNR {_g(m.snr_db)} dB, "
                   f"{m.mismatched}/{m.total} beyond tolerance")
    for c in d.inputs:
        if c.metrics is None:
            typer.echo(f"  input {c.tensor}: {c.reason}")
            continue
        typer.echo(f"  input {c.tensor}: {'within' if c.within else 'DIVERGES'} "
                   f"(max abs {_g(c.metrics.max_abs_error)})")
    typer.echo("error along the graph:")
    typer.echo(f"  {'#':>4}  {'node':<32} {'op':<14} {'max abs':>10} {'max rel':>10}  state")
    for row in r.table:
        typer.echo(f"  {row.index:>4}  {row.node[:32]:<32} {row.op_type[:14]:<14} "
                   f"{_g(row.max_abs_error):>10} {_g(row.max_rel_error):>10}  "
                   f"{'ok' if row.within else 'DIVERGES'}")
