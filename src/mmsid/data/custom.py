"""``custom``: the user's own interactions + item table + embedding files named as modalities."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from mmsid.data.base import Modality, RecDataset, check_finite, check_numeric, finalize_interactions
from mmsid.errors import DataError


def _read_table(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix in (".csv", ".tsv", ".txt"):
        return pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")
    raise DataError(f"{path}: unsupported table format '{path.suffix}'; use .parquet, .csv or .tsv")


def _read_embedding(path: Path) -> np.ndarray:
    if not path.exists():
        raise DataError(f"{path}: embedding file not found")
    if path.suffix == ".npy":
        arr = np.load(path)
    elif path.suffix == ".parquet":
        arr = pd.read_parquet(path).to_numpy()
    else:
        raise DataError(
            f"{path}: unsupported embedding format '{path.suffix}'; use .npy or "
            f".parquet (one row per item, in item-table order)"
        )
    if arr.ndim != 2:
        raise DataError(f"{path}: expected a 2-D array (n_items, d), got shape {arr.shape}")
    return arr.astype(np.float32)


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
        check_finite(arr, source=str(epath))
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
