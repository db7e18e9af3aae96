"""The typer application and the one place that turns errors into exit codes.

Command modules (host, runner, devices, lab) register their commands on `app`. They import the
stage modules inside the command functions, so `edgepack --help` loads no numpy, onnx or torch.
"""

from __future__ import annotations

import os
import sys

import typer

from edgepack import __version__
from edgepack.errors import EdgepackError, ExitCode

app = typer.Typer(
    name="edgepack",
    help=(
        "Take a trained model to a phone or edge board and prove there that the device computes "
        "what the host computes, and how fast.\n\n"
        "Exit codes: 0 success, 1 outputs differ or a regression, 2 bad usage or input, "
        "3 device or runner failure."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class _State:
    debug: bool = False


state = _State()


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgepack {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(
        False, "--debug", help="Show tracebacks for errors (or set EDGEPACK_DEBUG=1)."
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    state.debug = debug or os.environ.get("EDGEPACK_DEBUG", "") not in ("", "0")
    if state.debug:
        # Stage modules read the variable to let library noise (exporter logs) through.
        os.environ["EDGEPACK_DEBUG"] = "1"


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app and map every failure to one line and an exit code."""
    # Imported here so that registering the commands happens once, on the way in.
    from edgepack.cli import commands  # noqa: F401

    state.debug = "--debug" in (argv if argv is not None else sys.argv[1:]) or os.environ.get(
        "EDGEPACK_DEBUG", ""
    ) not in ("", "0")
    try:
        app(args=argv, standalone_mode=True)
    except SystemExit:
        raise
    except EdgepackError as exc:
        _fail(exc, exc.message, exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("edgepack: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug in edgepack: still one line unless --debug
        _fail(exc, f"internal error: {type(exc).__name__}: {exc}", ExitCode.INTERNAL)


def _fail(exc: BaseException, message: str, code: int) -> None:
    if state.debug:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    first_line = message.strip().splitlines()[0] if message.strip() else type(exc).__name__
    typer.echo(f"edgepack: error: {first_line}", err=True)
    sys.exit(int(code))
