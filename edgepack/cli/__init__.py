"""edgepack's command line: parse arguments, call one stage function, render its result."""

from edgepack.cli.app import app, main

__all__ = ["app", "main"]
