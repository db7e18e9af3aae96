"""Importing this module registers every command on the app (each module adds its own)."""

from edgepack.cli import host  # noqa: F401
