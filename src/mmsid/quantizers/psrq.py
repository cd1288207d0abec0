"""PSRQ — Progressive Semantic Residual Quantization (Wang et al., CIKM 2025, arXiv 2508.20359).

Plain RQ-KMeans clusters only the residual at every level, so deep codes drift away from the
content ("intra-modal semantic degradation"). PSRQ clusters the residual together with the
prefix semantic feature — what the chosen centroids already reconstruct:

    level 1:   C_1 = KMeans(X, k)                           (centroids in R^d)
    level l:   C_l = KMeans([X_l ; alpha (X - X_l)], k)     (centroids in R^{2d})
               X_{l+1} = X_l - C_l[code][:d]

so items with similar residuals but different coarse meaning stay apart.

Readings (the paper is silent; each is a setting): the residual update subtracts the first d
dimensions of the chosen 2d centroid (the mean residual of its members); ``alpha`` weights the
prefix half (the paper's method is alpha = 1; alpha = 0 is plain RQ-KMeans, exactly).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from mmsid.quantizers.base import nearest
from mmsid.quantizers.kmeans import KMeansConfig, kmeans
from mmsid.quantizers.tokenizer import Tokenizer


@dataclass(frozen=True)
class PSRQConfig:
    levels: int = 3
    codebook_size: int = 256
    alpha: float = 1.0  # weight of the prefix semantic feature; 0 = RQ-KMeans
    kmeans_iters: int = 25
    backend: Literal["torch", "faiss"] = "torch"
    seed: int = 0


class PSRQ(nn.Module):
    """Holds the codebooks: (L, K, 2d); level 0 uses only the first d columns."""

    def __init__(self, levels: int, codebook_size: int, dim: int, alpha: float) -> None:
        super().__init__()
        self.dim, self.alpha = dim, alpha
        self.register_buffer("codebooks", torch.zeros(levels, codebook_size, 2 * dim))

    def level_input(self, lvl: int, r: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """What level ``lvl`` clusters: r (N, d) at level 0, else [r ; alpha (x - r)] (N, 2d)."""
        if lvl == 0:
            return r
        return torch.cat([r, self.alpha * (x - r)], dim=1)  # (N, 2d)

    def level_codebook(self, lvl: int) -> torch.Tensor:
        return self.codebooks[lvl, :, : self.dim] if lvl == 0 else self.codebooks[lvl]

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Greedy progressive encoding. (N, d) -> (N, L)."""
        r = x.clone()
        codes = []
        for lvl in range(self.codebooks.shape[0]):
            c = nearest(self.level_input(lvl, r, x), self.level_codebook(lvl))
            codes.append(c)
            r = r - self.codebooks[lvl, c, : self.dim]
        return torch.stack(codes, dim=1)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(N, l) codes -> (N, d): the sum of the residual halves of the chosen centroids."""
        lv = torch.arange(codes.shape[1], device=codes.device)
        return self.codebooks[lv, codes, : self.dim].sum(dim=1)


class PSRQTokenizer(Tokenizer):
    method = "psrq"
    Config = PSRQConfig

    def _build(self) -> None:
        self.module = PSRQ(self.cfg.levels, self.cfg.codebook_size, self.input_dim, self.cfg.alpha)

    def _fit(self, x: torch.Tensor, **_: object) -> None:
        self._build()
        m, d = self.module, self.input_dim
        r = x.clone()
        for lvl in range(self.cfg.levels):
            feats = m.level_input(lvl, r, x)  # (N, d) or (N, 2d)
            c = kmeans(
                feats,
                KMeansConfig(
                    k=self.cfg.codebook_size,
                    iters=self.cfg.kmeans_iters,
                    seed=self.cfg.seed + lvl,
                    backend=self.cfg.backend,
                ),
            )
            m.codebooks[lvl, :, : c.shape[1]] = c
            r = r - c[nearest(feats, c), :d]
            self.history.append({"level": lvl, "residual_mse": float((r * r).sum(1).mean())})

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.module.to(x.device).encode(x)
