"""`edgepack check`: which execution providers take a model, and how much of it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgepack.cli.app import app
from edgepack.cli.options import JsonOpt
from edgepack.cli.render import console, emit_json, note
from edgepack.providers import PROVIDERS  # the table alone: no onnx or onnxruntime import

if TYPE_CHECKING:
    from edgepack.check import CheckReport


@app.command("check")
def check(
    target: Annotated[Path, typer.Argument(help="An ONNX model file or a bundle directory.",
                                           show_default=False)],
    ep: Annotated[str | None, typer.Option(
        "--ep", help=f"Providers to check, a comma list of {', '.join(PROVIDERS)} "
                     "(default: the native ones; the browser's wasm, webgl, webgpu and onnxjs "
                     "only when named).")] = None,
    probe: Annotated[bool, typer.Option(
        "--probe", help="Probe every operator on the browser's WASM backend now (Chromium; "
                        "once per runtime version), not only the model's.")] = False,
    write_config: Annotated[Path | None, typer.Option(
        "--write-config", help="Write the required_operators.config of a reduced onnxruntime "
                               "build here.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Every operator with its domain, version and count; per provider, whether it runs the
    model fully, partly (nodes, partitions) or not, and why; the mobile package; the
    required_operators.config; the --fix-dim options NNAPI and CoreML need.

    A static prediction from onnxruntime's own tables: `deploy`/`bench --profile` report what
    ran where on a device. The browser backends (wasm, webgl, webgpu, onnxjs) are checked when
    --ep names them; wasm's list is a probe run in Chromium for the operators not probed yet.
    Exit 0 whatever the verdicts; 2 for an unreadable model or an unknown provider; 3 when the
    probe cannot run (no Chromium)."""
    from edgepack.check import PROBE_ALL, PROBE_MISSING, check_path, parse_check_eps
    from edgepack.check import write_config as write

    eps = parse_check_eps(ep)
    report = check_path(target, eps, PROBE_ALL if probe else PROBE_MISSING, note)
    if write_config is not None:
        write(report, write_config)
        note(f"wrote {write_config}")
    if json_out:
        emit_json(report.to_json())
        return
    _render(report)


def _render(report: CheckReport) -> None:
    from rich.markup import escape
    from rich.table import Table

    out = console()
    opsets = ", ".join(f"{d} {v}" for d, v in sorted(report.opset_imports.items()))
    what = f"bundle {report.bundle} ({report.model})" if report.bundle else report.model
    out.print(f"{escape(what)}: {report.nodes} node(s), IR {report.ir_version}, opsets "
              f"{escape(opsets)}; onnxruntime {report.onnxruntime_version}")
    eps = [e.ep for e in report.eps]
    table = Table(title="operators", title_justify="left")
    for col in ("domain", "operator", "version", "count", *eps):
        table.add_column(col, justify="right" if col in ("version", "count") else "left")
    for op in report.operators:
        cells = []
        for name in eps:
            s = op.support[name]
            cells.append("[green]yes[/green]" if s.supported
                         else f"[red]no[/red]: {escape(s.why)}")
        table.add_row(escape(op.domain), escape(op.op_type), str(op.opset), str(op.count),
                      *cells)
    out.print(table)
    for e in report.eps:
        colour = {"runs fully": "green", "runs partly": "yellow",
                  "unknown": "yellow"}.get(e.verdict, "red")
        out.print(f"[{colour}]{e.ep}[/{colour}]: {escape(e.summary)}")
        if e.partitioning.partition_sizes and e.ep != "cpu" and not e.whole_graph:
            out.print(f"  partition sizes: {e.partitioning.partition_sizes}")
        for reason in e.reasons:
            out.print(f"  {escape(reason)}")
        for caveat in e.caveats:
            out.print(f"  unchecked condition: {escape(caveat)}")
    out.print(f"analysed: {escape(report.analyzed_graph)}")
    for line in report.notes:
        out.print(f"note: {escape(line)}")
    mobile = "yes" if report.mobile_package.runs else "no"
    out.print(f"onnxruntime mobile (Android/iOS package): {mobile}: "
              f"{escape(report.mobile_package.why)}")
    for dim in report.fix_dims:
        size = ("(1 assumed: pack a bundle, or give the real size)" if dim.guessed
                else "(the bundle's input size)")
        out.print(f"symbolic dim {escape(dim.name)} of {escape(', '.join(dim.inputs))}: pass "
                  f"`{escape(dim.option)}` to pack {size}")
    if report.required_operators_config:
        out.print("required_operators.config:")
        out.print(escape(report.required_operators_config.rstrip()), soft_wrap=True)
