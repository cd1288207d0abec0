"""CTR samples on the protocol's boundary (mmsid.protocol).

Positives: every training interaction trains; each user's validation interaction is the
validation positive and the test interaction the test positive (the retrieval targets, so no
ranking model or tokenizer reads what any task evaluates on). A sample's history is the user's
earlier non-cold items (``label="rating"``: earlier clicked ones), the last ``max_history``.

Negatives (``label="sampled"``): ``neg_ratio`` per positive with the positive's user and history,
drawn from the protocol's seed, so every model and every model seed sees the same samples.

* ``negatives="popularity"`` (default): warm items drawn with probability proportional to
  their training popularity, so a scorer that returns popularity is not rewarded for it (AUC
  then measures what a model knows beyond popularity). ``"uniform"``: warm items uniformly
  (the old setting; AUC then largely measures popularity).
* A cold positive (validation/test only) gets cold negatives, uniformly: its AUC answers
  "which of the new items will this user click", the production question for new items.
* Excluded: items the user interacted with up to and including the sample's split (training
  negatives exclude the user's training items only: no look-ahead into validation or test).
  Cold items are never training negatives.

``label="rating"`` (MovieLens): interactions rated >= ``min_rating`` are clicks and the others
real non-clicks; no sampling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from mmsid.errors import ConfigError
from mmsid.protocol import HELD_OUT, TEST, TRAIN, VALID, OnProtocol, Protocol

# a split's negatives exclude the items the user touched up to and including that split (the
# held-out cold interactions happened before validation; they are never warm negatives anyway)
UPTO = {
    "train": (TRAIN,),
    "valid": (TRAIN, HELD_OUT, VALID),
    "test": (TRAIN, HELD_OUT, VALID, TEST),
}


@dataclass(frozen=True)
class CTRConfig:
    neg_ratio: int = 1
    negatives: Literal["popularity", "uniform"] = "popularity"
    label: Literal["sampled", "rating"] = "sampled"
    min_rating: float = 4.0

    def __post_init__(self) -> None:
        if self.negatives not in ("popularity", "uniform"):
            raise ConfigError(
                f"ranking negatives '{self.negatives}': choose 'popularity' or 'uniform'"
            )
        if self.label not in ("sampled", "rating"):
            raise ConfigError(f"ranking label '{self.label}': choose 'sampled' or 'rating'")
        if self.label == "sampled" and self.neg_ratio < 1:
            raise ConfigError(f"ranking neg_ratio must be >= 1, got {self.neg_ratio}")


@dataclass
class CTRSplit:
    """Arrays per split: user (N,), item (N,), label (N,), history (N, H) padded with -1 on the
    left; ``row`` (N,) the interaction row of a positive / real label, -1 for a sampled one."""

    user: np.ndarray
    item: np.ndarray
    label: np.ndarray
    history: np.ndarray
    row: np.ndarray


@dataclass
class CTRData(OnProtocol):
    train: CTRSplit
    valid: CTRSplit
    test: CTRSplit
    protocol: Protocol
    cfg: CTRConfig


def _histories(p: Protocol, clicked: np.ndarray) -> np.ndarray:
    """(N, H) for every interaction: the user's earlier clicked non-cold items, right-aligned."""
    H = p.cfg.max_history
    inter = p.inter
    users, items = inter["user"].to_numpy(), inter["item"].to_numpy()
    usable = clicked & ~p.is_cold[items]
    hist = np.full((len(inter), H), -1, dtype=np.int64)
    buf: list[int] = []
    prev = -1
    for i in range(len(inter)):
        if users[i] != prev:
            buf, prev = [], users[i]
        if buf:
            h = buf[-H:]
            hist[i, H - len(h) :] = h
        if usable[i]:
            buf.append(int(items[i]))
    return hist


def sample_negatives(
    rng: np.random.Generator,
    users: np.ndarray,
    pool: np.ndarray,
    weights: np.ndarray,
    exclude: np.ndarray,
    n_items: int,
) -> np.ndarray:
    """One item from ``pool`` (drawn with ``weights``) per entry of ``users``, never an item
    whose code ``user * n_items + item`` is in the sorted array ``exclude``. Rejection rounds,
    then an exact draw from the user's allowed pool for the few left."""
    out = np.empty(len(users), dtype=np.int64)
    if not len(users):
        return out
    cdf = np.cumsum(weights / weights.sum())
    todo = np.arange(len(users))
    for _ in range(30):
        cand = pool[np.minimum(np.searchsorted(cdf, rng.random(len(todo))), len(pool) - 1)]
        code = users[todo] * n_items + cand
        k = np.minimum(np.searchsorted(exclude, code), max(len(exclude) - 1, 0))
        ok = exclude[k] != code if len(exclude) else np.ones(len(todo), bool)
        out[todo[ok]] = cand[ok]
        todo = todo[~ok]
        if not len(todo):
            return out
    for j in todo:  # users who touched most of the pool's mass
        allowed = ~np.isin(users[j] * n_items + pool, exclude)
        if not allowed.any():
            raise ConfigError(f"user {int(users[j])} interacted with every candidate negative")
        w = weights[allowed]
        out[j] = rng.choice(pool[allowed], p=w / w.sum())
    return out


def build_ctr(p: Protocol, cfg: CTRConfig = CTRConfig()) -> CTRData:
    inter = p.inter
    role = p.role
    users, items = inter["user"].to_numpy(), inter["item"].to_numpy()
    if cfg.label == "rating":
        label = (inter["rating"].to_numpy() >= cfg.min_rating).astype(np.float32)
    else:
        label = np.ones(len(inter), dtype=np.float32)
    hist = _histories(p, label > 0)

    warm = np.flatnonzero(~p.is_cold)
    if cfg.negatives == "popularity":
        warm_w = p.popularity[warm].astype(np.float64)
        warm, warm_w = warm[warm_w > 0], warm_w[warm_w > 0]
    else:
        warm_w = np.ones(len(warm))
    cold = p.cold_items
    rng = np.random.default_rng([p.cfg.seed, 7])  # the negatives' own stream
    out = {}
    for name, which in (("train", (TRAIN,)), ("valid", (VALID,)), ("test", (TEST,))):
        idx = np.flatnonzero(np.isin(role, which))
        u, it, y, h, r = users[idx], items[idx], label[idx], hist[idx], idx.astype(np.int64)
        if cfg.label == "sampled":
            # items the user touched up to and including this split
            seen = np.isin(role, UPTO[name])
            exclude = np.unique(users[seen] * p.n_items + items[seen])
            neg_u = np.repeat(u, cfg.neg_ratio)
            neg_h = np.repeat(h, cfg.neg_ratio, axis=0)
            cold_pos = np.repeat(p.is_cold[it], cfg.neg_ratio)
            neg_i = np.empty(len(neg_u), dtype=np.int64)
            neg_i[~cold_pos] = sample_negatives(
                rng, neg_u[~cold_pos], warm, warm_w, exclude, p.n_items
            )
            if cold_pos.any():
                neg_i[cold_pos] = sample_negatives(
                    rng, neg_u[cold_pos], cold, np.ones(len(cold)), exclude, p.n_items
                )
            u = np.concatenate([u, neg_u])
            it = np.concatenate([it, neg_i])
            y = np.concatenate([y, np.zeros(len(neg_u), dtype=np.float32)])
            h = np.concatenate([h, neg_h])
            r = np.concatenate([r, np.full(len(neg_u), -1, dtype=np.int64)])
        out[name] = CTRSplit(u, it, y, h, r)
    return CTRData(out["train"], out["valid"], out["test"], p, cfg)


def training_record(data: CTRData) -> tuple[np.ndarray, np.ndarray]:
    """(rows, items) a ranking model trains on: the labelled interactions and every item id it
    reads (targets, sampled negatives, histories)."""
    tr = data.train
    return tr.row[tr.row >= 0], np.unique(np.concatenate([tr.item, tr.history.ravel()]))
