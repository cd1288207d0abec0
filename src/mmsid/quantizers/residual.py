"""Residual quantizer: L codebooks of K codewords; level l quantizes what levels < l left.

    r_1 = z,  c_l = argmin_k ||r_l - C_l[k]||,  r_{l+1} = r_l - C_l[c_l],  z_q = sum_l C_l[c_l]

Training (TIGER / VQ-VAE): straight-through estimator z + sg[z_q - z], codebook loss
||sg[r_l] - C_l[c_l]||^2 and commitment beta * ||r_l - sg[C_l[c_l]]||^2 per level; k-means
initialisation of every level from the first batch; dead-code restart; optional EMA updates
(van den Oord et al. 2017, appendix) instead of the codebook loss.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mmsid.quantizers.base import QuantizerOutput, nearest, sq_distances
from mmsid.quantizers.kmeans import KMeansConfig, kmeans


@dataclass(frozen=True)
class ResidualQuantizerConfig:
    levels: int = 3
    codebook_size: int = 256
    dim: int = 32
    beta: float = 0.25  # commitment weight (TIGER uses 0.25)
    ema: bool = False  # EMA codebook updates instead of the codebook loss
    ema_decay: float = 0.99
    kmeans_init: bool = True
    kmeans_iters: int = 20
    dead_code_threshold: int = 0  # restart codes used < this many times in a window (0 = off)
    seed: int = 0


class ResidualQuantizer(nn.Module):
    """forward(x) -> QuantizerOutput; encode(x) -> codes (no grad, GEMM); decode(codes) -> x_q."""

    def __init__(self, *, cfg: ResidualQuantizerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        L, K, d = cfg.levels, cfg.codebook_size, cfg.dim
        g = torch.Generator().manual_seed(cfg.seed)
        self.codebooks = nn.Parameter(torch.randn(L, K, d, generator=g) / d**0.5)  # (L, K, d)
        self.register_buffer("initialized", torch.tensor(not cfg.kmeans_init))
        self.register_buffer("usage", torch.zeros(L, K))  # code counts since last restart
        if cfg.ema:
            self.codebooks.requires_grad_(False)
            self.register_buffer("ema_count", torch.ones(L, K))
            self.register_buffer("ema_sum", self.codebooks.detach().clone())

    @property
    def levels(self) -> int:
        return self.cfg.levels

    @torch.no_grad()
    def init_from_data(
        self, x: torch.Tensor, *, backend: str = "torch", init: torch.Tensor | None = None
    ) -> list[float]:
        """k-means on each level's residual (x: (N, d), N >= K) — RQ-KMeans on ``x``.
        ``init``: (L, K, d) starting codebooks (a warm start from a previous fit; torch
        backend), else seeded.

        Returns the mean squared residual norm after each level."""
        r = x.detach()
        residual_mse = []
        for lvl in range(self.levels):
            c = kmeans(
                r,
                KMeansConfig(
                    k=self.cfg.codebook_size,
                    iters=self.cfg.kmeans_iters,
                    seed=self.cfg.seed + lvl,
                    backend=backend,
                ),
                init=None if init is None else init[lvl],
            )
            self.codebooks.data[lvl] = c
            r = r - c[nearest(r, c)]
            residual_mse.append(float((r * r).sum(1).mean()))
        if self.cfg.ema:
            self.ema_sum.copy_(self.codebooks.data)
            self.ema_count.fill_(1.0)
        self.initialized.fill_(True)
        return residual_mse

    def forward(self, x: torch.Tensor, *, tau: float = 0.0) -> QuantizerOutput:
        """x: (B, d) -> quantized (B, d), codes (B, L).

        ``tau = 0``: straight-through estimator (the value is the hard codeword sum, the
        gradient goes to x unchanged). ``tau > 0``: soft indexing for downstream fine-tuning
        (MMQ stage 2): per level ``p = softmax(-||r - C_k||^2 / tau)``, value = the hard
        codeword, gradient = that of ``p @ C``, so a downstream loss reaches both the encoder
        (through the distances) and the codebooks."""
        if not bool(self.initialized) and self.training:
            self.init_from_data(x)
        r = x
        q_sum = torch.zeros_like(x)
        codes, cb_loss, commit = [], x.new_zeros(()), x.new_zeros(())
        for lvl in range(self.levels):
            C = self.codebooks[lvl]  # (K, d)
            code = sq_distances(r.detach(), C.detach()).argmin(dim=1)  # (B,)
            q = C[code]  # (B, d)
            if self.cfg.ema:
                if self.training:
                    self._ema_update(lvl, r.detach(), code)
            else:
                cb_loss = cb_loss + ((r.detach() - q) ** 2).sum(-1).mean()
            commit = commit + ((r - q.detach()) ** 2).sum(-1).mean()
            if self.training:
                self.usage[lvl] += torch.bincount(code, minlength=self.cfg.codebook_size)
            if tau > 0:
                p = torch.softmax(-sq_distances(r, C) / tau, dim=1)  # (B, K)
                q_soft = p @ C  # (B, d)
                q_st = q_soft + (q - q_soft).detach()  # value: hard codeword; grad: soft
                q_sum = q_sum + q_st
                r = r - q_st
            else:
                q_sum = q_sum + q
                r = r - q.detach()
            codes.append(code)
        if tau > 0:
            quantized = q_sum
        else:
            quantized = x + (q_sum - x).detach()  # straight-through: value q_sum, gradient to x
        losses = {"commitment": self.cfg.beta * commit}
        if not self.cfg.ema:
            losses["codebook"] = cb_loss
        return QuantizerOutput(quantized=quantized, codes=torch.stack(codes, dim=1), losses=losses)

    @torch.no_grad()
    def _ema_update(self, lvl: int, r: torch.Tensor, code: torch.Tensor) -> None:
        K, decay = self.cfg.codebook_size, self.cfg.ema_decay
        onehot_count = torch.bincount(code, minlength=K).to(r.dtype)  # (K,)
        sums = torch.zeros(K, r.shape[1], dtype=r.dtype, device=r.device).index_add_(0, code, r)
        self.ema_count[lvl].mul_(decay).add_(onehot_count, alpha=1 - decay)
        self.ema_sum[lvl].mul_(decay).add_(sums, alpha=1 - decay)
        n = self.ema_count[lvl].sum()
        count = (self.ema_count[lvl] + 1e-5) / (n + K * 1e-5) * n  # Laplace smoothing
        self.codebooks.data[lvl] = self.ema_sum[lvl] / count[:, None]

    @torch.no_grad()
    def restart_dead_codes(self, x: torch.Tensor) -> int:
        """Move codes used <= ``dead_code_threshold`` times since the last call onto random
        residuals of the current batch at that level. Returns how many were restarted."""
        if self.cfg.dead_code_threshold <= 0:
            return 0
        g = torch.Generator().manual_seed(int(self.usage.sum().item()) + self.cfg.seed)
        r, total = x.detach(), 0
        for lvl in range(self.levels):
            dead = self.usage[lvl] < self.cfg.dead_code_threshold
            n_dead = int(dead.sum())
            if n_dead:
                pick = torch.randint(r.shape[0], (n_dead,), generator=g).to(r.device)
                self.codebooks.data[lvl, dead] = r[pick]
                if self.cfg.ema:
                    self.ema_sum[lvl, dead] = r[pick]
                    self.ema_count[lvl, dead] = 1.0
                total += n_dead
            C = self.codebooks.data[lvl]
            r = r - C[nearest(r, C)]
        self.usage.zero_()
        return total

    @torch.no_grad()
    def lookup_tables(self) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """What :meth:`encode` precomputes from the codebooks: -2 C flattened (L*K, d), ||C||^2
        (L*K,) and the cross tables 2 C_m C_l^T (K, K) for m < l. Compute once and pass to
        ``encode(..., tables=...)`` when encoding many batches with fixed codebooks."""
        L, K, d = self.codebooks.shape
        C = self.codebooks.detach()
        cross2 = {(m, lvl): 2.0 * (C[m] @ C[lvl].t()) for lvl in range(L) for m in range(lvl)}
        return -2.0 * C.reshape(L * K, d), (C * C).sum(-1).reshape(L * K), cross2

    @torch.no_grad()
    def encode(
        self,
        x: torch.Tensor,
        *,
        chunk: int | None = None,
        tables: tuple[torch.Tensor, torch.Tensor, dict] | None = None,
        backend: str | None = None,
    ) -> torch.Tensor:
        """Greedy residual encoding with one GEMM for all levels. (N, d) -> (N, L).

        ||r_l - c||^2 = ||r_l||^2 - 2 <r_l, c> + ||c||^2 with r_l = x - sum_{m<l} C_m[k_m], so
        <r_l, c> = <x, c> - sum_{m<l} <C_m[k_m], c>: the first term for every level comes from
        one (B, d) x (d, L*K) GEMM, the second from precomputed codebook cross products
        (K x K per level pair), so no residual is ever materialised. ||r_l||^2 does not change
        the argmin. The same algebra as faiss's ``use_beam_LUT`` path at beam size 1.

        On the CPU the chunks run through NumPy (its BLAS) unless ``backend="torch"`` or
        ``MMSID_CPU_ENCODE=torch`` (:func:`cpu_encode_backend`); elsewhere through torch. Both
        give the same codes up to float near-ties (the two BLAS sum in different orders).
        ``chunk`` rows per GEMM: by default 2,048 through NumPy (with 1,024, the quickest of
        512-8,192 in a development timing at these catalogues' shapes: a block of scores stays
        in cache for the per-level steps), 8,192 through torch.
        """
        L, K, _ = self.codebooks.shape
        tables = tables if tables is not None else self.lookup_tables()
        if x.device.type == "cpu" and cpu_encode_backend(backend) == "numpy":
            return _encode_numpy(x, tables, L, K, chunk or 2048)
        chunk = chunk or 8192
        neg2_flat, c_sq, cross2 = tables
        codes = torch.empty(x.shape[0], L, dtype=torch.int64, device=x.device)
        for s in range(0, x.shape[0], chunk):
            xb = x[s : s + chunk]
            # ||c||^2 - 2 <x, c> for every level's codewords in one fused GEMM
            score = torch.addmm(c_sq, xb, neg2_flat.t()).view(-1, L, K)  # (B, L, K)
            cb = codes[s : s + chunk]
            for lvl in range(L):
                sc = score[:, lvl]  # (B, K)
                for m in range(lvl):
                    sc.add_(torch.index_select(cross2[(m, lvl)], 0, cb[:, m]))  # (B, K)
                cb[:, lvl] = sc.argmin(dim=1)
        return codes

    @torch.no_grad()
    def encode_reference(self, x: torch.Tensor) -> torch.Tensor:
        """Slow reference: per-row, per-level brute force. (N, d) -> (N, L)."""
        out = []
        for row in x:
            r, row_codes = row.clone(), []
            for lvl in range(self.levels):
                d = ((self.codebooks[lvl] - r) ** 2).sum(1)
                k = int(d.argmin())
                row_codes.append(k)
                r = r - self.codebooks[lvl, k]
            out.append(row_codes)
        return torch.tensor(out, dtype=torch.int64)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(N, L) codes -> (N, d) sum of the chosen codewords (a prefix of levels is allowed)."""
        levels = torch.arange(codes.shape[1], device=codes.device)
        return self.codebooks[levels, codes].sum(dim=1)  # (N, L, d) -> (N, d)


CPU_ENCODE_BACKENDS = ("numpy", "torch")


def cpu_encode_backend(backend: str | None = None) -> str:
    """Which library runs :meth:`ResidualQuantizer.encode` on CPU tensors: ``backend`` if
    given, else ``MMSID_CPU_ENCODE``, else ``numpy``. The encode is one GEMM plus a few
    (B, K) gathers and argmins per level. On the AMD EPYC machines mmsid is measured on, the
    bare GEMMs of NumPy's OpenBLAS and torch's MKL run at similar rates, but the whole loop ran
    3-9% faster in NumPy at every catalogue shape (``benchmarks/results/tokenizers.md`` times
    both paths against faiss). Set ``torch`` where torch's is the faster one.
    """
    where = "backend" if backend is not None else "MMSID_CPU_ENCODE"
    backend = backend if backend is not None else os.environ.get("MMSID_CPU_ENCODE", "numpy")
    if backend not in CPU_ENCODE_BACKENDS:
        raise ValueError(f"{where}={backend!r}: use one of {CPU_ENCODE_BACKENDS}")
    return backend


def _encode_numpy(
    x: torch.Tensor, tables: tuple[torch.Tensor, torch.Tensor, dict], L: int, K: int, chunk: int
) -> torch.Tensor:
    """:meth:`ResidualQuantizer.encode`'s loop on NumPy arrays (views of the torch tensors, no
    copies; float16 / bfloat16 rows are widened a chunk at a time). (N, d) -> (N, L)."""
    neg2_flat, c_sq = (t.detach().numpy() for t in tables[:2])
    cross = {key: t.detach().numpy() for key, t in tables[2].items()}
    w = neg2_flat.T  # (d, L*K), a transposed view: BLAS reads it as is
    codes = np.empty((x.shape[0], L), dtype=np.int64)
    for s in range(0, x.shape[0], chunk):
        xb = x[s : s + chunk].detach()
        if xb.dtype not in (torch.float32, torch.float64):
            xb = xb.to(torch.float32)
        score = xb.numpy() @ w  # (B, L*K)
        score += c_sq
        score = score.reshape(-1, L, K)  # (B, L, K)
        cb = codes[s : s + chunk]
        for lvl in range(L):
            sc = score[:, lvl]  # (B, K)
            for m in range(lvl):
                sc += cross[(m, lvl)][cb[:, m]]  # (B, K)
            cb[:, lvl] = sc.argmin(axis=1)
    return torch.from_numpy(codes)
