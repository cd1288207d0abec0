"""ml100k-mm: MovieLens 100K ratings + TMDB plot text + poster images (text + image)."""

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
)
from mmsid.data.download import resolve_data_dir
from mmsid.errors import DataError

NAME = "ml100k-mm"
REQUIRED = ["u.data", "u.item", "items_tmdb.csv"]
GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]


@guarded
def load(data_dir: str | os.PathLike | None = None, *, require_overview: bool = True) -> RecDataset:
    """Load ml100k-mm.

    Every rating is an implicit interaction (100,000 rows). Text is ``title. genres. overview``;
    with ``require_overview`` (default) an item without a TMDB overview has its text masked
    (title and genres alone say little), otherwise it keeps title + genres. Image is the poster
    path; items without a poster are masked.
    """
    folder = resolve_data_dir(NAME, REQUIRED, data_dir)
    path = folder / "u.data"
    ratings = pd.read_csv(
        reading(path),
        sep="\t",
        header=None,
        names=["user_raw", "item_raw", "rating", "timestamp"],
        dtype=str,
    )
    check_numeric(ratings, ["user_raw", "item_raw", "rating", "timestamp"], source=str(path))

    item_path = folder / "u.item"
    items = pd.read_csv(reading(item_path), sep="|", header=None, encoding="latin-1", dtype=str)
    if items.shape[1] != 5 + len(GENRES):
        raise DataError(
            f"{item_path}: expected {5 + len(GENRES)} '|'-separated columns, "
            f"found {items.shape[1]}; use the original MovieLens 100K u.item"
        )
    check_numeric(items, [0], source=str(item_path))
    items = items.sort_values(0, kind="stable").reset_index(drop=True)
    item_raw = items[0].astype(np.int64).to_numpy()
    genre_flags = items.iloc[:, 5:].astype(int).to_numpy()
    genre_names = [", ".join(g for g, f in zip(GENRES, row) if f) for row in genre_flags]

    unknown = ~ratings["item_raw"].isin(item_raw)
    if unknown.any():
        row = int(np.flatnonzero(unknown.to_numpy())[0])
        raise DataError(
            f"{path}: row {row} names item {ratings['item_raw'].iloc[row]} that "
            f"{item_path} does not list; the two files must come from one release"
        )

    item_index = pd.Series(np.arange(len(item_raw)), index=item_raw)
    user_raw = np.sort(ratings["user_raw"].unique()).astype(np.int64)
    user_index = pd.Series(np.arange(len(user_raw)), index=user_raw)
    inter = pd.DataFrame(
        {
            "user": user_index.loc[ratings["user_raw"].to_numpy()].to_numpy(),
            "item": item_index.loc[ratings["item_raw"].to_numpy()].to_numpy(),
            "timestamp": ratings["timestamp"].to_numpy(),
            "rating": ratings["rating"].to_numpy(),
        }
    )
    inter = finalize_interactions(inter, source=str(path))

    # TMDB enrichment: a few MovieLens ids appear twice; keep the first row with an overview.
    tmdb_path = folder / "items_tmdb.csv"
    tmdb = pd.read_csv(reading(tmdb_path))
    for col in ("movie_id", "overview"):
        if col not in tmdb.columns:
            raise DataError(
                f"{tmdb_path}: missing column '{col}'; expected the TMDB enrichment "
                f"with movie_id and overview"
            )
    tmdb = tmdb.assign(_has=tmdb["overview"].notna()).sort_values(
        ["movie_id", "_has"], ascending=[True, False], kind="stable"
    )
    overview = tmdb.drop_duplicates("movie_id").set_index("movie_id")["overview"]

    titles = items[1].fillna("").to_list()
    texts: list[str | None] = []
    for raw, title, genres in zip(item_raw, titles, genre_names):
        ov = overview.get(raw)
        ov = ov.strip() if isinstance(ov, str) and ov.strip() else None
        if ov is None and require_overview:
            texts.append(None)
        else:
            texts.append(". ".join(p for p in (title, genres, ov) if p))
    posters = [folder / "posters" / f"{raw}.jpg" for raw in item_raw]
    images = [p if p.exists() else None for p in posters]

    item_df = pd.DataFrame(
        {
            "item": np.arange(len(item_raw)),
            "item_raw": item_raw,
            "title": titles,
            "genres": genre_names,
        }
    )
    user_df = pd.DataFrame({"user": np.arange(len(user_raw)), "user_raw": user_raw})
    ds = RecDataset(
        name=NAME,
        interactions=inter,
        items=item_df,
        users=user_df,
        modalities={
            "text": Modality("text", "text", texts, source=str(tmdb_path)),
            "image": Modality("image", "image", images, source=str(folder / "posters")),
        },
        has_timestamps=True,
        files=[path, item_path, tmdb_path],
    )
    ds.validate()
    return ds
