"""Atomic file writes: write to a temporary file in the same folder, then rename.

A reader never sees a half-written file, and an interrupted write leaves the old file (or
nothing) in place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    Args:
        path: the final destination.
    Yields:
        A temporary path in the same folder (so the rename is atomic on POSIX).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot serialise {type(o).__name__} to JSON")


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    """Save tensors and plain values (numpy scalars and arrays become Python numbers and
    tensors), so that :func:`load_torch` reads the file back with ``weights_only=True``."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(_plain(obj), tmp)


def load_torch(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """Read a file :func:`save_torch` wrote, never running code: ``torch.load`` with
    ``weights_only=True`` accepts tensors and plain containers only. A file holding anything
    else (a crafted pickle), or a truncated or foreign file, raises DataError naming it."""
    import pickle
    import zipfile

    import torch

    from mmsid.errors import DataError

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(
            f"{path}: not a readable mmsid file (truncated, foreign, or holding objects other "
            f"than tensors and plain values, which mmsid refuses to unpickle: {first}); delete "
            "it to recompute, or restore the file mmsid wrote"
        ) from e


def _plain(obj: Any) -> Any:
    import numpy as np
    import torch

    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj)
    return obj


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def stable_hash(obj: Any) -> str:
    """A short, stable hash of a JSON-serialisable object (config hashes, cache keys)."""
    blob = json.dumps(obj, sort_keys=True, default=_json_default).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def save_png(fig, path: str | os.PathLike, *, dpi: int = 80) -> None:
    """Write a matplotlib figure atomically as PNG and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)


def save_npz(path: str | os.PathLike, **arrays: Any) -> None:
    """Write arrays as one uncompressed ``.npz`` atomically (read back with
    ``np.load(path, allow_pickle=False)``)."""
    import numpy as np

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
