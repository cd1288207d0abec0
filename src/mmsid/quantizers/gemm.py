"""The CPU GEMM behind SID assignment, run by whichever BLAS is faster on this machine.

Assigning codes is one fp32 GEMM per chunk, ``bias + x @ W`` with ``x`` (B, d) and ``W``
(d, K) (``nearest`` and the residual ``encode``). PyTorch's CPU wheel runs it with MKL,
numpy's wheel with OpenBLAS, and which one is faster depends on the CPU. Measured at
tokenizer shapes with 2 threads:
- on the AVX2 Intel machine of an earlier stop, MKL won;
- on an AMD EPYC with AVX512, OpenBLAS ran 1.1-1.35x faster at every shape
  (``benchmarks/results/tokenizers.md`` records which backend each run used).
So neither can be the fixed choice. ``MMSID_CPU_GEMM`` picks one:

- ``torch``: ``torch.addmm``. Always used for GPU tensors and whenever gradients flow.
- ``numpy``: ``np.matmul`` on the tensors' shared memory (no copy), then the bias is added.
- ``auto`` (the default): measure once per machine.
  - Both are timed at a fixed shape (2048 x 768 x 768, the median of 7 alternating rounds
    after a warm-up).
  - numpy is chosen only when it is at least 5% faster.
  - The result is cached in ``$MMSID_CACHE_DIR/cpu_gemm.json``, keyed by CPU model, thread
    count and library versions. Later processes on the same machine reuse it, so a seed
    gives the same codes run after run. A timing that varies from process to process
    could flip the choice, and the backends can break an argmin tie differently.

Both backends compute the same product up to float rounding. Numpy's OpenBLAS takes its
thread count from ``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS``, not from
``torch.set_num_threads``.
"""

from __future__ import annotations

import json
import os
import platform
import time

import numpy as np
import torch

ENV = "MMSID_CPU_GEMM"
CHOICES = ("auto", "torch", "numpy")
CAL_SHAPE = (2048, 768, 768)  # (B, d, K) of the calibration product
MARGIN = 1.05  # numpy must be this much faster to be chosen
_chosen: dict[str, str] = {}  # calibration key -> backend, for this process


def addmm(bias: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``bias + x @ w`` with the machine's faster BLAS. (K,) or (B, K), (B, d), (d, K) ->
    (B, K). A fresh tensor; inputs are never written."""
    if backend_for(x, w) == "numpy":
        out = np.matmul(x.detach().numpy(), w.detach().numpy())  # (B, K), OpenBLAS
        out += bias.detach().numpy()
        return torch.from_numpy(out)
    return torch.addmm(bias, x, w)


def backend_for(x: torch.Tensor, w: torch.Tensor) -> str:
    """The backend :func:`addmm` uses for these operands. It is ``torch`` for anything but
    fp32 CPU tensors outside autograd."""
    eligible = (
        x.device.type == "cpu"
        and w.device.type == "cpu"
        and x.dtype == torch.float32
        and w.dtype == torch.float32
        and not (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad))
    )
    return cpu_backend() if eligible else "torch"


def cpu_backend() -> str:
    """``MMSID_CPU_GEMM`` resolved: ``torch`` or ``numpy`` (``auto`` measures, once)."""
    want = os.environ.get(ENV, "auto").strip().lower()
    if want not in CHOICES:
        from mmsid.errors import ConfigError

        raise ConfigError(f"{ENV}={want!r}: choose one of {', '.join(CHOICES)}")
    if want != "auto":
        return want
    key = calibration_key()
    if key not in _chosen:
        _chosen[key] = _cached(key) or _calibrate(key)["backend"]
    return _chosen[key]


def calibration_key() -> str:
    """What a measurement holds for: this CPU model, torch's thread count, both libraries."""
    threads = torch.get_num_threads()
    return f"{_cpu_model()}|threads={threads}|torch={torch.__version__}|numpy={np.__version__}"


def measure(shape: tuple[int, int, int] = CAL_SHAPE, rounds: int = 7) -> dict[str, float]:
    """GFLOP/s of both backends at ``shape`` (B, d, K): medians over alternating rounds."""
    B, d, K = shape
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(B, d, generator=g), torch.randn(d, K, generator=g)
    bias = torch.randn(K, generator=g)
    xn, wn, bn = x.numpy(), w.numpy(), bias.numpy()

    def run_numpy() -> None:
        out = np.matmul(xn, wn)
        out += bn

    runs = {"torch": lambda: torch.addmm(bias, x, w), "numpy": run_numpy}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for f in runs.values():  # warm-up: thread pools, first-call allocation
        f()
    for r in range(rounds):
        for name in sorted(runs, reverse=bool(r % 2)):  # alternate which runs first
            t0 = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - t0)
    flop = 2.0 * B * d * K
    return {k: flop / float(np.median(v)) / 1e9 for k, v in times.items()}


def _calibrate(key: str) -> dict:
    rate = measure()
    choice = "numpy" if rate["numpy"] >= MARGIN * rate["torch"] else "torch"
    entry = {"backend": choice, "gflop_per_s": rate, "shape": list(CAL_SHAPE)}
    try:  # a read-only cache only costs a re-measurement in the next process
        from mmsid.io import write_json

        write_json(_cache_path(), {**_cache_table(), key: entry})
    except OSError:
        pass
    return entry


def _cached(key: str) -> str | None:
    entry = _cache_table().get(key)
    choice = entry.get("backend") if isinstance(entry, dict) else None
    return choice if choice in ("torch", "numpy") else None


def _cache_table() -> dict:
    """The cache file's entries; an unreadable or malformed file reads as empty."""
    try:
        table = json.loads(_cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return table if isinstance(table, dict) else {}


def _cache_path():
    from mmsid.data.download import cache_dir

    return cache_dir() / "cpu_gemm.json"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
