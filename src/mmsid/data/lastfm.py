"""lfm2k-mm: Last.fm HetRec 2011 artists; tag text, VGGish + Whisper audio, MiniLM text."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from mmsid.data.base import (
    Modality,
    RecDataset,
    check_numeric,
    finalize_interactions,
    guarded,
    reading,
    to_float32,
)
from mmsid.data.download import resolve_data_dir
from mmsid.errors import DataError

NAME = "lfm2k-mm"
REQUIRED = [
    "lfm2k.inter",
    "lfm2k_og_ids.inter",
    "lfm2k_text.tsv",
    "all-MiniLM-L6-v2.npy",
    "vggish.npy",
    "whisper.npy",
]
OPTIONAL = ("artists.dat",)  # artist names for the item table, when present
SPLITS = {0: "train", 1: "valid", 2: "test"}
EMBEDDINGS = {
    "text_minilm": "all-MiniLM-L6-v2.npy",
    "audio_vggish": "vggish.npy",
    "audio_whisper": "whisper.npy",
}


@guarded
def load(data_dir: str | os.PathLike | None = None) -> RecDataset:
    """Load lfm2k-mm.

    No timestamps: ``timestamp`` is the row order within a user, and the publishers' split is
    kept in column ``split`` (train/valid/test). Modalities: ``text`` (raw tags, encoded by
    MiniLM like every text), ``text_minilm`` (the shipped MiniLM features), ``audio_vggish``,
    ``audio_whisper``.
    """
    folder = resolve_data_dir(NAME, REQUIRED, data_dir, optional=OPTIONAL)
    path = folder / "lfm2k.inter"
    df = pd.read_csv(reading(path), sep="\t", dtype=str)
    check_numeric(df, ["userID", "itemID", "rating", "x_label"], source=str(path))
    og_path = folder / "lfm2k_og_ids.inter"
    og = pd.read_csv(reading(og_path), sep="\t", dtype=str)
    check_numeric(og, ["userID", "itemID"], source=str(og_path))
    if len(og) != len(df):
        raise DataError(
            f"{og_path}: {len(og)} rows but {path} has {len(df)}; the two files "
            f"must match row for row"
        )

    n_items = int(df["itemID"].max()) + 1
    n_users = int(df["userID"].max()) + 1
    # itemID -> original artistID (identical on every row of the same item).
    artist = pd.Series(og["itemID"].to_numpy(), index=df["itemID"].to_numpy())
    artist = artist[~artist.index.duplicated()].reindex(range(n_items))
    user_raw = pd.Series(og["userID"].to_numpy(), index=df["userID"].to_numpy())
    user_raw = user_raw[~user_raw.index.duplicated()].reindex(range(n_users))

    order = df.groupby("userID").cumcount().to_numpy()
    inter = pd.DataFrame(
        {
            "user": df["userID"].to_numpy(),
            "item": df["itemID"].to_numpy(),
            "timestamp": order,
            "rating": df["rating"].to_numpy(),
            "split": df["x_label"].astype(int).map(SPLITS).to_numpy(),
        }
    )
    inter = finalize_interactions(inter, source=str(path), dedupe_on=("user", "item"))

    text_path = folder / "lfm2k_text.tsv"
    text = pd.read_csv(reading(text_path), sep="\t", dtype={"artistID": "Int64", "text": str})
    tags = text.dropna().drop_duplicates("artistID").set_index("artistID")["text"]
    texts = [
        ("Artist tags: " + tags[a].replace(",", ", ")) if pd.notna(a) and a in tags.index else None
        for a in artist.to_numpy()
    ]
    names = {}
    if (folder / "artists.dat").exists():
        art = pd.read_csv(reading(folder / "artists.dat"), sep="\t", dtype=str)
        names = dict(zip(art["id"].astype(int), art["name"]))

    modalities = {"text": Modality("text", "text", texts, source=str(text_path))}
    for mod, fname in EMBEDDINGS.items():
        fpath = folder / fname
        arr = np.load(reading(fpath))
        if arr.ndim != 2 or arr.shape[0] != n_items:
            raise DataError(
                f"{fpath}: shape {arr.shape}, expected ({n_items}, d) — one row per "
                f"itemID of {path}"
            )
        arr = to_float32(arr, source=str(fpath))
        modalities[mod] = Modality(mod, "embedding", arr, source=str(fpath))

    items = pd.DataFrame(
        {
            "item": np.arange(n_items),
            "item_raw": artist.to_numpy().astype(int),
            "title": [names.get(int(a), "") for a in artist.to_numpy()],
        }
    )
    users = pd.DataFrame({"user": np.arange(n_users), "user_raw": user_raw.to_numpy().astype(int)})
    ds = RecDataset(
        NAME,
        inter,
        items,
        users,
        modalities,
        has_timestamps=False,
        files=[path, og_path, text_path],
    )
    ds.validate()
    return ds
