"""Exceptions with messages that name the file, the field and the fix."""

from __future__ import annotations


class MMSIDError(Exception):
    """Base class of every error mmsid raises on purpose."""


class DataError(MMSIDError, ValueError):
    """Bad or missing input data. The message names the file, the row/column and the fix."""


class ConfigError(MMSIDError, ValueError):
    """A setting that does not exist or has an invalid value."""


class VersionError(MMSIDError):
    """A saved artefact written by an incompatible mmsid version."""
