"""Multi-process training on PyTorch's own engine: torch.distributed, launched by torchrun.

    torchrun --nproc-per-node 2 -m mmsid retrieve --dataset ml100k-mm --model sasrec ...
    # two machines (the same command on each; the c10d rendezvous numbers the nodes):
    torchrun --nnodes 2 --nproc-per-node 2 \\
        --rdzv-backend c10d --rdzv-endpoint HOST:29500 --rdzv-id job1 -m mmsid retrieve ...

A plain ``python -m mmsid`` / ``mmsid`` run is one process and none of this is active.

What a multi-process run does, and why it is the same run as one process:

* **Global batches, sharded.** Every rank draws the same seeded epoch plan (the same global
  batches, in the same order, as a one-process run with that seed) and trains on its own
  contiguous part of each global batch (:func:`shard`). The plan does not depend on the world
  size, so a checkpoint resumes under any number of processes.
* **Gradients of the global batch.** DistributedDataParallel averages gradients over ranks.
  Each rank's loss is a mean over its own units (samples, supervised positions); scaling it by
  ``units_here * world / units_everywhere`` (:func:`share`) makes the DDP average equal the
  gradient of the global batch's mean loss, also when a batch does not split evenly. So the
  per-step losses of N processes match one process with the same global batch up to
  floating-point summation order (``benchmarks/bench_distributed.py`` measures it). Dropout
  masks are drawn per rank, so runs with dropout agree in distribution, not step for step.
* **One writer.** Only rank 0 writes files (:func:`mmsid.io.atomic_path` discards a non-zero
  rank's writes); checkpoints are read by rank 0 and broadcast, so nodes need no shared disk
  for them. Stages end with a barrier, so a later stage never reads a file before it exists.
* **Evaluation sharded and gathered.** Each rank scores its share of the users
  (:func:`gather_rows`); every rank then holds the same metrics, so early-stopping decisions
  agree.

The backend is gloo on CPU and nccl on CUDA (``MMSID_DIST_BACKEND`` overrides); on CUDA each
process uses the GPU of its ``LOCAL_RANK``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Context:
    """This process's place in the run (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str = ""  # "" (one process), gloo or nccl

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


_CTX = Context()


def context() -> Context:
    return _CTX


def init(device: str) -> str:
    """Join the process group torchrun describes in the environment (``WORLD_SIZE``, ``RANK``,
    ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) and return the device this process trains
    on. With ``WORLD_SIZE`` unset or 1 this does nothing and returns ``device``. Idempotent:
    the pipeline's stages call it once each."""
    global _CTX
    from mmsid.device import resolve_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return str(resolve_device(device))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        backend = os.environ.get("MMSID_DIST_BACKEND") or ("nccl" if dev.type == "cuda" else "gloo")
        dist.init_process_group(backend)
        _CTX = Context(rank=rank, world=world, local_rank=local, backend=backend)
    return str(dev)


def shutdown() -> None:
    """Leave the process group (the CLI calls this at exit)."""
    global _CTX
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    _CTX = Context()


def barrier() -> None:
    if _CTX.active:
        dist.barrier()


def shard(idx: np.ndarray | torch.Tensor, ctx: Context | None = None):
    """This rank's contiguous part of a global batch: ``np.array_split`` order, so rank r
    gets rows ``[r * n // world + ...]`` and the parts concatenated in rank order are ``idx``.
    A rank may get an empty part when the batch is smaller than the world."""
    ctx = ctx or _CTX
    if not ctx.active:
        return idx
    n = len(idx)
    lo, hi = n * ctx.rank // ctx.world, n * (ctx.rank + 1) // ctx.world
    return idx[lo:hi]


def all_sum(values: list[float], device: str | torch.device = "cpu") -> list[float]:
    """Element-wise sum over ranks (identity for one process)."""
    if not _CTX.active:
        return list(values)
    dev = device if _CTX.backend == "nccl" else "cpu"
    t = torch.tensor(values, dtype=torch.float64, device=dev)
    dist.all_reduce(t)
    return t.tolist()


def share(units: float, device: str | torch.device = "cpu") -> tuple[float, float]:
    """(scale, total): ``scale = units * world / total`` turns this rank's mean loss into its
    share of the global batch's mean under DDP's gradient averaging; ``total`` is the number
    of units over all ranks. One process: (1.0, units)."""
    if not _CTX.active:
        return 1.0, float(units)
    (total,) = all_sum([float(units)], device)
    return (units * _CTX.world / total if total else 0.0), total


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (pickled; for checkpoints and small records)."""
    if not _CTX.active:
        return obj
    box = [obj if _CTX.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_rows(part: np.ndarray) -> np.ndarray:
    """Concatenate every rank's rows in rank order (each rank passes its :func:`shard`)."""
    if not _CTX.active:
        return part
    parts: list[Any] = [None] * _CTX.world
    dist.all_gather_object(parts, part)
    return np.concatenate(parts)


def gather_live(part: torch.Tensor) -> torch.Tensor:
    """Every rank's rows of a global batch, concatenated in rank order (each rank passes its
    :func:`shard`'s rows; parts may differ in length, an empty one included): (n_global, ...).

    This rank's rows are ``part`` itself, so gradients reach them; the other ranks' rows are
    detached copies. A term computed from the result is the global batch's term on every
    rank, and its gradient on each rank covers the rank's own rows: summed over ranks, that is
    the term's whole gradient (``fit_epochs``'s ``global_terms`` weight it by the world size,
    since DistributedDataParallel averages). One process: ``part`` unchanged."""
    if not _CTX.active:
        return part
    dev = part.device if _CTX.backend == "nccl" else torch.device("cpu")
    sizes = torch.zeros(_CTX.world, dtype=torch.long, device=dev)
    sizes[_CTX.rank] = len(part)
    dist.all_reduce(sizes)
    n = sizes.tolist()
    pad = part.detach().to(dev).new_zeros((max(n), *part.shape[1:]))
    pad[: len(part)] = part.detach()
    parts = [torch.empty_like(pad) for _ in range(_CTX.world)]
    dist.all_gather(parts, pad)
    rows = [part if r == _CTX.rank else p[: n[r]].to(part.device) for r, p in enumerate(parts)]
    return torch.cat(rows)


class Step(nn.Module):
    """Runs a training step's loss function as ``forward``, so DistributedDataParallel sees
    the step (its gradient hooks and unused-parameter search work on any loss function of the
    wrapped module: ``model.loss``, a tokenizer's step losses)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, fn, *args):
        return fn(*args)


def wrap(module: nn.Module) -> nn.Module:
    """``Step(module)``, under DistributedDataParallel in a multi-process run.

    ``find_unused_parameters``: some models hold parameters a step does not use (the behavior
    head in MMQ stage 1, an item-id table that is off); for a model that uses all of them DDP
    warns once that the flag costs a graph traversal per step. ``forward_sync_buffers=False``:
    buffers are made equal when DDP is built, then stay per rank: code-usage counters count
    the rank's own rows and are summed where they are used (:func:`reduce_buffers`)."""
    step = Step(module)
    if not _CTX.active:
        return step
    from torch.nn.parallel import DistributedDataParallel as DDP

    dev = next(module.parameters()).device
    return DDP(
        step,
        device_ids=[dev.index] if dev.type == "cuda" else None,
        find_unused_parameters=True,
        forward_sync_buffers=False,  # in sync once, at construction; then per rank
    )


def units(batch: Any) -> int:
    """How many rows a batch has: the first tensor's length (a dict's first value)."""
    if isinstance(batch, dict):
        batch = next(iter(batch.values()))
    return int(len(batch))


def zero_loss(module: nn.Module) -> torch.Tensor:
    """A zero loss over every trainable parameter: a rank whose part of a batch is empty (the
    last batch of an epoch, smaller than the world) still takes part in DDP's gradient
    averaging, contributing zeros."""
    return sum(p.sum() * 0.0 for p in module.parameters() if p.requires_grad)


def reduce_buffers(module: nn.Module, name: str) -> None:
    """Sum the buffers called ``name`` (e.g. code-usage counts) over ranks, in place."""
    if not _CTX.active:
        return
    for m in module.modules():
        buf = m._buffers.get(name)
        if buf is not None:
            dist.all_reduce(buf)
