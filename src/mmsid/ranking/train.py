"""One plain training loop for every ranking model (contract: ``loss(batch)``,
``predict(batch)``): Adam, shuffled mini-batches, validation AUC each epoch, best state kept,
a checkpoint every epoch so an interrupted run resumes where it stopped."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from mmsid.eval.ranking import auc, gauc, logloss
from mmsid.io import save_torch
from mmsid.ranking.samples import CTRData, CTRSplit


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 1  # the PSRQ paper trains one epoch
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
    model.eval()
    out = []
    for s in range(0, len(split.item), batch_size):
        idx = np.arange(s, min(s + batch_size, len(split.item)))
        out.append(model.predict(batch_of(split, idx, device)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def metrics(split: CTRSplit, probs: np.ndarray, data: CTRData) -> dict:
    """AUC / GAUC / LogLoss on the whole split and on the head / long-tail / cold slices."""
    out = {
        "all": {
            "auc": auc(split.label, probs),
            "gauc": gauc(split.user, split.label, probs),
            "logloss": logloss(split.label, probs),
            "n": int(len(probs)),
        }
    }
    for name, m in data.slices(split.item).items():
        out[name] = {
            "auc": auc(split.label[m], probs[m]),
            "gauc": gauc(split.user[m], split.label[m], probs[m]),
            "logloss": logloss(split.label[m], probs[m]) if m.any() else float("nan"),
            "n": int(m.sum()),
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
    """Train; leave ``model`` at its best validation-AUC state. Returns the per-epoch history.

    A checkpoint is resumed only when its ``run_key`` (a hash of the run's config) matches."""
    torch.manual_seed(cfg.seed)
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history: list[dict] = []
    best_auc, best_state, start = -1.0, None, 0
    ckpt = Path(checkpoint) if checkpoint else None
    blob = (
        torch.load(ckpt, map_location=device, weights_only=False)
        if (ckpt is not None and ckpt.exists())
        else None
    )
    if blob is not None and blob.get("run_key") == run_key:
        model.load_state_dict(blob["model"])
        opt.load_state_dict(blob["optim"])
        history, best_auc, best_state, start = (
            blob["history"],
            blob["best_auc"],
            blob["best_state"],
            blob["epoch"],
        )
    g = np.random.default_rng(cfg.seed)
    for _ in range(start):  # replay finished epochs' shuffles: resume == no interruption
        g.permutation(len(data.train.item))
    n = len(data.train.item)
    steps = math.ceil(n / cfg.batch_size)
    for epoch in range(start, cfg.epochs):
        model.train()
        perm = g.permutation(n)
        total = 0.0
        bar = tqdm(
            range(steps),
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=not progress,
            unit="batch",
            leave=False,
        )
        for b in bar:
            loss = model.loss(
                batch_of(data.train, perm[b * cfg.batch_size : (b + 1) * cfg.batch_size], device)
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
        valid = metrics(data.valid, predict(model, data.valid, device=device), data)["all"]
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": total / steps,
                "valid_auc": valid["auc"],
                "valid_gauc": valid["gauc"],
                "valid_logloss": valid["logloss"],
            }
        )
        if valid["auc"] > best_auc:
            best_auc = valid["auc"]
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if ckpt is not None:
            save_torch(
                ckpt,
                {
                    "model": model.state_dict(),
                    "optim": opt.state_dict(),
                    "epoch": epoch + 1,
                    "history": history,
                    "best_auc": best_auc,
                    "best_state": best_state,
                    "run_key": run_key,
                },
            )
    if best_state is not None:
        model.load_state_dict(best_state)
    return history
