"""The one evaluation protocol every stage reads: which interactions train, which are evaluated,
which items are cold, and the item slices.

Built once per data set (``build_protocol(ds, ProtocolConfig())``) and passed to tokenizer
fitting and fine-tuning, retrieval, ranking and the baselines, so no stage can draw its own
boundary.

* **Order.** Each user's interactions are ordered by ``(timestamp, item id)``: ties in time are
  broken by the item id (a stable rule that does not depend on the file's row order; 44% of
  ml100k-mm users' last two ratings share a timestamp). A data set without real time
  (``RecDataset.has_timestamps`` False: lfm2k-mm, amazon-beauty's positions) keeps the row order
  it was given; ``order_free`` is True only where that order is not a time order either
  (lfm2k-mm), and reports carry the flag.
* **Warm (leave-one-out, as TIGER).** For a user with at least ``min_length`` interactions the
  last is the test interaction, the second to last the validation interaction, the rest train.
  Shorter users only train. Every task uses this boundary: retrieval predicts the validation and
  test items; ranking's validation/test positives are the same interactions.
* **Cold.** A seeded ``cold_fraction`` of the catalogue is held out: none of its interactions
  trains anything (not the tokenizers' content fit, not fine-tuning pairs, not a sampled
  negative), and those items appear in no model input except as candidates to score. A cold
  item that is a user's validation/test item stays that user's target; those users form the
  ``cold`` slice. Tokenizers are fitted on warm items and assign cold items their IDs with
  ``transform``, as a new item would get in production.
* **Slices** (of a target item): ``head`` = the top ``head_share`` of the warm items by
  training popularity; ``long_tail`` = the other warm items; ``cold`` = the cold items;
  ``rare<30`` = items with fewer than ``rare_threshold`` training interactions (cold included):
  the PSRQ paper's "Cold AUC" slice, under its own name.

The guard: :meth:`Protocol.check_training` raises :class:`LeakError` when a training input holds
an interaction that is not a training interaction (a validation/test interaction of any task,
or a held-out cold-item interaction) or names a cold item. Every stage calls it on what it
trains on and records those rows (``trained_on.npz``) so a test can check them again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mmsid.data.base import RecDataset
from mmsid.errors import ConfigError, MMSIDError

# interaction roles
TRAIN, VALID, TEST, HELD_OUT = 0, 1, 2, 3
ROLE_NAMES = {TRAIN: "train", VALID: "valid", TEST: "test", HELD_OUT: "held-out"}

# data sets whose row order within a user is no time order (no "next" item in truth)
ORDER_FREE = {"lfm2k-mm"}


class LeakError(MMSIDError):
    """A training input holds an interaction that some task evaluates on, or a cold item."""


@dataclass(frozen=True)
class ProtocolConfig:
    """Settings of the protocol; one value per data set and run, shared by all model seeds so
    that every model is tested on the same users and items (paired comparisons)."""

    cold_fraction: float = 0.05  # share of the catalogue held out as cold items
    seed: int = 0  # draws the cold items and the ranking negatives
    max_history: int = 20  # items of history a model reads
    min_length: int = 3  # users shorter than this only train
    head_share: float = 0.2  # head: top share of warm items by training popularity
    rare_threshold: int = 30  # rare<30 slice (PSRQ paper's "Cold AUC")

    def __post_init__(self) -> None:
        if not 0.0 <= self.cold_fraction < 1.0:
            raise ConfigError(f"protocol.cold_fraction must be in [0, 1), got {self.cold_fraction}")
        if self.max_history < 1 or self.min_length < 3:
            raise ConfigError("protocol.max_history must be >= 1 and protocol.min_length >= 3")
        if not 0.0 < self.head_share < 1.0:
            raise ConfigError(f"protocol.head_share must be in (0, 1), got {self.head_share}")


@dataclass
class EvalSplit:
    """Users to evaluate on one split: ``history[i]`` is what the model reads (the user's
    non-cold items before the target, oldest first, the last ``max_history``), ``target[i]``
    the held-out item, ``row[i]`` its interaction row."""

    user: np.ndarray  # (U,)
    history: list[np.ndarray]
    target: np.ndarray  # (U,)
    row: np.ndarray  # (U,) rows of Protocol.inter

    def __len__(self) -> int:
        return len(self.target)


@dataclass
class Protocol:
    """See the module docstring. ``inter`` holds every interaction in protocol order with a
    ``role`` column; row ``r`` of ``inter`` is interaction ``r`` everywhere below."""

    dataset: str
    cfg: ProtocolConfig
    inter: pd.DataFrame  # user, item, timestamp, rating, role (+ the loader's extra columns)
    n_users: int
    n_items: int
    cold_items: np.ndarray  # sorted item ids
    order_free: bool
    valid: EvalSplit
    test: EvalSplit
    popularity: np.ndarray = field(repr=False)  # (n_items,) training interactions per item
    is_cold: np.ndarray = field(repr=False)  # (n_items,) bool

    # ---- what may be trained on ---------------------------------------------------------

    @property
    def role(self) -> np.ndarray:
        return self.inter["role"].to_numpy()

    @property
    def train_rows(self) -> np.ndarray:
        return np.flatnonzero(self.role == TRAIN)

    @property
    def train(self) -> pd.DataFrame:
        """The training interactions (protocol order)."""
        return self.inter.iloc[self.train_rows]

    @property
    def warm_items(self) -> np.ndarray:
        """Item ids a tokenizer may fit on (content only): every non-cold item."""
        return np.flatnonzero(~self.is_cold)

    def train_sequences(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """user -> (items, rows) of the user's training interactions in order."""
        tr = self.train
        users, items, rows = tr["user"].to_numpy(), tr["item"].to_numpy(), self.train_rows
        bounds = np.flatnonzero(np.diff(users)) + 1
        starts, ends = np.r_[0, bounds], np.r_[bounds, len(users)]
        return {int(users[s]): (items[s:e], rows[s:e]) for s, e in zip(starts, ends) if e > s}

    def transitions(self) -> tuple[np.ndarray, np.ndarray]:
        """Behaviour pairs for tokenizer fine-tuning: ``pairs`` (P, 2) items (a, b) where b
        directly followed a in a user's training sequence, and ``rows`` (P, 2) their
        interaction rows. Only training interactions of warm items take part."""
        pairs, rows = [], []
        for items, r in self.train_sequences().values():
            if len(items) > 1:
                pairs.append(np.stack([items[:-1], items[1:]], 1))
                rows.append(np.stack([r[:-1], r[1:]], 1))
        if not pairs:
            return np.zeros((0, 2), np.int64), np.zeros((0, 2), np.int64)
        return np.concatenate(pairs).astype(np.int64), np.concatenate(rows).astype(np.int64)

    # ---- the guard ----------------------------------------------------------------------

    def check_training(
        self,
        *,
        rows: np.ndarray | None = None,
        items: np.ndarray | None = None,
        what: str = "training input",
    ) -> None:
        """Raise LeakError unless every interaction row in ``rows`` is a training interaction
        and no item in ``items`` (anything a model or tokenizer trains on: content rows,
        history items, targets, sampled negatives) is cold."""
        if rows is not None:
            rows = np.asarray(rows, dtype=np.int64).ravel()
            if len(rows) and (rows.min() < 0 or rows.max() >= len(self.inter)):
                raise LeakError(f"{what}: interaction rows outside 0..{len(self.inter) - 1}")
            bad = rows[self.role[rows] != TRAIN]
            if len(bad):
                roles = pd.Series(self.role[bad]).map(ROLE_NAMES).value_counts().to_dict()
                raise LeakError(
                    f"{what}: {len(bad)} of {len(rows)} interactions are not training "
                    f"interactions of the {self.dataset} protocol ({roles}); build training "
                    "inputs from Protocol.train / train_sequences() / transitions()"
                )
        if items is not None:
            items = np.asarray(items, dtype=np.int64).ravel()
            items = items[items >= 0]  # -1 pads histories
            cold = items[self.is_cold[items]]
            if len(cold):
                raise LeakError(
                    f"{what}: {len(cold)} entries name cold items (e.g. item {int(cold[0])}); "
                    "cold items are held out of every training input"
                )

    def record(self, path: str | Path, *, rows: np.ndarray, items: np.ndarray) -> None:
        """Check, then write what a stage trained on: interaction ``rows`` and the ``items`` it
        read (unique ids), with the protocol's fingerprint."""
        from mmsid.io import save_npz

        self.check_training(rows=rows, items=items, what=str(path))
        save_npz(
            path,
            rows=np.unique(np.asarray(rows, dtype=np.int64).ravel()),
            items=np.unique(np.asarray(items, dtype=np.int64).ravel()),
            fingerprint=np.array(self.fingerprint()),
        )

    def fingerprint(self) -> str:
        from mmsid.io import stable_hash

        return stable_hash(
            {
                "dataset": self.dataset,
                "cfg": self.cfg.__dict__,
                "n": len(self.inter),
                "role": stable_hash(self.role),
            }
        )

    # ---- slices -------------------------------------------------------------------------

    def slices(self, items: np.ndarray) -> dict[str, np.ndarray]:
        """Boolean masks over ``items`` (any shape): head, long_tail, cold, rare<30."""
        items = np.asarray(items)
        warm = ~self.is_cold
        n_head = max(1, round(self.cfg.head_share * int(warm.sum())))
        pop = np.where(warm, self.popularity, -1)  # cold items never head
        is_head = np.zeros(self.n_items, dtype=bool)
        is_head[np.argsort(-pop, kind="stable")[:n_head]] = True
        return {
            "head": is_head[items],
            "long_tail": (warm & ~is_head)[items],
            "cold": self.is_cold[items],
            "rare<30": (self.popularity < self.cfg.rare_threshold)[items],
        }

    def summary(self) -> dict:
        """Sizes a report prints beside its tables."""
        out = {
            "dataset": self.dataset,
            "order_free": self.order_free,
            "cold_items": int(len(self.cold_items)),
            "items": self.n_items,
            "train_interactions": int((self.role == TRAIN).sum()),
            "held_out_interactions": int((self.role == HELD_OUT).sum()),
            "config": dict(self.cfg.__dict__),
        }
        for name, split in (("valid", self.valid), ("test", self.test)):
            out[f"{name}_users"] = len(split)
            out[f"{name}_slices"] = {k: int(v.sum()) for k, v in self.slices(split.target).items()}
        return out


class OnProtocol:
    """Mixin of the task data built on a protocol (ranking's CTRData, retrieval's
    RetrievalData): sizes, training popularity and slices all come from ``self.protocol``."""

    protocol: Protocol

    @property
    def n_items(self) -> int:
        return self.protocol.n_items

    @property
    def n_users(self) -> int:
        return self.protocol.n_users

    @property
    def train_popularity(self) -> np.ndarray:
        return self.protocol.popularity

    def slices(self, items: np.ndarray) -> dict[str, np.ndarray]:
        """Boolean masks over ``items``: the protocol's head, long_tail, cold, rare<30."""
        return self.protocol.slices(items)


def protocol_order(ds: RecDataset) -> pd.DataFrame:
    """Interactions in protocol order with ``row`` = the loader's row index."""
    inter = ds.interactions.reset_index(drop=True).copy()
    inter["row_in_loader"] = np.arange(len(inter))
    keys = ["user", "timestamp", "item"] if ds.has_timestamps else ["user", "timestamp"]
    return inter.sort_values(keys, kind="stable").reset_index(drop=True)


def build_protocol(ds: RecDataset, cfg: ProtocolConfig | None = None) -> Protocol:
    cfg = cfg or ProtocolConfig()
    inter = protocol_order(ds)
    users = inter["user"].to_numpy()
    items = inter["item"].to_numpy()
    pos_from_end = inter.groupby("user").cumcount(ascending=False).to_numpy()
    length = inter.groupby("user")["item"].transform("size").to_numpy()
    eligible = length >= cfg.min_length

    rng = np.random.default_rng(cfg.seed)
    n_cold = round(cfg.cold_fraction * ds.n_items)
    cold_items = np.sort(rng.choice(ds.n_items, size=n_cold, replace=False)).astype(np.int64)
    is_cold = np.zeros(ds.n_items, dtype=bool)
    is_cold[cold_items] = True

    role = np.full(len(inter), TRAIN, dtype=np.int8)
    role[eligible & (pos_from_end == 1)] = VALID
    role[eligible & (pos_from_end == 0)] = TEST
    role[(role == TRAIN) & is_cold[items]] = HELD_OUT
    inter["role"] = role

    popularity = np.bincount(items[role == TRAIN], minlength=ds.n_items)
    H = cfg.max_history

    def split(which: int) -> EvalSplit:
        rows = np.flatnonzero(role == which)
        hist, keep = [], []
        # the history: the user's earlier interactions that are not cold items (train, and at
        # test time the validation item too); inputs are read at evaluation, never trained on
        starts = np.searchsorted(users, users[rows], side="left")
        for s, r in zip(starts, rows):
            h = items[s:r]
            h = h[~is_cold[h]][-H:]
            keep.append(len(h) > 0)  # a user whose only earlier items are cold has no input
            if len(h):
                hist.append(h)
        rows = rows[np.array(keep, dtype=bool)]
        return EvalSplit(users[rows].astype(np.int64), hist, items[rows].astype(np.int64), rows)

    return Protocol(
        dataset=ds.name,
        cfg=cfg,
        inter=inter,
        n_users=ds.n_users,
        n_items=ds.n_items,
        cold_items=cold_items,
        order_free=ds.name in ORDER_FREE,
        valid=split(VALID),
        test=split(TEST),
        popularity=popularity,
        is_cold=is_cold,
    )


_CACHE: dict[str, Protocol] = {}


def load_protocol(
    dataset: str, data_dir: str | None = None, cfg: ProtocolConfig | dict | None = None
) -> Protocol:
    """Load the data set and build its protocol, memoised per (dataset, folder, settings) in
    this process (the pipeline's stages share one)."""
    from mmsid.data import load_dataset
    from mmsid.io import stable_hash

    if isinstance(cfg, dict):
        cfg = ProtocolConfig(**cfg)
    cfg = cfg or ProtocolConfig()
    key = stable_hash([dataset, str(data_dir), cfg.__dict__])
    if key not in _CACHE:
        if len(_CACHE) > 4:
            _CACHE.clear()
        _CACHE[key] = build_protocol(load_dataset(dataset, data_dir), cfg)
    return _CACHE[key]
