"""Training and evaluation of the ranking models (contract: ``loss(batch)``,
``predict(batch)``) through the shared loop in mmsid.training: shuffled mini-batches,
validation AUC each epoch, best state kept, a checkpoint every epoch for resume."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mmsid import distributed
from mmsid.eval.ranking import auc, gauc, logloss
from mmsid.ranking.samples import CTRData, CTRSplit
from mmsid.training import LoopConfig, train


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 1  # the PSRQ paper trains one epoch
    patience: int = 0  # validations without improvement before stopping; 0 = never
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 0.0
    eval_batch_size: int = 8192
    seed: int = 0


def batch_of(split: CTRSplit, idx: np.ndarray, device: str) -> dict[str, torch.Tensor]:
    return {
        "user": torch.from_numpy(split.user[idx]).to(device),
        "item": torch.from_numpy(split.item[idx]).to(device),
        "label": torch.from_numpy(split.label[idx]).to(device),
        "history": torch.from_numpy(split.history[idx]).to(device),
    }


@torch.no_grad()
def predict(
    model: nn.Module, split: CTRSplit, *, device: str, batch_size: int = 8192
) -> np.ndarray:
    """Probabilities for every sample of ``split``; in a multi-process run each rank predicts
    its contiguous share and every rank gets the gathered whole."""
    model.eval()
    rows = distributed.shard(np.arange(len(split.item)))
    out = [np.zeros(0, dtype=np.float32)]
    for s in range(0, len(rows), batch_size):
        idx = rows[s : s + batch_size]
        out.append(model.predict(batch_of(split, idx, device)).cpu().numpy())
    return distributed.gather_rows(np.concatenate(out))


def metrics(
    split: CTRSplit, probs: np.ndarray, data: CTRData, *, probabilistic: bool = True
) -> dict:
    """AUC / GAUC / LogLoss on the whole split and on each protocol slice (head, long_tail,
    cold, rare<30; a slice holds the samples whose item is in it). ``n`` counts samples,
    ``users`` the users with a positive in the slice. ``probabilistic=False`` (a scorer such
    as popularity, whose scores are no probabilities): LogLoss is NaN."""
    masks = {"all": np.ones(len(probs), dtype=bool), **data.slices(split.item)}
    out = {}
    for name, m in masks.items():
        out[name] = {
            "auc": auc(split.label[m], probs[m]),
            "gauc": gauc(split.user[m], split.label[m], probs[m]),
            "logloss": (
                logloss(split.label[m], probs[m]) if m.any() and probabilistic else float("nan")
            ),
            "n": int(m.sum()),
            "users": int(len(np.unique(split.user[m & (split.label > 0)]))),
        }
    return out


def fit(
    model: nn.Module,
    data: CTRData,
    cfg: TrainConfig,
    *,
    device: str = "cpu",
    checkpoint: str | Path | None = None,
    run_key: str = "",
    progress: bool = True,
) -> list[dict]:
    """Train with the shared loop (mmsid.training); leave ``model`` at its best validation-AUC
    state. Returns the per-epoch history. A checkpoint is resumed only when its ``run_key``
    (a hash of the run's config) matches."""
    model.to(device)
    n = len(data.train.item)

    def batches(rng: np.random.Generator) -> list[np.ndarray]:
        perm = rng.permutation(n)
        return [perm[i : i + cfg.batch_size] for i in range(0, n, cfg.batch_size)]

    def evaluate(m: nn.Module) -> dict:
        v = metrics(data.valid, predict(m, data.valid, device=device), data)["all"]
        return {k: v[k] for k in ("auc", "gauc", "logloss")}

    loop = LoopConfig(
        epochs=cfg.epochs,
        patience=cfg.patience,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        grad_clip=0.0,
        seed=cfg.seed,
    )
    hist = train(
        model,
        loop,
        batches=batches,
        make_batch=lambda idx: batch_of(data.train, idx, device),
        evaluate=evaluate,
        select="auc",
        device=device,
        checkpoint=checkpoint,
        run_key=run_key,
        progress=progress,
        desc="rank",
    )
    return [
        {
            "epoch": h["epoch"],
            "train_loss": h["train_loss"],
            **{f"valid_{k}": v for k, v in h["valid"].items()},
            **({"stopped": h["stopped"]} if "stopped" in h else {}),  # why training ended
        }
        for h in hist
    ]
