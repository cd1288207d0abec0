"""``custom``: the user's own interactions + item table + embedding files named as modalities.

From the command line, a data set is a ``dataset.yaml`` (``--dataset my/dataset.yaml``, or the
folder holding it), paths relative to it::

    name: my-shop                 # optional; default: the folder's name
    interactions: interactions.csv  # user, item[, timestamp][, rating]
    items: items.csv              # optional: item[, a text column]
    text_column: title            # optional: that column, encoded by the text encoder
    embeddings:                   # optional: modality -> .npy/.parquet, one row per item
      image: image_vectors.npy
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from mmsid.data.base import Modality, RecDataset, check_numeric, finalize_interactions, to_float32
from mmsid.errors import DataError


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.suffix not in (".parquet", ".csv", ".tsv", ".txt"):
        raise DataError(
            f"{path}: unsupported table format '{path.suffix}'; use .parquet, .csv or .tsv"
        )
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")
    except Exception as e:  # pandas / pyarrow raise many types for a damaged or empty file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(
            f"{path}: unreadable table ({first}); expected a header row and one row per "
            "record, every row with the header's number of fields"
        ) from None


def _read_embedding(path: Path) -> np.ndarray:
    if not path.exists():
        raise DataError(f"{path}: embedding file not found")
    if path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise DataError(f"{path}: not a readable .npy array ({e})") from None
    elif path.suffix == ".parquet":
        arr = _read_table(path).to_numpy()
    else:
        raise DataError(
            f"{path}: unsupported embedding format '{path.suffix}'; use .npy or "
            f".parquet (one row per item, in item-table order)"
        )
    if arr.ndim != 2:
        raise DataError(f"{path}: expected a 2-D array (n_items, d), got shape {arr.shape}")
    if arr.dtype.kind not in "fiub":
        raise DataError(f"{path}: holds {arr.dtype} values; embeddings must be numbers")
    return arr


def load(
    interactions: str | os.PathLike,
    items: str | os.PathLike | None = None,
    embeddings: dict[str, str | os.PathLike] | None = None,
    *,
    name: str = "custom",
    text_column: str | None = None,
) -> RecDataset:
    """Load a user's data set.

    Args:
        interactions: Parquet/CSV/TSV with columns ``user``, ``item`` and optionally
            ``timestamp`` (else file order) and ``rating`` (else 1).
        items: optional item table with column ``item`` (ids as in ``interactions``); fixes the
            item order that embedding rows follow. Default: sorted unique interaction items.
        embeddings: modality name -> .npy/.parquet file, one row per item in item-table order.
        text_column: a column of ``items`` to use as raw text (encoded by the text encoder).
    """
    ipath = Path(interactions)
    df = _read_table(ipath)
    check_numeric(df, ["user", "item"], source=str(ipath))
    has_time = "timestamp" in df.columns
    if has_time:
        check_numeric(df, ["timestamp"], source=str(ipath))
    else:
        df["timestamp"] = df.groupby("user").cumcount()
    if "rating" not in df.columns:
        df["rating"] = 1.0

    if items is not None:
        tpath = Path(items)
        item_df = _read_table(tpath)
        check_numeric(item_df, ["item"], source=str(tpath))
        if item_df["item"].duplicated().any():
            row = int(np.flatnonzero(item_df["item"].duplicated().to_numpy())[0])
            raise DataError(f"{tpath}: item {item_df['item'].iloc[row]} listed twice (row {row})")
        item_raw = item_df["item"].astype(np.int64).to_numpy()
        unknown = ~df["item"].isin(item_raw)
        if unknown.any():
            row = int(np.flatnonzero(unknown.to_numpy())[0])
            raise DataError(
                f"{ipath}: row {row} names item {df['item'].iloc[row]} missing from "
                f"{tpath}; add it to the item table"
            )
    else:
        item_df = pd.DataFrame({"item": np.sort(df["item"].unique())})
        item_raw = item_df["item"].astype(np.int64).to_numpy()
    item_index = pd.Series(np.arange(len(item_raw)), index=item_raw)
    user_raw = np.sort(df["user"].unique()).astype(np.int64)
    user_index = pd.Series(np.arange(len(user_raw)), index=user_raw)
    inter = pd.DataFrame(
        {
            "user": user_index.loc[df["user"].to_numpy()].to_numpy(),
            "item": item_index.loc[df["item"].to_numpy()].to_numpy(),
            "timestamp": df["timestamp"].to_numpy(),
            "rating": df["rating"].to_numpy(),
        }
    )
    inter = finalize_interactions(inter, source=str(ipath))

    modalities: dict[str, Modality] = {}
    for mod, epath in (embeddings or {}).items():
        epath = Path(epath)
        arr = _read_embedding(epath)
        if arr.shape[0] != len(item_raw):
            raise DataError(
                f"{epath}: {arr.shape[0]} rows but the item table has "
                f"{len(item_raw)} items; give one row per item, in item order"
            )
        arr = to_float32(arr, source=str(epath))
        modalities[mod] = Modality(mod, "embedding", arr, source=str(epath))
    if text_column is not None:
        if text_column not in item_df.columns:
            raise DataError(f"{items}: no column '{text_column}' for text")
        texts = [t if isinstance(t, str) and t.strip() else None for t in item_df[text_column]]
        modalities["text"] = Modality("text", "text", texts, source=str(items))

    out_items = pd.DataFrame({"item": np.arange(len(item_raw)), "item_raw": item_raw})
    users = pd.DataFrame({"user": np.arange(len(user_raw)), "user_raw": user_raw})
    ds = RecDataset(
        name, inter, out_items, users, modalities, has_timestamps=has_time, files=[ipath]
    )
    ds.validate()
    return ds


SPEC_KEYS = ("name", "interactions", "items", "text_column", "embeddings")


def from_spec(path: str | os.PathLike) -> RecDataset:
    """Load the data set a ``dataset.yaml`` describes (see the module docstring)."""
    import yaml

    p = Path(path)
    if p.is_dir():
        p = p / "dataset.yaml"
    if not p.is_file():
        raise DataError(f"{p}: no such file; a custom data set is described by a dataset.yaml")
    try:
        spec = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise DataError(f"{p}: not valid YAML ({e})") from None
    if not isinstance(spec, dict):
        raise DataError(f"{p}: expected a mapping with keys {', '.join(SPEC_KEYS)}")
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise DataError(f"{p}: unknown key(s) {unknown}; allowed: {', '.join(SPEC_KEYS)}")
    if not isinstance(spec.get("interactions"), str):
        raise DataError(f"{p}: 'interactions' (a file name) is required")
    for key in ("name", "items", "text_column"):
        if spec.get(key) is not None and not isinstance(spec[key], str):
            raise DataError(f"{p}: '{key}' must be a string")
    emb = spec.get("embeddings") or {}
    if not isinstance(emb, dict) or not all(isinstance(v, str) for v in emb.values()):
        raise DataError(f"{p}: 'embeddings' must map modality names to file names")
    if spec.get("text_column") and not spec.get("items"):
        raise DataError(f"{p}: 'text_column' needs an 'items' table")
    base = p.parent
    return load(
        base / spec["interactions"],
        base / spec["items"] if spec.get("items") else None,
        {str(k): base / v for k, v in emb.items()},
        name=spec.get("name") or base.resolve().name,
        text_column=spec.get("text_column"),
    )
