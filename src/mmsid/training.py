"""The one plain training loop (AdamW or Adafactor, mini-batches, periodic validation, best
state kept, early stopping, a checkpoint after every epoch so an interrupted run resumes where
it stopped).

Models follow one contract: ``model.loss(batch) -> scalar``. The caller supplies how an
epoch's batches are drawn (``batches(rng) -> list of index arrays``), how a batch is built
(``make_batch(idx) -> dict of tensors``) and ``evaluate(model) -> dict`` holding the
``select`` metric (higher is better).

Launched by torchrun, the loop is data-parallel (mmsid.distributed): every rank draws the same
global batches and trains on its part of each under DistributedDataParallel; a model whose
``loss`` averages over something other than the batch's rows (supervised positions) says how
many it has with ``loss_units(batch)``, so the gradient is the global batch's. ``evaluate``
must give the same answer on every rank (the retrieval and ranking stages shard and gather).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from mmsid import distributed
from mmsid.device import bf16_autocast
from mmsid.io import load_torch, save_torch, write_json


@dataclass(frozen=True)
class LoopConfig:
    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 0.0
    eval_every: int = 1  # epochs between validations
    patience: int = 0  # stop after this many validations without improvement; 0 = never
    # early stopping cannot end a run before this many epochs (0: from the first). Any run
    # that patience ends later is unchanged by it, so a run stopped by an early, noisy
    # validation peak can be resumed with it and compared with runs it does not touch
    min_epochs: int = 0
    max_minutes: float = 0.0  # stop at the first epoch end past this wall time; 0 = no limit
    grad_clip: float = 1.0  # 0 = off
    amp: str = "off"  # bf16 autocast: auto | on | off (see mmsid.device.bf16_autocast)
    # learning rate: "constant", or "cosine": linear warm-up over ``warmup_steps``, then a
    # cosine decay to 0 at the end of ``epochs`` (or of ``max_steps`` when set; a run stopped
    # early stops mid-decay; a run extended with more epochs re-spreads the decay from where
    # it is), or "rsqrt": T5's inverse square root, lr * sqrt(w / max(step + 1, w)) with
    # w = ``warmup_steps``: held at lr for w steps (no ramp), then proportional to 1/sqrt(step)
    schedule: str = "constant"
    warmup_steps: int = 0
    # "adamw", or "adafactor" (torch.optim.Adafactor: factored second moments, update
    # clipping, and a step of min(lr, 1/sqrt(step)) times the parameter's RMS: at lr 0.01
    # with the constant schedule that is T5's, and so TIGER's, 0.01 for 10k steps then
    # inverse square root decay; weight decay is decoupled in both)
    optimizer: str = "adamw"
    # a budget in optimiser steps: stop at the first epoch end at or past it (0 = epochs
    # decide; both are caps, the first reached ends the run)
    max_steps: int = 0
    seed: int = 0
    log_steps: bool = False  # keep every step's loss in the history (distributed checks)


SCHEDULES = ("constant", "cosine", "rsqrt")
OPTIMIZERS = ("adamw", "adafactor")


def lr_factor(cfg: LoopConfig, step: int, total: int) -> float:
    """The learning-rate multiplier at optimiser step ``step`` (0-based) of ``total``."""
    if cfg.schedule == "rsqrt":
        w = max(1, cfg.warmup_steps)
        return float(np.sqrt(w / max(step + 1, w)))
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    if cfg.schedule == "constant":
        return warm
    if cfg.schedule == "cosine":
        done = min(1.0, max(0, step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
        return warm * 0.5 * (1.0 + np.cos(np.pi * done))
    raise ValueError(f"unknown learning-rate schedule '{cfg.schedule}': {' | '.join(SCHEDULES)}")


def make_optimizer(params, cfg: LoopConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adafactor":
        return torch.optim.Adafactor(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer '{cfg.optimizer}': {' | '.join(OPTIMIZERS)}")


def train(
    model: nn.Module,
    cfg: LoopConfig,
    *,
    batches: Callable[[np.random.Generator], list[np.ndarray]],
    make_batch: Callable[[np.ndarray], dict[str, torch.Tensor]],
    evaluate: Callable[[nn.Module], dict],
    select: str,
    device: str = "cpu",
    checkpoint: str | Path | None = None,
    run_key: str = "",
    progress: bool = True,
    desc: str = "train",
) -> list[dict]:
    """Train ``model`` in place and leave it at its best validation state.

    A checkpoint is resumed only when its ``run_key`` (the caller's config hash) matches; the
    epoch count is not part of the key, so re-running with more epochs extends a finished run.
    Returns the history: one dict per epoch (train loss, seconds, and the validation metrics
    on validated epochs); the last also has ``stopped``: ``epochs`` (the cap ended it with
    patience left), ``early_stopping`` (patience ran out, on the cap's last epoch too),
    ``max_minutes`` (cut by the time limit) or
    ``max_steps`` (the step budget was reached); every row has its optimiser ``steps``."""
    ctx = distributed.context()
    torch.manual_seed(cfg.seed + ctx.rank)  # rank 0 draws what a one-process run draws
    opt = make_optimizer(model.parameters(), cfg)
    history: list[dict] = []
    best, best_state, start, stale, elapsed = -np.inf, None, 0, 0, 0.0
    ckpt = Path(checkpoint) if checkpoint else None
    # rank 0 reads the checkpoint and sends it to the others (no shared disk needed); it holds
    # global state only, so it resumes under any number of processes
    blob = distributed.broadcast(
        load_torch(ckpt) if ckpt is not None and ckpt.exists() and ctx.main else None
    )
    if blob is not None:
        if blob.get("run_key") == run_key and "best" in blob:
            model.load_state_dict(blob["model"])
            opt.load_state_dict(blob["optim"])
            history, best, best_state = blob["history"], blob["best"], blob["best_state"]
            start, stale, elapsed = blob["epoch"], blob["stale"], blob.get("elapsed", 0.0)
    g = np.random.default_rng(cfg.seed)
    for _ in range(start):  # replay finished epochs' shuffles: resumed == uninterrupted
        batches(g)
    step = distributed.wrap(model)  # DDP over ranks; a plain call in one process
    units = getattr(model, "loss_units", distributed.units)
    t_start = time.perf_counter() - elapsed
    stopped = "epochs"  # why training ended: epochs | early_stopping | max_minutes | max_steps
    done = sum(row.get("steps", 0) for row in history)  # optimiser steps so far
    for epoch in range(start, cfg.epochs):
        if cfg.patience and stale >= cfg.patience and epoch >= cfg.min_epochs:
            stopped = "early_stopping"
            break
        if cfg.max_steps and done >= cfg.max_steps:
            stopped = "max_steps"
            break
        # rank 0's clock decides for every rank (ranks that stop apart would wait forever)
        if cfg.max_minutes and distributed.broadcast(
            time.perf_counter() - t_start > 60 * cfg.max_minutes
        ):
            stopped = "max_minutes"
            break
        t0 = time.perf_counter()
        model.train()
        plan = batches(g)
        bar = tqdm(
            plan,
            desc=f"{desc} {epoch + 1}/{cfg.epochs}",
            disable=not progress or not ctx.main,
            unit="batch",
            leave=False,
        )
        steps = []
        total = cfg.max_steps or cfg.epochs * len(plan)  # the cosine schedule's end
        for i, idx in enumerate(bar):
            f = lr_factor(cfg, done + i, total)
            for group in opt.param_groups:
                group["lr"] = cfg.lr * f
            batch = make_batch(distributed.shard(idx))  # this rank's part of the global batch
            scale, _ = distributed.share(units(batch), device)
            # a rank with an empty part (a short last batch) still steps, with a zero loss
            fn = model.loss if scale else (lambda _: distributed.zero_loss(model))
            with bf16_autocast(device, cfg.amp):
                loss = step(fn, batch) * scale
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            # the global batch's mean loss: the ranks' scaled losses averaged
            (value,) = distributed.all_sum([float(loss.detach())], device)
            steps.append(value / ctx.world)
            bar.set_postfix(loss=f"{steps[-1]:.4f}", refresh=False)
        done += len(steps)
        row = {
            "epoch": epoch + 1,
            "steps": len(steps),
            "train_loss": sum(steps) / max(1, len(plan)),
            "seconds": time.perf_counter() - t0,
        }
        if cfg.log_steps:
            row["step_losses"] = steps
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            model.eval()
            t1 = time.perf_counter()
            row["valid"] = evaluate(model)
            row["valid_seconds"] = time.perf_counter() - t1
            if row["valid"][select] > best:
                best, stale = row["valid"][select], 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                stale += 1
        row["elapsed"] = time.perf_counter() - t_start  # training + validation, across resumes
        history.append(row)
        if progress and ctx.main:
            tqdm.write(
                f"{desc} epoch {epoch + 1}: loss {row['train_loss']:.4f}"
                + (f", valid {select} {row['valid'][select]:.4f}" if "valid" in row else "")
                + f" ({row['seconds']:.0f} s)"
            )
        if ckpt is not None:
            save_torch(
                ckpt,
                {
                    "model": model.state_dict(),
                    "optim": opt.state_dict(),
                    "epoch": epoch + 1,
                    "history": history,
                    "best": best,
                    "best_state": best_state,
                    "stale": stale,
                    "run_key": run_key,
                    "elapsed": time.perf_counter() - t_start,
                },
            )
            # a small readable record beside the checkpoint, for reports on a run in progress
            write_json(
                ckpt.parent / "progress.json",
                {
                    "epoch": epoch + 1,
                    "epochs": cfg.epochs,
                    "select": select,
                    "best": float(best) if np.isfinite(best) else None,
                    "stale": stale,
                    "patience": cfg.patience,
                    "history": history,
                },
            )
    if stopped == "epochs" and cfg.patience and stale >= cfg.patience:
        stopped = "early_stopping"  # patience ran out on the last epoch: converged, not capped
    if best_state is not None:
        model.load_state_dict(best_state)
    if history:  # the last row says why training ended (a time limit must not pass unseen)
        history[-1]["stopped"] = stopped
    return history
