"""Splits: leave-one-out by time (TIGER protocol) and a seeded cold-item split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mmsid.data.base import RecDataset


@dataclass
class LeaveOneOut:
    """Per-user sequences split as in TIGER: last item test, second-to-last validation.

    Attributes:
        train: interactions of every user without the last two (what models train on).
        valid_users / valid_history / valid_target: history = the user's items before the
            validation item, truncated to the last ``max_history``.
        test_users / test_history / test_target: history = every item before the last
            (training + validation item), truncated likewise.
    """

    train: pd.DataFrame
    valid_users: np.ndarray
    valid_history: list[np.ndarray]
    valid_target: np.ndarray
    test_users: np.ndarray
    test_history: list[np.ndarray]
    test_target: np.ndarray
    max_history: int


def leave_one_out(ds: RecDataset, *, max_history: int = 20, min_length: int = 3) -> LeaveOneOut:
    """TIGER split. Users with fewer than ``min_length`` interactions only contribute training
    data (they cannot give both a validation and a test item with a non-empty history)."""
    inter = ds.interactions.sort_values(["user", "timestamp"], kind="stable")
    pos_from_end = inter.groupby("user").cumcount(ascending=False).to_numpy()
    length = inter.groupby("user")["item"].transform("size").to_numpy()
    eligible = length >= min_length
    train = inter[(pos_from_end >= 2) | ~eligible].reset_index(drop=True)

    seqs = ds.sequences(inter)
    vu, vh, vt, tu, th, tt = [], [], [], [], [], []
    for u, s in seqs.items():
        if len(s) < min_length:
            continue
        vu.append(u)
        vh.append(s[:-2][-max_history:])
        vt.append(s[-2])
        tu.append(u)
        th.append(s[:-1][-max_history:])
        tt.append(s[-1])
    return LeaveOneOut(
        train, np.array(vu), vh, np.array(vt), np.array(tu), th, np.array(tt), max_history
    )


@dataclass
class ColdItemSplit:
    """A seeded fraction of items held out with all their interactions.

    ``warm`` holds the interactions of the other items (tokenizer behaviour training and
    retrieval training read only these); ``cold`` those of the held-out items.
    """

    cold_items: np.ndarray
    warm: pd.DataFrame
    cold: pd.DataFrame


def cold_item_split(ds: RecDataset, *, fraction: float = 0.1, seed: int = 0) -> ColdItemSplit:
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"cold-item fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    n_cold = max(1, round(fraction * ds.n_items))
    cold_items = np.sort(rng.choice(ds.n_items, size=n_cold, replace=False))
    is_cold = ds.interactions["item"].isin(cold_items).to_numpy()
    return ColdItemSplit(
        cold_items,
        ds.interactions[~is_cold].reset_index(drop=True),
        ds.interactions[is_cold].reset_index(drop=True),
    )


def training_transitions(ds: RecDataset, *, max_history: int = 20) -> np.ndarray:
    """(P, 2) item pairs (a, b) where b directly followed a in a user's *training* sequence
    of the leave-one-out split: the behavior signal for tokenizer fine-tuning (MMQ stage 2).
    Validation and test items never appear in a pair unless the same item was also trained
    on in that position."""
    loo = leave_one_out(ds, max_history=max_history)
    seqs = [s for s in ds.sequences(loo.train).values() if len(s) > 1]
    if not seqs:
        return np.zeros((0, 2), dtype=np.int64)
    return np.concatenate([np.stack([s[:-1], s[1:]], 1) for s in seqs]).astype(np.int64)
