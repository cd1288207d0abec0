"""``--device auto`` resolution and seeding."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np
import torch


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; anything else is passed to ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch and turn on torch's deterministic algorithms; return a CPU
    generator seeded the same way.

    Deterministic algorithms: with 2 threads, some CPU kernels (an accumulating index add)
    sum in a varying order, and an RQ-VAE fit of ml100k-mm twice with the same seed gave
    reconstruction MSE 1.34790 and 1.34830 (dead-code restarts amplify a last-bit
    difference); with them on, both runs give 1.34715, the one-thread result. ``warn_only``:
    an operation without a deterministic version warns instead of failing."""
    import os

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's deterministic mode
    torch.use_deterministic_algorithms(True, warn_only=True)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def start_run(cfg) -> tuple[Path, str]:
    """Open a stage's run folder: create ``cfg.out``, write the resolved config as
    ``config.yaml`` (atomically), seed everything from ``cfg.seed``, resolve ``cfg.device``.
    Launched by torchrun: join the process group first (mmsid.distributed); rank 0 writes.

    Returns (run folder, device string)."""
    import yaml

    from mmsid import distributed
    from mmsid.artefacts import reopen
    from mmsid.io import clean_temp, write_text

    device = distributed.init(cfg.device)  # torchrun: join the process group; else a no-op
    # a stage starts when every rank has finished the one before (so its files exist)
    distributed.barrier()
    out = Path(cfg.out)
    if distributed.context().main:  # one writer
        out.mkdir(parents=True, exist_ok=True)
        reopen(out)  # a finished run's folder: drop damaged files and the seal (artefacts)
        clean_temp(out)  # temporary files of a run that was killed mid-write
        write_text(out / "config.yaml", yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    distributed.barrier()
    seed_everything(cfg.seed)
    return out, device


def bf16_autocast(device: str, mode: str = "auto"):
    """bf16 autocast context for ``device``. ``mode``: "on", "off", or "auto" (on for CUDA,
    and for CPUs with native bf16 matmul: AMX or AVX512-BF16, where it halves step time of the
    transformer models; off elsewhere, where emulated bf16 would be slower)."""
    import contextlib

    if mode not in ("auto", "on", "off"):
        raise ValueError(f"amp must be auto, on or off, got {mode!r}")
    dev = torch.device(device).type
    if mode == "auto":
        fast_cpu = (
            getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
            or getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
        )
        on = dev == "cuda" or (dev == "cpu" and fast_cpu)
    else:
        on = mode == "on"
    return torch.autocast(dev, dtype=torch.bfloat16) if on else contextlib.nullcontext()


def cpu_description() -> str:
    """The CPU a timing was measured on, for benchmark records: model name (``/proc/cpuinfo``
    where there is one), logical cores, the SIMD level torch dispatches to and torch's BLAS.
    Timings compare only between equal descriptions: the same code on the same 2 cores ran its
    assignment GEMM at 330 GFLOP/s on one machine of this project and 90 on another (MKL on an
    AMD EPYC, where faiss's OpenBLAS ran the same shape faster)."""
    import os
    import platform
    import re

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.MULTILINE)
        model = m.group(1).strip() if m else model
    except OSError:
        pass
    blas = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
    simd = torch.backends.cpu.get_cpu_capability()
    return f"{model}, {os.cpu_count()} cores, torch {simd}, BLAS {blas.group(1) if blas else '?'}"
