"""`python -m edgepack.virtual_device --port P --root DIR [...]`: the same command as
`edgepack virtual-device`, without loading the rest of the CLI."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    import typer

    from edgepack.cli.virtual import virtual_device
    from edgepack.errors import EdgepackError

    cli = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                      rich_markup_mode=None,
                      context_settings={"help_option_names": ["-h", "--help"]})
    cli.command()(virtual_device)
    try:
        cli(args=argv, prog_name="python -m edgepack.virtual_device")
    except EdgepackError as exc:
        print(f"edgepack virtual-device: error: {exc.message}", file=sys.stderr)
        sys.exit(int(exc.exit_code))


if __name__ == "__main__":
    main()
