"""The epoch loop of the trained tokenizers (RQ-VAE; MMQ stage 1 and stage 2).

Each caller says what one step's losses are and how codebooks are initialised and
restarted; the loop owns the rest: AdamW, seeded shuffles, per-term loss averages in
``tok.history``, atomic checkpoints, and resuming. A resumed run replays the shuffles of the
epochs it skips, so an interrupted fit ends with the same weights as an uninterrupted one.
(Downstream models train through ``mmsid.training``; its validation / early stopping has no
counterpart here, where the objective is the training loss itself.)

Launched by torchrun the loop is data-parallel (mmsid.distributed): every rank draws the same
global batches, trains on its part under DistributedDataParallel with its loss weighted by its
share of rows, and code-usage counts are summed over ranks before a dead-code restart, so the
codebooks stay identical on every rank and equal to a one-process run's up to summation
order. A term of the whole batch that is not a mean over its rows (MMQ's gate load balance,
its means over the items present, stage 2's in-batch negatives) is a ``global_terms`` term:
each rank computes it over the gathered global batch (mmsid.distributed.gather_live), so it
too is one process's. EMA codebooks do not carry over and are refused (their updates would
need their own reduction).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mmsid import distributed
from mmsid.errors import ConfigError
from mmsid.io import load_torch, save_torch


def init_rows(n: int, batch_size: int, codebook_size: int, seed: int) -> torch.Tensor:
    """Rows for k-means codebook init: the first ``max(batch, K)`` of a seeded permutation."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[: max(batch_size, codebook_size)]


def fit_epochs(
    tok,
    *,
    n: int,
    epochs: int,
    batch_size: int,
    param_groups: list[dict],
    weight_decay: float,
    shuffle_seed: int,
    step_losses: Callable[[torch.Tensor], dict[str, torch.Tensor]],
    n_items: int,
    per_epoch: int | None = None,
    init: Callable[[], None] | None = None,
    restart: Callable[[torch.Tensor], int] | None = None,
    stage: int | None = None,
    global_terms: tuple[str, ...] = (),
    device: str | torch.device = "cpu",
    checkpoint: str | Path | None = None,
    desc: str = "tokenizer",
    progress: bool = True,
) -> None:
    """Train ``tok.module`` for ``epochs`` epochs over ``n`` rows (items, or behavior pairs).

    Args:
        step_losses: (B,) row indices -> named loss terms; the step minimises their sum.
        per_epoch: rows drawn per epoch (a seeded random subset; default all ``n``).
        init: called once before the first epoch of a fresh run (codebook init).
        restart: called after each epoch with up to 4,096 of its rows; returns the number of
            dead codes it restarted.
        stage: recorded in history and checkpoints; a checkpoint of another stage, another
            config or another item count is ignored.
        global_terms: loss terms that ``step_losses`` computes over the whole global batch on
            every rank, with gradients through the rank's own rows only (gather_live). Each
            is weighted by the world size instead of the rank's share of rows (DDP averages
            the ranks' gradients, whose sum is the term's gradient) and logged as it is. In a
            multi-process run ``step_losses`` is then called on every rank, an empty part of
            the batch included, and must return these terms for it (it takes part in their
            gathers). One process: no difference.
    """
    model, ctx = tok.module, distributed.context()
    if ctx.active:
        if any(getattr(getattr(m, "cfg", None), "ema", False) for m in model.modules()):
            raise ConfigError("EMA codebooks train in one process only: set ema=false")
        if batch_size < ctx.world:
            raise ConfigError(f"batch_size {batch_size} is smaller than {ctx.world} processes")
    opt = torch.optim.AdamW(param_groups, weight_decay=weight_decay)
    ckpt = Path(checkpoint) if checkpoint else None
    start = 0
    # rank 0 reads and sends (no shared disk needed); the state is global, so any world size
    blob = distributed.broadcast(
        load_torch(ckpt) if ckpt is not None and ckpt.exists() and ctx.main else None
    )
    if blob is not None:
        if (blob["config_hash"], blob["n_items"], blob.get("stage")) == (
            tok.config_hash(),
            n_items,
            stage,
        ):
            model.load_state_dict(blob["model"])
            opt.load_state_dict(blob["optim"])
            tok.history = blob["history"]
            start = blob["epoch"]
    per_epoch = min(n, per_epoch or n)
    g = torch.Generator().manual_seed(shuffle_seed)
    for _ in range(start):  # replay the shuffles of finished epochs: resume == no interruption
        torch.randperm(n, generator=g)
    if start == 0 and init is not None:
        with torch.no_grad():
            init()
    step = distributed.wrap(model)  # after init: DDP starts every rank from rank 0's weights
    steps = math.ceil(per_epoch / batch_size)
    tag = {"stage": stage} if stage is not None else {}
    log_steps = getattr(tok.cfg, "log_steps", False)
    keys: list[str] = []
    bar = tqdm(
        range(start, epochs),
        desc=desc,
        disable=not progress or not ctx.main,
        unit="epoch",
        initial=start,
        total=epochs,
    )
    for epoch in bar:
        model.train()
        perm = torch.randperm(n, generator=g)[:per_epoch].to(device)
        sums: dict[str, float] = {}
        trace = []
        for b in range(steps):
            rows = distributed.shard(perm[b * batch_size : (b + 1) * batch_size])
            scale, _ = distributed.share(len(rows), device)
            # a term's weight: its rank's share of rows, or the world size for a global term
            weight = {k: ctx.world for k in global_terms}
            if scale:
                losses = step(step_losses, rows)
                keys = list(losses)
                loss = sum(v * weight.get(k, scale) for k, v in losses.items())
            elif global_terms:  # an empty part: only the global terms, and zeros for the rest
                losses = step(lambda r: {**step_losses(r), "": distributed.zero_loss(model)}, rows)
                loss = sum(v * weight.get(k, 1.0) for k, v in losses.items())
            else:  # an empty part of a short last batch: zeros, but take part in the step
                losses = {}
                loss = step(lambda _: distributed.zero_loss(model), rows)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            # the global batch's mean of each term: the ranks' scaled terms averaged (a global
            # term is the same on every rank)
            terms = distributed.all_sum(
                [
                    float(losses[k].detach()) * (1.0 if k in weight else scale)
                    if k in losses
                    else 0.0
                    for k in keys
                ],
                device,
            )
            for k, v in zip(keys, terms, strict=True):
                sums[k] = sums.get(k, 0.0) + v / ctx.world / steps
            trace.append(sum(terms) / ctx.world)
        restarted = 0
        if restart is not None:
            distributed.reduce_buffers(model, "usage")  # the global batch's code counts
            with torch.no_grad():
                restarted = restart(perm[:4096])
        row = {**tag, "epoch": epoch + 1, **sums, "restarted_codes": restarted}
        if log_steps:
            row["step_losses"] = trace
        tok.history.append(row)
        bar.set_postfix(rec=f"{sums['reconstruction']:.4f}")
        if ckpt is not None and (
            (epoch + 1) % tok.cfg.checkpoint_every == 0 or epoch + 1 == epochs
        ):
            save_torch(
                ckpt,
                {
                    "model": model.state_dict(),
                    "optim": opt.state_dict(),
                    "epoch": epoch + 1,
                    "history": tok.history,
                    **tag,
                    "config_hash": tok.config_hash(),
                    "n_items": n_items,
                },
            )
    model.eval()
