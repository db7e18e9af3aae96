"""The typer application and the one place that turns errors into exit codes.

Command modules (host, runner, devices, lab) register their commands on `app`. They import the
stage modules inside the command functions, so `edgepack --help` loads no numpy, onnx or torch.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

import typer
import typer.core

from edgepack import __version__
from edgepack.errors import EdgepackError, ExitCode


class _OneLineUsage(typer.core.TyperGroup):
    """Click's usage errors (a bad option value, a missing argument, an unknown command) as
    EdgepackError: one `edgepack: error:` line and exit 2, as every other bad input, instead of
    click's usage block. Subcommands' errors pass through this group's invoke."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with _usage_as_error():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        with _usage_as_error():
            return super().invoke(ctx)


@contextlib.contextmanager
def _usage_as_error() -> Iterator[None]:
    try:
        from typer._click.exceptions import UsageError
    except ImportError:  # typer before it vendored click
        from click.exceptions import UsageError  # type: ignore[no-redef]
    try:
        yield
    except UsageError as exc:
        # `edgepack` or `edgepack runner` alone: the help text, as typer shows it.
        if type(exc).__name__ == "NoArgsIsHelpError":
            raise
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        raise EdgepackError(exc.format_message() + hint, ExitCode.BAD_INPUT) from exc


app = typer.Typer(
    cls=_OneLineUsage,
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


class Terminated(KeyboardInterrupt):
    """SIGTERM, as CI systems, `timeout` and service managers stop a process, raised in the main
    thread where Ctrl-C's KeyboardInterrupt lands: whatever cleans up after an interrupt cleans
    up after it too (a bench marks its session interrupted and lets go of its devices)."""


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app and map every failure to one line and an exit code."""
    # Imported here so that registering the commands happens once, on the way in.
    from edgepack.cli import commands  # noqa: F401

    state.debug = "--debug" in (argv if argv is not None else sys.argv[1:]) or os.environ.get(
        "EDGEPACK_DEBUG", ""
    ) not in ("", "0")
    with _sigterm_as_interrupt():
        try:
            app(args=argv, standalone_mode=True)
        except SystemExit as exc:
            # typer turns an interrupt into exit 130; a SIGTERM's is 143 (128 + 15).
            interrupt = _interrupt_behind(exc) if exc.code == 130 else None
            if interrupt is not None:
                _interrupted(interrupt)
            raise
        except EdgepackError as exc:
            _fail(exc, exc.message, exc.exit_code)
        except KeyboardInterrupt as exc:
            _interrupted(exc)
        except Exception as exc:  # a bug in edgepack: still one line unless --debug
            _fail(exc, f"internal error: {type(exc).__name__}: {exc}", ExitCode.INTERNAL)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread (in-process callers may be others)
        return

    def terminate(signum: int, frame: object) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt_behind(exc: BaseException) -> KeyboardInterrupt | None:
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        if isinstance(link, KeyboardInterrupt):
            return link
        seen.add(id(link))
        link = link.__cause__ or link.__context__
    return None


def _interrupted(exc: KeyboardInterrupt) -> None:
    terminated = isinstance(exc, Terminated)
    typer.echo("edgepack: terminated" if terminated else "edgepack: interrupted", err=True)
    sys.exit(128 + (signal.SIGTERM if terminated else signal.SIGINT))


def _fail(exc: BaseException, message: str, code: int) -> None:
    if state.debug:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    first_line = message.strip().splitlines()[0] if message.strip() else type(exc).__name__
    typer.echo(f"edgepack: error: {first_line}", err=True)
    sys.exit(int(code))
