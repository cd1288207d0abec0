"""Data sets behind one registry: every loader returns a :class:`RecDataset`."""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable

from mmsid.data import beauty, lastfm, movielens
from mmsid.data.base import Modality, RecDataset
from mmsid.errors import DataError

REGISTRY: dict[str, Callable[..., RecDataset]] = {
    movielens.NAME: movielens.load,
    lastfm.NAME: lastfm.load,
    beauty.NAME: beauty.load,
}


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, **kwargs) -> RecDataset:
    """Load a built-in data set by name (see ``REGISTRY``); ``custom`` data uses
    :func:`mmsid.data.custom.load`."""
    if name not in REGISTRY:
        close = difflib.get_close_matches(name, REGISTRY, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise DataError(
            f"unknown data set '{name}'; known: {', '.join(REGISTRY)}, or use "
            f"mmsid.data.custom.load for your own files.{hint}"
        )
    return REGISTRY[name](data_dir, **kwargs)


__all__ = ["REGISTRY", "Modality", "RecDataset", "load_dataset"]
