"""Atomic file writes: write to a temporary file in the same folder, then rename.

A reader never sees a half-written file, and an interrupted write leaves the old file (or
nothing) in place; a temporary file a kill left behind is removed by :func:`clean_temp` when
the next run starts. Files get the permissions the umask allows (not mkstemp's 0600). JSON
is strict (NaN and inf written as null); torch files hold tensors and plain values only, and
NaN/inf weights are refused both when written and when read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmsid.errors import DataError

_UMASK = os.umask(0)
os.umask(_UMASK)
TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")  # what atomic_path's mkstemp names look like


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``. In a
    multi-process run (mmsid.distributed) only rank 0 writes: other ranks get a scratch path
    whose content is discarded, so every mmsid file has one writer.

    Args:
        path: the final destination.
    Yields:
        A temporary path in the same folder (so the rename is atomic on POSIX).
    """
    from mmsid import distributed

    if not distributed.context().main:  # a multi-process run has one writer: rank 0
        with tempfile.TemporaryDirectory(prefix="mmsid-rank-") as scratch:
            yield Path(scratch) / Path(path).name  # written, then discarded
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def clean_temp(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files :func:`atomic_path` leaves when a process is killed mid-write
    (``.<name>.<random>.tmp``) in a run folder and its ``checkpoints/`` (not deeper: a stage
    folder is cleaned when its stage starts); returns what was removed."""
    gone = []
    for d in (Path(folder), Path(folder) / "checkpoints"):
        for f in d.glob(".*.tmp") if d.is_dir() else ():
            if f.is_file() and TEMP.match(f.name):
                f.unlink(missing_ok=True)
                gone.append(f)
    return gone


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Strict JSON: NaN and inf become null (bare NaN is not JSON)."""
    text = json.dumps(
        _finite(obj), indent=2, sort_keys=False, default=_json_default, allow_nan=False
    )
    write_text(path, text + "\n")


def _finite(obj: Any) -> Any:
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _finite(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


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

    bad = _non_finite(obj)
    if bad:
        raise DataError(
            f"refusing to write {path}: {bad} holds NaN or inf values (training diverged; "
            "lower the learning rate or check the inputs)"
        )
    with atomic_path(path) as tmp:
        torch.save(_plain(obj), tmp)


def _non_finite(obj: Any, where: str = "") -> str | None:
    """The key path of the first floating tensor/array with a NaN or inf, else None."""
    import numpy as np
    import torch

    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    elif isinstance(obj, torch.Tensor):
        ok = not obj.is_floating_point() or bool(torch.isfinite(obj).all())
        return None if ok else (where or "a tensor")
    elif isinstance(obj, np.ndarray):
        ok = obj.dtype.kind != "f" or bool(np.isfinite(obj).all())
        return None if ok else (where or "an array")
    else:
        return None
    for k, v in items:
        bad = _non_finite(v, f"{where}.{k}" if where else str(k))
        if bad:
            return bad
    return None


def load_torch(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """Read a file :func:`save_torch` wrote, never running code: ``torch.load`` with
    ``weights_only=True`` accepts tensors and plain containers only. A file holding anything
    else (a crafted pickle), or a truncated or foreign file, raises DataError naming it."""
    import pickle
    import zipfile

    import torch

    from mmsid.artefacts import check_file
    from mmsid.errors import DataError

    check_file(path)  # a file a finished stage recorded must still have its bytes
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(
            f"{path}: not a readable mmsid file (truncated, foreign, or holding objects other "
            f"than tensors and plain values, which mmsid refuses to unpickle: {first}); delete "
            "it to recompute, or restore the file mmsid wrote"
        ) from e
    bad = _non_finite(obj)
    if bad:
        raise DataError(
            f"{path}: {bad} holds NaN or inf values (a diverged or damaged model); delete it "
            "to recompute"
        )
    return obj


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
