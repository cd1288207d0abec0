"""Next-item samples for retrieval from the TIGER leave-one-out split.

Training samples are every prefix of each user's training sequence (TIGER): for a training
sequence ``s`` and each ``t >= 1``, history ``s[t-H:t]`` and target ``s[t]``. Validation and test
are the split's held-out items with their histories. Histories are (M, H) arrays, oldest
first, padded with -1 at the end.

Slices (by the target item): ``head`` = the top ``head_share`` of items by training
popularity, ``long_tail`` = the rest, ``cold`` = items with fewer than ``cold_threshold``
training interactions (default 1: never seen in retrieval training, which in leave-one-out
happens to items that occur only as someone's last or second-to-last item).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmsid.data.base import RecDataset
from mmsid.data.splits import leave_one_out
from mmsid.eval.slices import item_slices


@dataclass
class NextItemSplit:
    user: np.ndarray  # (M,)
    history: np.ndarray  # (M, H) item ids, oldest first, -1 padded at the end
    target: np.ndarray  # (M,)

    def __len__(self) -> int:
        return len(self.target)

    def take(self, idx: np.ndarray) -> NextItemSplit:
        return NextItemSplit(self.user[idx], self.history[idx], self.target[idx])


@dataclass
class RetrievalData:
    train: NextItemSplit
    valid: NextItemSplit
    test: NextItemSplit
    train_sequences: list[np.ndarray]  # per user with a training sequence (SASRec reads these)
    train_popularity: np.ndarray  # (n_items,)
    n_items: int
    n_users: int
    head_share: float = 0.2
    cold_threshold: int = 1

    def slices(self, target: np.ndarray) -> dict[str, np.ndarray]:
        return item_slices(
            self.train_popularity,
            target,
            head_share=self.head_share,
            cold_threshold=self.cold_threshold,
        )


def pad_histories(hists: list[np.ndarray], H: int) -> np.ndarray:
    out = np.full((len(hists), H), -1, dtype=np.int64)
    for i, h in enumerate(hists):
        h = h[-H:]
        out[i, : len(h)] = h
    return out


def build_retrieval(
    ds: RecDataset,
    *,
    max_history: int = 20,
    head_share: float = 0.2,
    cold_threshold: int = 1,
) -> RetrievalData:
    loo = leave_one_out(ds, max_history=max_history)
    seqs = ds.sequences(loo.train)
    users, hists, targets, train_seqs = [], [], [], []
    for u, s in seqs.items():
        train_seqs.append(s)
        for t in range(1, len(s)):
            users.append(u)
            hists.append(s[max(0, t - max_history) : t])
            targets.append(s[t])
    pop = np.bincount(loo.train["item"].to_numpy(), minlength=ds.n_items)
    return RetrievalData(
        NextItemSplit(np.array(users), pad_histories(hists, max_history), np.array(targets)),
        NextItemSplit(
            loo.valid_users, pad_histories(loo.valid_history, max_history), loo.valid_target
        ),
        NextItemSplit(
            loo.test_users, pad_histories(loo.test_history, max_history), loo.test_target
        ),
        train_seqs,
        pop,
        ds.n_items,
        ds.n_users,
        head_share,
        cold_threshold,
    )
