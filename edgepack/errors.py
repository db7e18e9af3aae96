"""The one error type users see, and the exit codes every command shares."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    MISMATCH = 1  # outputs differ beyond tolerance, or a regression
    BAD_INPUT = 2  # bad usage or bad input: the user can fix it
    DEVICE = 3  # device, transport or runner failure
    INTERNAL = 4  # a bug in edgepack itself


class EdgepackError(Exception):
    """A failure explained in one sentence that names the thing and the fix.

    The CLI prints `message` on one line and exits with `exit_code`; the traceback is shown only
    with --debug.
    """

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.BAD_INPUT) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = ExitCode(exit_code)


def bad_input(message: str) -> EdgepackError:
    return EdgepackError(message, ExitCode.BAD_INPUT)


def device_error(message: str) -> EdgepackError:
    return EdgepackError(message, ExitCode.DEVICE)


def mismatch(message: str) -> EdgepackError:
    return EdgepackError(message, ExitCode.MISMATCH)


def short(exc: BaseException, limit: int = 300) -> str:
    """A library's exception text on one line, cut to a readable length."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
