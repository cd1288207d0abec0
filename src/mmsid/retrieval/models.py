"""The trainable retrievers behind one contract: each is built from the stage config and the
protocol's training data, with how an epoch's batches are drawn and how a batch is made.

* ``parallel-sid`` (mmsid.retrieval.parallel): training windows of the users' sequences,
  bucketed by length, every position supervised; reads a SID table's codes (no collision
  level: items that share a SID tie).
* ``tiger`` (mmsid.retrieval.tiger): one sample per training prefix, grouped by history
  length; reads unique SIDs (codes + collision level).
* ``sasrec`` (mmsid.retrieval.sasrec): training windows over item ids; cold items are left out
  of its training softmax.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from mmsid.errors import ConfigError, DataError
from mmsid.ids import SIDTable, load_sid_sets, table_codes
from mmsid.io import stable_hash
from mmsid.retrieval.data import RetrievalData
from mmsid.retrieval.parallel import ParallelSID, bucketed_batches
from mmsid.retrieval.sasrec import SASRec, training_windows
from mmsid.retrieval.tiger import TIGER

if TYPE_CHECKING:
    from mmsid.retrieval.config import RetrieveConfig


@dataclass
class Trainable:
    model: torch.nn.Module
    n_train: int  # training samples (windows or prefixes) per full epoch
    batches: Callable[[np.random.Generator], list[np.ndarray]]
    make_batch: Callable[[np.ndarray], dict[str, torch.Tensor]]
    content_key: str  # hash of what the model reads beyond the config (the SID table)


def sid_table(cfg: RetrieveConfig) -> SIDTable:
    """The SID set the config names, from a single- or multi-set file."""
    sets = load_sid_sets(cfg.sids)
    if cfg.sid_set in sets:
        return sets[cfg.sid_set]
    if len(sets) == 1:
        return next(iter(sets.values()))
    raise ConfigError(
        f"{cfg.sids}: no SID set '{cfg.sid_set}'; it holds {sorted(sets)} (use --sid-set)"
    )


def item_sids(cfg: RetrieveConfig, n_items: int) -> tuple[np.ndarray, list[int]]:
    """(n_items, L+1) unique SIDs (codes then collision) and each level's vocabulary size."""
    sids, K = table_codes(sid_table(cfg), cfg.sids, n_items, with_collision=True)
    _, first, counts = np.unique(sids, axis=0, return_index=True, return_counts=True)
    if (counts > 1).any():
        raise DataError(
            f"{cfg.sids}: {int((counts > 1).sum())} SID(s) are shared by several items (e.g. "
            f"{sids[first[counts > 1][0]].tolist()}); retrieval needs unique SIDs: use the "
            "table `mmsid tokenize` writes (it adds a collision level)"
        )
    L = sids.shape[1] - 1
    return sids, [K] * L + [int(sids[:, -1].max()) + 1]


def build_trainable(cfg: RetrieveConfig, data: RetrievalData, device: str) -> Trainable:
    proto, H = data.protocol, cfg.protocol.max_history
    if cfg.model == "tiger":
        sids, vocab = item_sids(cfg, proto.n_items)
        model = TIGER(sids, vocab, dataclasses.replace(cfg.tiger, max_history=H))
        split = data.train
        lengths = (split.history >= 0).sum(1)

        def make_prefixes(idx: np.ndarray) -> dict[str, torch.Tensor]:
            return {
                k: torch.from_numpy(getattr(split, k)[idx]).to(device)
                for k in ("user", "history", "target")
            }

        return Trainable(
            model,
            len(split),
            lambda rng: bucketed_batches(lengths, cfg.batch_size, rng, cfg.epoch_samples),
            make_prefixes,
            stable_hash(sids),
        )
    windows = training_windows(data.train_sequences, H)

    def make_windows(idx: np.ndarray) -> dict[str, torch.Tensor]:
        return {"seq": torch.from_numpy(windows[idx]).to(device)}

    if cfg.model == "sasrec":
        model = SASRec(
            proto.n_items,
            dataclasses.replace(cfg.sasrec, max_history=H),
            trainable=~proto.is_cold,
        )

        def shuffled(rng: np.random.Generator) -> list[np.ndarray]:
            perm = rng.permutation(len(windows))[: cfg.epoch_samples or None]
            return [perm[i : i + cfg.batch_size] for i in range(0, len(perm), cfg.batch_size)]

        return Trainable(model, len(windows), shuffled, make_windows, "")
    if cfg.model == "parallel-sid":
        codes, K = table_codes(sid_table(cfg), cfg.sids, proto.n_items)
        model = ParallelSID(
            codes, K, dataclasses.replace(cfg.parallel, max_history=H), trainable=~proto.is_cold
        )
        lengths = (windows >= 0).sum(1)
        return Trainable(
            model,
            len(windows),
            lambda rng: bucketed_batches(lengths, cfg.batch_size, rng, cfg.epoch_samples),
            make_windows,
            stable_hash(codes),
        )
    raise ConfigError(f"'{cfg.model}' is not a trainable retriever")
