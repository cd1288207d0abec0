"""Command line: parse, then call one library function (one module per group of commands)."""

from mmsid.cli import data, pipeline, production, stages  # noqa: F401  (registers the commands)
from mmsid.cli.base import main

__all__ = ["main"]
