"""The one typed object every data set loader returns."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from mmsid.errors import DataError

ModalityKind = Literal["text", "image", "embedding"]


@dataclass
class Modality:
    """Raw content of one modality, one entry per item (row ``i`` is item ``i``).

    Attributes:
        name: modality name, e.g. ``"text"``, ``"image"``, ``"audio_vggish"``.
        kind: ``"text"`` (``raw`` is a list of ``str | None``), ``"image"`` (a list of
            ``Path | None``) or ``"embedding"`` (``raw`` is a float array ``(n_items, d)``).
        raw: the content; ``None`` marks a missing entry for text and images.
        mask: bool ``(n_items,)``, True where the item has this modality. Derived from ``raw``
            for text and images; all True for embeddings unless given.
        source: file the content came from (for error messages and cache keys).
    """

    name: str
    kind: ModalityKind
    raw: list | np.ndarray
    mask: np.ndarray | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if self.mask is None:
            if self.kind == "embedding":
                self.mask = np.ones(len(self.raw), dtype=bool)
            else:
                self.mask = np.array([r is not None for r in self.raw], dtype=bool)
        self.mask = np.asarray(self.mask, dtype=bool)

    def __len__(self) -> int:
        return len(self.raw)

    @property
    def coverage(self) -> float:
        return float(self.mask.mean()) if len(self.mask) else 0.0


@dataclass
class RecDataset:
    """Interactions + item table + per-modality raw content.

    Attributes:
        name: registry name.
        interactions: columns ``user`` (int64, 0..n_users-1), ``item`` (int64, 0..n_items-1),
            ``timestamp`` (int64; a real unix time, or the position in the user's sequence when
            the data has no time), ``rating`` (float32); extra columns (e.g. ``split``) kept.
            Sorted by (user, timestamp) with a stable sort, so ties keep file order.
        items: one row per item, ``item`` = row index, ``item_raw`` = id in the source files.
        users: one row per user, ``user`` = row index, ``user_raw`` = id in the source files.
        modalities: name -> Modality, every one with ``n_items`` entries.
        has_timestamps: False when ``timestamp`` is only an order.
        files: the source files that were read.
    """

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    modalities: dict[str, Modality] = field(default_factory=dict)
    has_timestamps: bool = True
    files: list[Path] = field(default_factory=list)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_interactions(self) -> int:
        return len(self.interactions)

    def validate(self) -> None:
        """Check the invariants above; raise DataError naming what is wrong."""
        inter = self.interactions
        for col in ("user", "item", "timestamp", "rating"):
            if col not in inter.columns:
                raise DataError(f"{self.name}: interactions lack column '{col}'")
        if len(inter) and (inter["item"].min() < 0 or inter["item"].max() >= self.n_items):
            raise DataError(f"{self.name}: interaction item index outside 0..{self.n_items - 1}")
        if len(inter) and (inter["user"].min() < 0 or inter["user"].max() >= self.n_users):
            raise DataError(f"{self.name}: interaction user index outside 0..{self.n_users - 1}")
        for m in self.modalities.values():
            if len(m) != self.n_items:
                raise DataError(
                    f"{self.name}: modality '{m.name}' from {m.source or '?'} has {len(m)} rows "
                    f"but the item table has {self.n_items}; give one row per item, in item order"
                )

    def sequences(self, interactions: pd.DataFrame | None = None) -> dict[int, np.ndarray]:
        """user -> item array in time order (from ``interactions``, default all)."""
        inter = self.interactions if interactions is None else interactions
        inter = inter.sort_values(["user", "timestamp"], kind="stable")
        users = inter["user"].to_numpy()
        items = inter["item"].to_numpy()
        bounds = np.flatnonzero(np.diff(users)) + 1
        starts = np.concatenate([[0], bounds])
        ends = np.concatenate([bounds, [len(users)]])
        return {int(users[s]): items[s:e] for s, e in zip(starts, ends) if e > s}


def finalize_interactions(
    df: pd.DataFrame, *, source: str, dedupe_on: tuple[str, ...] = ("user", "item", "timestamp")
) -> pd.DataFrame:
    """Deduplicate identical (user, item, time) rows (reported with a warning), sort stably."""
    import warnings

    dup = df.duplicated(subset=list(dedupe_on), keep="first")
    if dup.any():
        first = df.index[dup.to_numpy()][0]
        warnings.warn(
            f"{source}: {int(dup.sum())} duplicated ({', '.join(dedupe_on)}) rows dropped "
            f"(first at row {first}); keep one row per interaction to silence this",
            stacklevel=3,
        )
        df = df.loc[~dup]
    df = df.sort_values(["user", "timestamp"], kind="stable").reset_index(drop=True)
    df["user"] = df["user"].astype(np.int64)
    df["item"] = df["item"].astype(np.int64)
    df["timestamp"] = df["timestamp"].astype(np.int64)
    df["rating"] = df["rating"].astype(np.float32)
    return df


def check_numeric(df: pd.DataFrame, cols: list[str], *, source: str) -> None:
    """Raise DataError naming the first non-numeric cell of ``cols``."""
    for col in cols:
        if col not in df.columns:
            raise DataError(
                f"{source}: missing column '{col}' (found {list(df.columns)}); "
                f"rename your column to '{col}'"
            )
        num = pd.to_numeric(df[col], errors="coerce")
        bad = num.isna() & df[col].notna() | df[col].isna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(
                f"{source}: column '{col}' row {row} holds {df[col].iloc[row]!r}, not a number; "
                f"ids and times must be integers"
            )
        df[col] = num


def check_finite(arr: np.ndarray, *, source: str) -> None:
    """Raise DataError naming the first row with NaN/inf."""
    finite = np.isfinite(arr)
    if not finite.all():
        row = int(np.flatnonzero(~finite.all(axis=tuple(range(1, arr.ndim))))[0])
        raise DataError(
            f"{source}: row {row} holds NaN or inf; replace or drop that item's embedding "
            f"(mmsid masks missing content, so leave the row out of the file's items instead)"
        )


def to_float32(arr: np.ndarray, *, source: str) -> np.ndarray:
    """``arr`` as float32, refused where it holds NaN/inf or a value float32 cannot hold
    (|x| > 3.4e38, which the cast would silently turn into inf): DataError naming the row."""
    if arr.dtype.kind == "f":
        check_finite(arr, source=source)
        limit = np.finfo(np.float32).max
        big = np.abs(arr) > limit
        if big.any():
            row = int(np.flatnonzero(big.any(axis=tuple(range(1, arr.ndim))))[0])
            raise DataError(
                f"{source}: row {row} holds a value beyond float32's range (|x| > {limit:.2e}); "
                f"rescale the embeddings (e.g. L2-normalize them)"
            )
    return arr.astype(np.float32)


_last_read: list[Path] = []  # the last file a built-in loader began to read


def reading(path):
    """Mark ``path`` as the file being read and interpreted, for :func:`guarded`'s message
    (processing that follows is attributed to it too, until the next file is read); returns
    ``path`` so it wraps a reading call: ``pd.read_csv(reading(path))``."""
    _last_read[:] = [Path(path)]
    return path


def guarded(load):
    """Decorate a built-in loader: an exception that is not a DataError (a parser error, a
    failed conversion, a truncated array: the file is not what the data set publishes) becomes
    a DataError naming the file it came from (the last one marked with :func:`reading`) and
    the fix."""

    @functools.wraps(load)
    def wrapper(*args, **kwargs):
        _last_read.clear()
        try:
            return load(*args, **kwargs)
        except DataError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, EOFError, OSError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            where = str(_last_read[0]) if _last_read else "a file of the data set"
            raise DataError(
                f"{where}: not in the format of the published data set ({type(e).__name__}: "
                f"{first}); it is damaged, cut short or another version. Restore the published "
                "file (its SHA-256 is in mmsid/data/manifest.json)"
            ) from e

    return wrapper
