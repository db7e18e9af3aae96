"""Commands of the host half: export, pack, inspect, run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgepack.cli.app import app
from edgepack.cli.options import (
    EpOpt,
    IterationsOpt,
    JsonOpt,
    MinSecondsOpt,
    OptimizationOpt,
    ReportOpt,
    ThreadsOpt,
    WarmupOpt,
    number,
)
from edgepack.cli.render import console, emit_json, fmt, note, size
from edgepack.limits import MAX_SEED

# ---------------------------------------------------------------------------- export


@app.command()
def export(
    model: Annotated[str, typer.Argument(
        help="A callable returning an nn.Module: path/to/file.py:make_model or pkg.module:fn.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The ONNX file to write.")],
    inputs: Annotated[list[str], typer.Option(
        "--input", help="NAME:SHAPE:DTYPE, repeatable, e.g. input:1x3x32x32:float32.")] = [],  # noqa: B006
    dynamic: Annotated[list[str], typer.Option(
        "--dynamic", help="NAME:AXIS:LABEL, a dynamic axis, e.g. input:0:batch.")] = [],  # noqa: B006
    output_names: Annotated[list[str], typer.Option(
        "--output-name", help="Name the model's outputs, in order (repeatable).")] = [],  # noqa: B006
    weights: Annotated[Path | None, typer.Option(
        "--weights", help="A state dict, loaded with torch.load(weights_only=True).")] = None,
    strict: Annotated[bool, typer.Option(
        "--strict/--no-strict", help="Require the state dict's keys to match exactly.")] = True,
    opset: Annotated[int, typer.Option("--opset", min=1, help="ONNX opset to ask for.")] = 17,
    exporter: Annotated[str, typer.Option(
        "--exporter", help="dynamo (torch.export) or torchscript (tracing).")] = "dynamo",
    seed: Annotated[int, typer.Option(
        "--seed", min=0, max=MAX_SEED, help="Seed of the validation inputs.")] = 0,
    rtol: Annotated[float, typer.Option(
        "--rtol", callback=number(0), help="Validation relative tolerance.")] = 1e-3,
    atol: Annotated[float, typer.Option(
        "--atol", callback=number(0), help="Validation absolute tolerance.")] = 1e-5,
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUTPUT.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Export a PyTorch model to ONNX and validate it against PyTorch (exit 1 if they differ)."""
    from edgepack.bundle import Tolerance
    from edgepack.errors import ExitCode
    from edgepack.export import ExportOptions
    from edgepack.export import export as run_export
    from edgepack.option_values import parse_dynamic, parse_export_input

    options = ExportOptions(
        model_ref=model,
        inputs=[parse_export_input(t) for t in inputs],
        output=output,
        weights=weights,
        strict=strict,
        dynamic=[parse_dynamic(t) for t in dynamic],
        output_names=list(output_names),
        opset=opset,
        exporter=exporter,
        seed=seed,
        tolerance=Tolerance(rtol=rtol, atol=atol),
        force=force,
    )
    result = run_export(options, progress=None if json_out else note)
    if json_out:
        emit_json(result)
    else:
        out = console()
        out.print(f"exporter: {result.exporter_detail}, torch {result.torch_version}, "
                  f"opset {result.opset}", markup=False)
        from rich.markup import escape

        for text in result.notes:
            out.print(f"[yellow]note:[/yellow] {escape(text)}")
        for text in result.warnings:
            out.print(f"[yellow]warning:[/yellow] {escape(text)}", soft_wrap=True)
        from edgepack.cli.render import verdict_table

        for case in result.validation:
            shapes = ", ".join(f"{k} {v}" for k, v in case.shapes.items())
            out.print(verdict_table(case.verdicts, title=f"PyTorch vs onnxruntime: {case.label} "
                                                          f"({shapes})"))
        if result.passed:
            out.print(f"wrote {result.path} ({size(result.size_bytes)}) in "
                      f"{result.export_s:.1f} s")
        else:
            out.print(f"[red]onnxruntime and PyTorch disagree beyond rtol={rtol:g} "
                      f"atol={atol:g}[/red]; the model was kept as {result.path} for inspection")
    if not result.passed:
        raise typer.Exit(int(ExitCode.MISMATCH))


# ---------------------------------------------------------------------------- pack


@app.command()
def pack(
    model: Annotated[Path, typer.Argument(help="An ONNX model (from export or anywhere).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The bundle directory to make.")],
    inputs: Annotated[list[str], typer.Option(
        "--input", help="NAME=FILE (.npy, .pb, .png, .jpg); repeat a name for more input sets.")
    ] = [],  # noqa: B006
    inputs_from: Annotated[list[Path], typer.Option(
        "--inputs-from", help="A directory of input_<i>.pb files, or of test_data_set_<k>/ "
        "directories (repeatable).")] = [],  # noqa: B006
    random_sets: Annotated[int, typer.Option(
        "--random-sets", min=0, help="Add N input sets of seeded random values.")] = 0,
    seed: Annotated[int, typer.Option(
        "--seed", min=0, max=MAX_SEED, help="Seed for random inputs.")] = 0,
    dims: Annotated[list[str], typer.Option(
        "--dim", help="LABEL=SIZE for a symbolic dimension of random inputs (default 1).")
    ] = [],  # noqa: B006
    resize: Annotated[str | None, typer.Option(
        "--resize", help="Resize images to WxH (default: the model's fixed size).")] = None,
    color: Annotated[str, typer.Option(
        "--color", help="rgb, bgr, gray, or y (the Y of YCbCr).")] = "rgb",
    layout: Annotated[str, typer.Option("--layout", help="nchw or nhwc.")] = "nchw",
    scale: Annotated[float, typer.Option(
        "--scale", callback=number(nonzero=True), help="Multiply pixel values by this first.")
    ] = 1.0 / 255.0,
    mean: Annotated[str, typer.Option(
        "--mean", help="Subtract, per channel (comma-separated).")] = "0",
    std: Annotated[str, typer.Option(
        "--std", help="Then divide, per channel (comma-separated).")] = "1",
    name: Annotated[str | None, typer.Option(
        "--name", help="Bundle name (default: the model file's stem).")] = None,
    rtol: Annotated[float | None, typer.Option(
        "--rtol", callback=number(0),
        help="Relative tolerance for every output (default by dtype).")] = None,
    atol: Annotated[float | None, typer.Option(
        "--atol", callback=number(0),
        help="Absolute tolerance for every output (default by dtype).")] = None,
    tolerance: Annotated[list[str], typer.Option(
        "--tolerance", help="NAME=RTOL,ATOL for one output (repeatable).")] = [],  # noqa: B006
    allow_nonfinite: Annotated[bool, typer.Option(
        "--allow-nonfinite", help="Pack expected outputs holding NaN or inf (they must then "
        "match exactly); refused otherwise.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing bundle.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Pack an ONNX model, its inputs and the host's expected outputs into a bundle."""
    from edgepack.bundle import PackOptions, Tolerance
    from edgepack.bundle import pack as run_pack
    from edgepack.inputs import ImageOptions, InputRequest
    from edgepack.limits import check_tensor_size
    from edgepack.option_values import (
        parse_dim,
        parse_floats,
        parse_named_file,
        parse_resize,
        parse_tolerance,
    )

    tolerances = {t.name: Tolerance(rtol=t.rtol, atol=t.atol)
                  for t in map(parse_tolerance, tolerance)}
    dim_sizes = dict(map(parse_dim, dims))
    means, stds = parse_floats("--mean", mean), parse_floats("--std", std)
    size_wh = parse_resize(resize) if resize else None
    if size_wh is not None:
        channels = 1 if color in ("gray", "y") else 3
        check_tensor_size(f"--resize {resize}", (1, channels, size_wh[1], size_wh[0]), 1)
    request = InputRequest(
        named=[parse_named_file(t) for t in inputs],
        dirs=list(inputs_from),
        random_sets=random_sets,
        seed=seed,
        dims=dim_sizes,
        image=ImageOptions(
            resize=size_wh,
            color=color,
            layout=layout,
            scale=scale,
            mean=means,
            std=stds,
        ),
    )
    options = PackOptions(name=name, tolerances=tolerances, rtol=rtol, atol=atol, force=force,
                          allow_nonfinite=allow_nonfinite)
    bundle = run_pack(model, output, request, options)
    if json_out:
        emit_json({"path": bundle.path, "sha256": bundle.sha256, "manifest": bundle.manifest})
        return
    m = bundle.manifest
    console().print(
        f"packed {bundle.path}: {len(m.test_sets)} input set(s), {m.model.external_tensors} "
        f"weight tensor(s) in {m.model.external_data}, {size(bundle.size_bytes())} in all",
        markup=False,
    )


# ---------------------------------------------------------------------------- inspect


@app.command()
def inspect(
    bundle: Annotated[Path, typer.Argument(help="A bundle directory.")],
    verify: Annotated[bool, typer.Option(
        "--verify/--no-verify", help="Check every file against its sha256.")] = True,
    json_out: JsonOpt = False,
) -> None:
    """Show a bundle's manifest, files, inputs and outputs."""
    from rich.table import Table

    from edgepack.bundle import load_bundle

    b = load_bundle(bundle, verify=verify)
    m = b.manifest
    if json_out:
        emit_json({"path": b.path, "sha256": b.sha256, "verified": verify, "manifest": m})
        return
    out = console()
    summary = Table(show_header=False, title=f"bundle {b.path}", title_justify="left")
    summary.add_column(style="bold")
    summary.add_column()
    opsets = ", ".join(f"{d} {v}" for d, v in sorted(m.model.opset_imports.items()))
    origin = (f"edgepack export of {m.provenance.export.get('model')}"
              if m.provenance.export else f"ONNX file {m.provenance.file}")
    for key, value in (
        ("name", m.name),
        ("bundle sha256", b.sha256),
        ("files", "verified" if verify else "not verified"),
        ("model", f"{m.model.file} + {m.model.external_data} (IR {m.model.ir_version}; {opsets})"),
        ("producer", m.model.producer or "-"),
        ("weights", f"{m.model.external_tensors} external, {m.model.inline_tensors} inline"),
        ("origin", f"{origin} (sha256 {m.provenance.sha256[:16]}...)"),
        ("packed by", f"edgepack {m.edgepack_version}, onnxruntime {m.onnxruntime_version}"),
    ):
        summary.add_row(key, value)
    out.print(summary)

    io_table = Table(title="inputs and outputs", title_justify="left")
    for col in ("kind", "name", "dtype", "shape", "rtol / atol"):
        io_table.add_column(col)
    for spec in m.inputs:
        io_table.add_row("input", spec.name, spec.dtype, spec.shape_text(), "")
    for o in m.outputs:
        io_table.add_row("output", o.name, o.dtype,
                         "[" + ", ".join("?" if d is None else str(d) for d in o.shape) + "]",
                         f"{o.tolerance.rtol:g} / {o.tolerance.atol:g}")
    out.print(io_table)

    sets = Table(title="input sets", title_justify="left")
    for col in ("set", "input", "shape", "source"):
        sets.add_column(col)
    for s in m.test_sets:
        for t in s.inputs:
            src = t.source or {}
            origin_text = src.get("file") or (f"random, seed {src.get('seed')}"
                                              if src.get("kind") == "random" else "-")
            if src.get("kind") == "image":
                pre = src.get("preprocess", {})
                origin_text += f" ({pre.get('color')}, {pre.get('layout')}"
                origin_text += f", resized to {pre['resize'][0]}x{pre['resize'][1]})" \
                    if pre.get("resize") else ")"
            if t.nonfinite:
                origin_text += f"; {t.nonfinite} NaN or inf"
            sets.add_row(str(s.index), t.name, str(t.shape), origin_text)
        for t in s.outputs:
            if t.nonfinite:
                sets.add_row(str(s.index), f"{t.name} (expected output)", str(t.shape),
                             f"{t.nonfinite} NaN or inf (packed with --allow-nonfinite)")
    out.print(sets)

    files = Table(title="files", title_justify="left")
    for col in ("path", "size", "sha256", "goes to"):
        files.add_column(col, justify="right" if col == "size" else "left")
    for f in m.files:
        files.add_row(f.path, size(f.size), f.sha256[:16] + "...", "device")
    for f in m.host_files:
        files.add_row(f.path, size(f.size), f.sha256[:16] + "...", "host only")
    out.print(files)


# ---------------------------------------------------------------------------- run


@app.command()
def run(
    bundle: Annotated[Path, typer.Argument(help="A bundle directory.")],
    device: Annotated[str, typer.Option(
        "--device", help="Where to run: host (devices are `edgepack deploy`'s).")] = "host",
    engine: Annotated[str, typer.Option(
        "--engine", help="auto (the native runner when built), native, or python.")] = "auto",
    warmup: WarmupOpt = 1,
    iterations: IterationsOpt = 10,
    min_seconds: MinSecondsOpt = None,
    threads: ThreadsOpt = 1,
    ep: EpOpt = "cpu",
    optimization: OptimizationOpt = "all",
    report: ReportOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Run a bundle on this machine and compare its outputs with the expected ones."""
    from edgepack.bundle import load_bundle
    from edgepack.deploy import run_on_host
    from edgepack.errors import EdgepackError, ExitCode
    from edgepack.runner.result import RunConfig

    if device != "host":
        raise EdgepackError(
            f"run executes on this machine (--device host); to run on {device!r} use "
            f"`edgepack deploy {bundle} --device {device}`"
        )
    config = RunConfig(warmup=warmup, iterations=iterations, min_seconds=min_seconds,
                       threads=threads, ep=ep, optimization=optimization)
    b = load_bundle(bundle)
    result = run_on_host(b, config, engine)
    render_deploy_result(result, json_out, report)
    if not result.passed:
        raise typer.Exit(int(ExitCode.MISMATCH))


def render_deploy_result(result: object, json_out: bool, report: Path | None) -> None:
    """Verdicts and latency of one bundle on one device; `deploy` renders the same way."""
    from edgepack.cli.render import latency_table, verdict_table
    from edgepack.fileio import atomic_write_text
    from edgepack.records import DeployResult
    from edgepack.serialize import dumps

    assert isinstance(result, DeployResult)
    if report is not None:
        atomic_write_text(report, dumps(result) + "\n")
    if json_out:
        emit_json(result)
        return
    out = console()
    d = result.device
    first = result.sets[0].runner
    out.print(
        f"{result.bundle_name} on {d.serial} ({d.model or d.kind}): engine {result.engine}, "
        f"onnxruntime {first.onnxruntime_version}, ep {first.ep_used}"
        + (f" (asked {first.ep_requested}: {first.ep_fallback_reason})"
           if first.ep_fallback_reason else "")
        + f", {first.threads_text()} thread(s)",
        markup=False,
    )
    for text in result.notes:
        note(text)
    for s in result.sets:
        out.print(verdict_table(s.verdicts, title=f"outputs, input set {s.index}"))
    extra = {
        "load ms": fmt(first.session_create_ms),
        "first ms": fmt(first.first_inference_ms),
        f"peak RSS ({first.peak_rss_scope})":
            size(first.peak_rss_kb_end * 1024) if first.peak_rss_kb_end else "-",
    }
    out.print(latency_table([(f"set 0 ({first.threads_text()} thr)", result.stats, extra)]))
    verdict = "[green]PASS[/green]" if result.passed else "[red]FAIL[/red]"
    out.print(f"{verdict}: median {fmt(result.stats.median_ms)} ms over {result.stats.count} "
              f"iteration(s); wall {result.wall_s:.2f} s")
