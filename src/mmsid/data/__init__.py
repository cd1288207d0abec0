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
    """Load a built-in data set by name (see ``REGISTRY``), or the user's own data: a
    ``dataset.yaml`` (or a folder holding one; :func:`mmsid.data.custom.from_spec`)."""
    from pathlib import Path

    from mmsid.data import custom

    if name not in REGISTRY and (Path(name).suffix in (".yaml", ".yml") or Path(name).is_dir()):
        return custom.from_spec(name)
    if name not in REGISTRY:
        close = difflib.get_close_matches(name, REGISTRY, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise DataError(
            f"unknown data set '{name}'; known: {', '.join(REGISTRY)}, or your own files: "
            f"a dataset.yaml or a folder holding one (see the README).{hint}"
        )
    return REGISTRY[name](data_dir, **kwargs)


__all__ = ["REGISTRY", "Modality", "RecDataset", "load_dataset"]
