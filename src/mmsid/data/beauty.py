"""amazon-beauty: TIGER's Amazon Beauty (22,363 users, 12,101 items, 198,502 interactions)."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd

from mmsid.data.base import Modality, RecDataset, finalize_interactions, guarded, reading
from mmsid.data.download import resolve_data_dir
from mmsid.errors import DataError

NAME = "amazon-beauty"
REQUIRED = ["sequential_data.txt", "items.jsonl"]


@guarded
def load(data_dir: str | os.PathLike | None = None) -> RecDataset:
    """Load amazon-beauty.

    ``sequential_data.txt``: one line per user, ``user item item ...`` already in time order;
    ``timestamp`` is the position in that line.

    Modalities (all text):
      - ``text``: ``title. Category > path`` in one string (the default; every item has a
        title). This is what TIGER embeds.
      - ``title`` and ``categories``: the same two fields as separate views. Beauty has no
        second real modality; MMQ's issue accepts the two views as a documented stand-in
        (benchmarks/bench_mmq.py uses them for every tokenizer on this data set). Items
        without categories lack the ``categories`` view (mask False).
    """
    folder = resolve_data_dir(NAME, REQUIRED, data_dir)
    path = folder / "sequential_data.txt"
    users, items, pos = [], [], []
    with open(reading(path)) as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            try:
                ids = [int(p) for p in parts]
            except ValueError as e:
                raise DataError(
                    f"{path}: line {lineno} has a non-integer id ({e}); each line "
                    f"is 'user item item ...' with integer ids"
                ) from None
            u, seq = ids[0], ids[1:]
            users.extend([u] * len(seq))
            items.extend(seq)
            pos.extend(range(len(seq)))

    if not items:
        raise DataError(f"{path}: holds no interactions; each line is 'user item item ...'")
    item_path = folder / "items.jsonl"
    rows = []
    with open(reading(item_path)) as f:
        for lineno, line in enumerate(f, start=1):
            rec = json.loads(line)
            if "item_id" not in rec or "title" not in rec:
                raise DataError(f"{item_path}: line {lineno} lacks 'item_id' or 'title'")
            rows.append(rec)
    meta = pd.DataFrame(rows).sort_values("item_id").reset_index(drop=True)
    n_items = len(meta)
    if not np.array_equal(meta["item_id"].to_numpy(), np.arange(n_items)):
        raise DataError(f"{item_path}: item_id must run 0..{n_items - 1} without gaps")
    items_arr = np.asarray(items, dtype=np.int64)
    if items_arr.max() >= n_items or items_arr.min() < 0:
        raise DataError(f"{path}: item id {items_arr.max()} not in {item_path} (0..{n_items - 1})")

    user_raw = np.unique(np.asarray(users, dtype=np.int64))
    user_index = pd.Series(np.arange(len(user_raw)), index=user_raw)
    inter = pd.DataFrame(
        {
            "user": user_index.loc[users].to_numpy(),
            "item": items_arr,
            "timestamp": pos,
            "rating": 1.0,
        }
    )
    inter = finalize_interactions(inter, source=str(path))

    def _cats(c: list) -> str:
        return "; ".join(" > ".join(p) for p in c) if isinstance(c, list) else ""

    cats = [_cats(c) for c in meta.get("categories", pd.Series([[]] * n_items))]
    titles = meta["title"].fillna("").astype(str).to_list()
    texts = [". ".join(p for p in (t, c) if p) or None for t, c in zip(titles, cats)]
    item_df = pd.DataFrame(
        {
            "item": np.arange(n_items),
            "item_raw": meta["item_id"].to_numpy(),
            "title": titles,
            "categories": cats,
        }
    )
    user_df = pd.DataFrame({"user": np.arange(len(user_raw)), "user_raw": user_raw})
    ds = RecDataset(
        NAME,
        inter,
        item_df,
        user_df,
        {
            "text": Modality("text", "text", texts, source=str(item_path)),
            "title": Modality("title", "text", [t or None for t in titles], source=str(item_path)),
            "categories": Modality(
                "categories", "text", [c or None for c in cats], source=str(item_path)
            ),
        },
        has_timestamps=False,
        files=[path, item_path],
    )
    ds.validate()
    return ds
