"""Importing this module registers every command on the app (each module adds its own)."""

import edgepack.cli.ab
import edgepack.cli.check
import edgepack.cli.devices
import edgepack.cli.diagnose
import edgepack.cli.host
import edgepack.cli.lab
import edgepack.cli.runner
import edgepack.cli.virtual  # noqa: F401
