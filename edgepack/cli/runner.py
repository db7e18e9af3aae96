"""`edgepack runner build`, `runner list` and `runner fetch-web`: the native runner, and the
browser's JavaScript runtimes, in the cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgepack.cli.app import app
from edgepack.cli.options import JsonOpt
from edgepack.cli.render import console, emit_json, note, size

runner_app = typer.Typer(
    name="runner",
    help="Build and list edgepack-runner, the native program that runs bundles on devices.",
    no_args_is_help=True,
)
app.add_typer(runner_app, name="runner")


def _silent(_: str) -> None:
    pass




def _build_doc(build: Any, status: str | None = None) -> dict[str, Any]:
    doc = build.to_json()
    doc["directory"] = str(build.directory)
    if status is not None:
        doc["status"] = status
    return doc


@runner_app.command("build")
def build(
    target: Annotated[str, typer.Option(
        "--target", help="host, android-arm64-v8a, android-armeabi-v7a, android-x86_64 or "
                         "linux-aarch64.")],
    ort_aar: Annotated[Path | None, typer.Option(
        "--ort-aar", help="An official onnxruntime-android AAR (headers; Android libraries). "
                          "Default: Maven Central if reachable, else the npm package.")] = None,
    ndk: Annotated[Path | None, typer.Option(
        "--ndk", help="Android NDK directory (default: $ANDROID_NDK_HOME).")] = None,
    android_platform: Annotated[str, typer.Option(
        "--android-platform", help="ANDROID_PLATFORM for Android targets.")] = "android-24",
    compiler: Annotated[str | None, typer.Option(
        "--compiler", help="Linux targets: gcc (default; the runner needs this machine's glibc "
                           "or, for linux-aarch64, 2.34) or zig (pip install ziglang; glibc "
                           "2.28, as onnxruntime itself).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if built.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Build the runner for a target into the cache (reused when already built)."""
    from edgepack.runner.build import build_runner

    result = build_runner(target, ort_aar=ort_aar, ndk=ndk, android_platform=android_platform,
                          force=force, log=note, compiler=compiler)
    if json_out:
        emit_json(_build_doc(result))
        return
    out = console()
    out.print(f"runner {result.id}", markup=False)
    out.print(f"  in {result.directory}", markup=False)
    out.print(f"  onnxruntime {result.ort_version} ({result.library_origin}); headers "
              f"{result.headers_version} (C API {result.ort_api_version})", markup=False)
    if result.requires_glibc:
        out.print(f"  built with {result.compiler or 'gcc'}: runs with glibc "
                  f"{result.requires_glibc} or newer", markup=False)
    for f in result.files:
        out.print(f"  push {f.name} ({size(f.size)})", markup=False)
    from edgepack.runner.targets import shell_command

    for cmd in result.commands:
        out.print(f"  built with: {shell_command(cmd)}", markup=False, soft_wrap=True)


@runner_app.command("list")
def list_(json_out: JsonOpt = False) -> None:
    """List the runners built in the cache, and whether each is usable."""
    from edgepack.runner.cache import check_build, list_builds, runners_root, sources_sha256
    from edgepack.runner.local import build_providers

    sources = sources_sha256()
    rows = []
    for b in list_builds():
        problems = check_build(b)
        status = ("broken: " + "; ".join(problems) if problems
                  else "ok" if b.is_current(sources) else "stale (sources changed)")
        rows.append((b, status, build_providers(b)))
    if json_out:
        docs = []
        for b, status, providers in rows:
            doc = _build_doc(b, status)
            doc["providers"] = providers.providers
            doc["providers_from"] = providers.how
            docs.append(doc)
        emit_json(docs)
        return
    if not rows:
        note(f"no runners built in {runners_root()}: `edgepack runner build --target host` "
             "builds one")
        return
    from rich.table import Table

    table = Table(title=f"runners in {runners_root()}")
    for col in ("target", "onnxruntime", "headers", "compiler", "glibc", "id", "size",
                "providers", "status"):
        table.add_column(col)
    for b, status, providers in rows:
        shown = ",".join(providers.providers) or "-"
        if not providers.how.startswith("asked"):
            shown += " (from the library)"
        table.add_row(b.target, b.ort_version, b.headers_version, b.compiler or "?",
                      f">= {b.requires_glibc}" if b.requires_glibc else "-", b.id,
                      size(b.total_bytes), shown, status)
    console().print(table)


@runner_app.command("fetch-web")
def fetch_web(json_out: JsonOpt = False) -> None:
    """Fetch the browser device's JavaScript runtimes (onnxruntime-web, ONNX.js) into the cache:
    pinned versions from the npm registry, sha256-checked, so no later run needs the network."""
    from edgepack.web.runtime import PINS, fetch_all

    runtimes = fetch_all(_silent if json_out else note)
    if json_out:
        emit_json([{"name": r.name, "version": r.version, "sha256": PINS[r.name].sha256,
                    "directory": str(r.root)} for r in runtimes])
        return
    for r in runtimes:
        console().print(f"{r.name} {r.version}: {r.root}", markup=False)
