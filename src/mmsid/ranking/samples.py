"""CTR samples from a time-ordered split.

Each user's interactions, in time order, are split by position: the first ``1 - valid - test``
share trains, then validation, then test (the publishers' split column is used instead where
the data set has one, e.g. lfm2k-mm). A positive is an interaction; for each positive,
``neg_ratio`` negatives are drawn (seeded) from items the user never interacted with in any
split, so a validation/test positive is never a training negative. With ``label="rating"``
(MovieLens) interactions rated >= ``min_rating`` are clicks and the others real non-clicks; no
sampling. A sample's history is the user's positive items before it, the last ``max_history``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from mmsid.data.base import RecDataset
from mmsid.eval.slices import item_slices


@dataclass(frozen=True)
class CTRConfig:
    valid_frac: float = 0.1
    test_frac: float = 0.1
    neg_ratio: int = 1
    label: Literal["sampled", "rating"] = "sampled"
    min_rating: float = 4.0
    max_history: int = 20
    use_publisher_split: bool = True
    cold_threshold: int = 30  # cold item: fewer training interactions (PSRQ paper)
    head_share: float = 0.2  # head: top 20% items by training popularity
    seed: int = 0


@dataclass
class CTRSplit:
    """Arrays per split: user (N,), item (N,), label (N,), history (N, H) padded with -1."""

    user: np.ndarray
    item: np.ndarray
    label: np.ndarray
    history: np.ndarray


@dataclass
class CTRData:
    train: CTRSplit
    valid: CTRSplit
    test: CTRSplit
    train_popularity: np.ndarray  # (n_items,) training positives per item
    n_items: int
    n_users: int
    cfg: CTRConfig

    def slices(self, items: np.ndarray) -> dict[str, np.ndarray]:
        """Boolean masks over ``items``: head, long_tail, cold (see CTRConfig)."""
        return item_slices(
            self.train_popularity,
            items,
            head_share=self.cfg.head_share,
            cold_threshold=self.cfg.cold_threshold,
        )


def _split_labels(ds: RecDataset, cfg: CTRConfig) -> np.ndarray:
    inter = ds.interactions
    if cfg.use_publisher_split and "split" in inter.columns:
        return inter["split"].to_numpy()
    pos = inter.groupby("user").cumcount().to_numpy()
    n = inter.groupby("user")["item"].transform("size").to_numpy()
    n_test = np.maximum(1, np.round(cfg.test_frac * n)).astype(int)
    n_valid = np.maximum(1, np.round(cfg.valid_frac * n)).astype(int)
    out = np.full(len(inter), "train", dtype=object)
    out[pos >= n - n_test - n_valid] = "valid"
    out[pos >= n - n_test] = "test"
    out[n < 3] = "train"  # too short to give each split an interaction
    return out


def build_ctr(ds: RecDataset, cfg: CTRConfig = CTRConfig()) -> CTRData:
    inter = ds.interactions.reset_index(drop=True)  # sorted by (user, timestamp)
    split = _split_labels(ds, cfg)
    if cfg.label == "rating":
        label = (inter["rating"].to_numpy() >= cfg.min_rating).astype(np.float32)
    else:
        label = np.ones(len(inter), dtype=np.float32)
    users, items = inter["user"].to_numpy(), inter["item"].to_numpy()

    # history: previous positives of the same user (all splits: the past is allowed)
    H = cfg.max_history
    hist = np.full((len(inter), H), -1, dtype=np.int64)
    buf: list[int] = []
    prev_user = -1
    for i in range(len(inter)):
        if users[i] != prev_user:
            buf, prev_user = [], users[i]
        if buf:
            h = buf[-H:]
            hist[i, H - len(h) :] = h  # right-aligned, padding on the left
        if label[i] > 0:
            buf.append(int(items[i]))

    rng = np.random.default_rng(cfg.seed)
    touched = pd.Series(items).groupby(users).apply(lambda s: np.unique(s.to_numpy()))
    out = {}
    for name in ("train", "valid", "test"):
        idx = np.flatnonzero(split == name)
        u, it, y, h = users[idx], items[idx], label[idx], hist[idx]
        if cfg.label == "sampled" and cfg.neg_ratio > 0:
            neg_u = np.repeat(u, cfg.neg_ratio)
            neg_h = np.repeat(h, cfg.neg_ratio, axis=0)
            neg_i = np.empty(len(neg_u), dtype=np.int64)
            for j, user in enumerate(neg_u):
                seen = touched[user]
                while True:  # rejection sampling: catalogues are much larger than histories
                    cand = int(rng.integers(ds.n_items))
                    k = np.searchsorted(seen, cand)
                    if k >= len(seen) or seen[k] != cand:
                        break
                neg_i[j] = cand
            u = np.concatenate([u, neg_u])
            it = np.concatenate([it, neg_i])
            y = np.concatenate([y, np.zeros(len(neg_u), dtype=np.float32)])
            h = np.concatenate([h, neg_h])
        out[name] = CTRSplit(u, it, y, h)
    train_pos = out["train"].item[out["train"].label > 0]
    pop = np.bincount(train_pos, minlength=ds.n_items)
    return CTRData(out["train"], out["valid"], out["test"], pop, ds.n_items, ds.n_users, cfg)
