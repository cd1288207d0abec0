"""Command line: parse, then call one library function (one module per group of commands)."""

from mmsid.cli import data, pipeline, production, stages, tokenize  # noqa: F401  (registers)
from mmsid.cli.base import main

__all__ = ["main"]
