"""Commands of the host half: export, pack, inspect, run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from edgepack.cli.app import app
from edgepack.cli.options import (
    EpOpt,
    IterationsOpt,
    JsonOpt,
    MinSecondsOpt,
    OptimizationOpt,
    PlacementOpt,
    ReportOpt,
    StrictEpOpt,
    ThreadsOpt,
    WarmupOpt,
    number,
)
from edgepack.cli.render import console, emit_json, fmt, note, size
from edgepack.limits import MAX_SEED

if TYPE_CHECKING:
    from edgepack.records import DeployResult

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
    resize_filter: Annotated[str, typer.Option(
        "--resize-filter", help="nearest, bilinear (torchvision's), bicubic or lanczos.")
    ] = "bilinear",
    keep_aspect: Annotated[str, typer.Option(
        "--keep-aspect", help="squash (to the size, the default), crop (scale to cover, cut "
        "the centre) or pad (scale to fit, black borders).")] = "squash",
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
    model_format: Annotated[str, typer.Option(
        "--format", help="onnx, ort (the ORT flatbuffer model onnxruntime's mobile package "
        "runs), or both (the ORT model pushed, the ONNX one kept on the host).")] = "onnx",
    quantize: Annotated[str | None, typer.Option(
        "--quantize", help="int8 (static QDQ, calibrated) or fp16; the float model's outputs "
        "are kept as a second reference, with the accuracy cost.")] = None,
    calibrate: Annotated[Path | None, typer.Option(
        "--calibrate", help="int8 calibration inputs: a directory of test_data_set_* or "
        "images (default: the bundle's input sets).")] = None,
    from_bundle: Annotated[Path | None, typer.Option(
        "--inputs-from-bundle", help="Feed this model the expected outputs of a bundle "
        "(the first model of a pipeline), matched by name.")] = None,
    maps: Annotated[list[str], typer.Option(
        "--map", help="OUT=IN: with --inputs-from-bundle, that bundle's output OUT feeds "
        "input IN (repeatable).")] = [],  # noqa: B006
    ops_allowed: Annotated[str | None, typer.Option(
        "--ops-allowed", help="A required_operators.config (DOMAIN;OPSET;Op1,Op2 lines) or an "
        "execution provider: rewrite the model into those operators only, checked against the "
        "original on every input set.")] = None,
    fix_dims: Annotated[list[str], typer.Option(
        "--fix-dim", help="NAME=SIZE fixes a symbolic dim (INPUT=D0xD1x...: an input's shape), "
        "as NNAPI and CoreML need (repeatable).")] = [],  # noqa: B006
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
    from edgepack.bundle.ortformat import check_format
    from edgepack.bundle_inputs import parse_map
    from edgepack.errors import EdgepackError
    from edgepack.quantize import check_mode

    check_format(model_format)
    if quantize is not None:
        check_mode(quantize)
    if calibrate is not None and quantize != "int8":
        raise EdgepackError("--calibrate goes with --quantize int8")
    if maps and from_bundle is None:
        raise EdgepackError("--map goes with --inputs-from-bundle")
    bundle_maps = [parse_map(t) for t in maps]
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
            resize_filter=resize_filter,
            keep_aspect=keep_aspect,
        ),
        from_bundle=from_bundle,
        bundle_map=bundle_maps,
    )
    options = PackOptions(name=name, tolerances=tolerances, rtol=rtol, atol=atol, force=force,
                          allow_nonfinite=allow_nonfinite, format=model_format,
                          quantize=quantize, calibrate=calibrate)
    if ops_allowed is not None or fix_dims:
        from dataclasses import replace

        from edgepack.rewrite import load_ops_allowed, parse_fix_dim

        fixes = tuple(parse_fix_dim(t) for t in fix_dims)
        allowed = load_ops_allowed(ops_allowed) if ops_allowed is not None else None
        options = replace(options, ops_allowed=allowed, fix_dims=fixes)
    bundle = run_pack(model, output, request, options)
    for s in bundle.manifest.test_sets:
        for t in s.inputs:
            if t.preprocess is not None and t.preprocess.aspect_changed:
                (w0, h0), (w, h) = t.preprocess.image_size, t.preprocess.size
                note(f"set {s.index} input {t.name}: {w0}x{h0} squashed to {w}x{h}, the aspect "
                     "ratio changed (--keep-aspect crop or pad keeps it)")
    if json_out:
        emit_json({"path": bundle.path, "sha256": bundle.sha256, "manifest": bundle.manifest})
        return
    m = bundle.manifest
    weights = (f"{m.model.external_tensors} weight tensor(s) in {m.model.external_data}"
               if m.model.format == "onnx" else f"{m.model.file} (ORT format)")
    console().print(
        f"packed {bundle.path}: {len(m.test_sets)} input set(s), {weights}, "
        f"{size(bundle.size_bytes())} pushed in all",
        markup=False,
    )
    if m.quantization is not None:
        console().print(accuracy_table(m.quantization))
    if m.rewrite is not None:
        console().print(rewrite_summary(m.rewrite), markup=False)


def rewrite_summary(r: object) -> str:
    """What --ops-allowed and --fix-dim did, as pack checked it."""
    from edgepack.bundle.schema import Rewrite

    assert isinstance(r, Rewrite)
    lines = []
    if r.fixed_dims:
        lines.append("fixed dims: " + ", ".join(r.fixed_dims))
    if r.ops_allowed is not None:
        rules = "; ".join(f"{run.op} x{run.nodes} by {run.rule}" for run in r.rules)
        opset = (f", opset {r.opset_before} -> {r.opset_after}"
                 if r.opset_before != r.opset_after else "")
        lines.append(f"rewritten for {r.ops_allowed}: {r.nodes_before} -> {r.nodes_after} "
                     f"nodes{opset}" + (f" ({rules})" if rules else " (nothing to rewrite)"))
    lines.append(f"checked against the original on every input set: max abs error "
                 f"{_g(r.max_abs_error, 3)}")
    return "\n".join(lines)


def accuracy_table(q: object) -> object:
    """A quantized bundle's cost against its float model, as pack measured it."""
    from rich.table import Table

    from edgepack.bundle.schema import Quantization

    assert isinstance(q, Quantization)
    calibrated = (f", calibrated on {q.calibration} ({q.calibration_sets} set(s))"
                  if q.calibration else "")
    table = Table(title=f"accuracy cost of {q.mode} against the float model, over "
                        f"{len(q.reference)} input set(s){calibrated}", title_justify="left")
    for col in ("output", "SNR dB", "cosine", "top-1", "top-5", "max abs error"):
        table.add_column(col, justify="left" if col == "output" else "right")
    for c in q.cost:
        table.add_row(c.output, "identical" if c.snr_db is None and c.max_abs_error == 0
                      else fmt(c.snr_db), _g(c.cosine, 6), _pct(c.top1_agreement),
                      _pct(c.top5_agreement), _g(c.max_abs_error, 3))
    return table


def _g(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


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
        ("model", f"{m.model.file}"
                  + (f" + {m.model.external_data}" if m.model.format == "onnx" else "")
                  + f" (format {m.model.format}; IR {m.model.ir_version}; {opsets})"),
        ("producer", m.model.producer or "-"),
        ("weights", f"{m.model.external_tensors} external, {m.model.inline_tensors} inline"
                    if m.model.format == "onnx" else f"embedded in {m.model.file}"),
        ("origin", f"{origin} (sha256 {m.provenance.sha256[:16]}...)"),
        ("packed by", f"edgepack {m.edgepack_version}, onnxruntime {m.onnxruntime_version}"),
    ):
        summary.add_row(key, value)
    if m.rewrite is not None:
        summary.add_row("rewrite", rewrite_summary(m.rewrite))
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
            if src.get("kind") == "bundle":
                pre = src.get("preprocess", {})
                origin_text = (f"bundle {pre.get('bundle')}, set {pre.get('set')}, output "
                               f"{pre.get('output')}")
            if t.preprocess is not None:
                origin_text += ": " + "; ".join(t.preprocess.steps[1:])
            elif src.get("kind") == "image":
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
    if m.quantization is not None:
        out.print(f"quantized {m.quantization.mode}: {m.quantization.method}", markup=False)
        out.print(accuracy_table(m.quantization))


# ---------------------------------------------------------------------------- run

# run's and deploy's options for what to do with a run's outputs (edgepack/outputs_dir.py).
OutputsOpt = Annotated[Path | None, typer.Option(
    "--outputs", help="Keep the outputs in this directory: test_data_set_<k>/output_<i>.pb "
    "(as in the bundle) and output_<i>.npy beside each. Refused when not empty, unless --force.")]
ForceOpt = Annotated[bool, typer.Option(
    "--force", help="Write into a non-empty --outputs / --save-images directory.")]
LabelsOpt = Annotated[Path | None, typer.Option(
    "--labels", help="Class names, one a line: top-5 of class-score outputs by name, host "
    "beside device.")]
SaveImagesOpt = Annotated[Path | None, typer.Option(
    "--save-images", help="Write outputs that are pictures as PNG (host, device, difference; "
    "with --color y bundles the colour picture too) into this directory.")]


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
    strict_ep: StrictEpOpt = False,
    profile: PlacementOpt = False,
    outputs: OutputsOpt = None,
    force: ForceOpt = False,
    labels: LabelsOpt = None,
    save_images: SaveImagesOpt = None,
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
                       threads=threads, ep=ep, optimization=optimization, profile=profile)
    from edgepack.outputs_dir import OutputRequest, after_run, before_run

    b = load_bundle(bundle)
    request = OutputRequest(outputs, force, labels, save_images)
    names = before_run(b, request)
    with profile_dir(profile or request.needs_outputs, outputs) as work_dir:
        result = ep_checked(placement_noted(run_on_host(b, config, engine, work_dir)))
        result = after_run(b, result, work_dir, request, names)
    render_deploy_result(result, json_out, report)
    strict_ep_failure(result, strict_ep)
    if not result.passed:
        raise typer.Exit(int(ExitCode.MISMATCH))


def profile_dir(profile: bool, outputs: Path | None) -> Any:
    """Where a run's outputs and profile stay until its placement is read: --outputs, else
    (with --profile) a temporary directory, else nowhere (the run's own temporary one)."""
    import contextlib
    import tempfile

    if outputs is not None or not profile:
        return contextlib.nullcontext(outputs)
    return tempfile.TemporaryDirectory(prefix="edgepack-profile-")


def placement_noted(result: DeployResult) -> DeployResult:
    """With --profile: where the first set's nodes ran, read from onnxruntime's profile, as a
    note (console, --json, --report)."""
    from dataclasses import replace

    from edgepack.errors import EdgepackError
    from edgepack.profile import parse_placement

    path = result.sets[0].runner.profile_file if result.sets else None
    if not result.config.profile:
        return result
    if path is None or not Path(path).is_file():
        return replace(result, notes=[*result.notes, "placement: the runner wrote no profile"])
    try:
        text = parse_placement(Path(path), result.config.ep).summary
    except EdgepackError as exc:
        text = exc.message
    return replace(result, notes=[*result.notes, f"placement: {text}"])


def ep_checked(result: DeployResult) -> DeployResult:
    """The result with a provider fallback among its notes, so the console, --json and
    --report all carry it as a warning."""
    from dataclasses import replace

    fallback = result.ep_fallback
    if fallback is None or fallback in result.notes:
        return result
    return replace(result, notes=[*result.notes, "warning: " + fallback])


def strict_ep_failure(result: DeployResult, strict: bool) -> None:
    """--strict-ep: a run on another provider than the one asked for is a device failure."""
    from edgepack.errors import EdgepackError, ExitCode

    if strict and result.ep_fallback is not None:
        raise EdgepackError(f"--strict-ep: {result.ep_fallback}", ExitCode.DEVICE)


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
    for top in result.top_classes:
        out.print(top_table(top))
    for im in result.images:
        out.print(f"saved set {im.set_index} {im.output}"
                  + (f"[{im.item}]" if im.item else "") + ": "
                  + ", ".join(f for f in (im.host, im.device, im.diff, im.color_host,
                                          im.color_device) if f)
                  + ("" if im.max_abs_diff is None else f" (max |device - host| "
                     f"{im.max_abs_diff:.3g})"), markup=False)
    extra = {
        "load ms": fmt(first.session_create_ms),
        "first ms": fmt(first.first_inference_ms),
        f"peak RSS ({first.peak_rss_scope})":
            size(first.peak_rss_kb_end * 1024) if first.peak_rss_kb_end else "-",
    }
    from edgepack.validity import ValidityRules, judge

    validity = judge(first, ValidityRules(), wall_s=result.wall_s)
    extra["validity"] = validity.verdict.value
    out.print(latency_table([(f"set 0 ({first.threads_text()} thr)", result.stats, extra)]))
    for reason in validity.reasons:
        out.print(f"{validity.verdict.value}: {reason}", markup=False)
    verdict = "[green]PASS[/green]" if result.passed else "[red]FAIL[/red]"
    out.print(f"{verdict}: median {fmt(result.stats.median_ms)} ms over {result.stats.count} "
              f"iteration(s); wall {result.wall_s:.2f} s")


def top_table(top: object) -> object:
    """--labels: one row's top-5, host beside device; a differing class is marked."""
    from rich.markup import escape
    from rich.table import Table

    from edgepack.labels import TopClasses

    assert isinstance(top, TopClasses)
    row = f", row {top.row}" if top.row else ""
    agree = ("top-1 agrees" if top.top1_agrees
             else "device output missing" if not top.device else "[red]top-1 differs[/red]")
    table = Table(title=f"top-5 of {escape(top.output)}, input set {top.set_index}{row} "
                        f"({top.classes} classes): {agree}", title_justify="left")
    for col in ("rank", "host", "score", "device", "score "):
        table.add_column(col, justify="right" if col.startswith(("rank", "score")) else "left")
    for rank, host in enumerate(top.host):
        dev = top.device[rank] if rank < len(top.device) else None
        dev_text = "-" if dev is None else escape(f"{dev.label} ({dev.index})")
        if dev is not None and dev.index != host.index:
            dev_text = f"[yellow]{dev_text}[/yellow]"
        table.add_row(str(rank + 1), escape(f"{host.label} ({host.index})"), f"{host.score:.4g}",
                      dev_text, "-" if dev is None else f"{dev.score:.4g}")
    return table
