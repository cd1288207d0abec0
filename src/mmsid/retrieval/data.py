"""Next-item samples for retrieval on the protocol's boundary (mmsid.protocol).

Training samples are every prefix of each user's training sequence (TIGER): for a training
sequence ``s`` and each ``t >= 1``, history ``s[t-H:t]`` and target ``s[t]``. Validation and test
are the protocol's held-out items with their histories. Histories are (M, H) arrays, oldest
first, padded with -1 at the end. Slices (by the target item) are the protocol's: head,
long_tail, cold (held out of every training input), rare<30.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmsid.protocol import EvalSplit, OnProtocol, Protocol


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
class RetrievalData(OnProtocol):
    train: NextItemSplit
    valid: NextItemSplit
    test: NextItemSplit
    train_sequences: list[np.ndarray]  # per user with a training sequence (SASRec reads these)
    train_rows: np.ndarray  # interaction rows of the training sequences (the guard's record)
    protocol: Protocol


def pad_histories(hists: list[np.ndarray], H: int) -> np.ndarray:
    out = np.full((len(hists), H), -1, dtype=np.int64)
    for i, h in enumerate(hists):
        h = h[-H:]
        out[i, : len(h)] = h
    return out


def build_retrieval(p: Protocol) -> RetrievalData:
    H = p.cfg.max_history
    users, hists, targets, train_seqs, rows = [], [], [], [], []
    for u, (s, r) in p.train_sequences().items():
        train_seqs.append(s)
        rows.append(r)
        for t in range(1, len(s)):
            users.append(u)
            hists.append(s[max(0, t - H) : t])
            targets.append(s[t])

    def held(e: EvalSplit) -> NextItemSplit:
        return NextItemSplit(e.user, pad_histories(e.history, H), e.target)

    return RetrievalData(
        NextItemSplit(
            np.array(users, dtype=np.int64), pad_histories(hists, H), np.array(targets, np.int64)
        ),
        held(p.valid),
        held(p.test),
        train_seqs,
        np.concatenate(rows) if rows else np.zeros(0, np.int64),
        p,
    )
