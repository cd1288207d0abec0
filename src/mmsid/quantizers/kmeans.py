"""Batched k-means in torch (default) or faiss, with k-means++-style seeding and empty-cluster
repair. Used for codebook initialisation (RQ-VAE, MMQ) and as the RQ-KMeans / PSRQ fitter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from mmsid.quantizers.base import nearest


@dataclass(frozen=True)
class KMeansConfig:
    k: int = 256
    iters: int = 25
    seed: int = 0
    backend: Literal["torch", "faiss"] = "torch"
    # Fit on at most this many points per centroid (faiss's default rule); assignment of all
    # points afterwards is exact. 0 = use every point.
    max_points_per_centroid: int = 256
    # "random" (faiss's choice) gives better-balanced clusters on small catalogs than k-means++,
    # which seeds outliers as singleton clusters.
    init: Literal["kmeans++", "random"] = "random"


def _kmeanspp(x: torch.Tensor, k: int, g: torch.Generator) -> torch.Tensor:
    """Greedy-free k-means++ seeding (D^2 sampling). x: (N, d) -> (k, d)."""
    n = x.shape[0]
    first = torch.randint(n, (1,), generator=g).item()
    centers = [x[first]]
    d2 = ((x - x[first]) ** 2).sum(1)  # (N,)
    for _ in range(1, k):
        total = d2.sum()
        if total <= 0:  # all points coincide with chosen centres: pick at random
            idx = torch.randint(n, (1,), generator=g).item()
        else:
            idx = torch.multinomial((d2 / total).cpu(), 1, generator=g).item()
        centers.append(x[idx])
        d2 = torch.minimum(d2, ((x - x[idx]) ** 2).sum(1))
    return torch.stack(centers)


def kmeans(x: torch.Tensor, cfg: KMeansConfig, init: torch.Tensor | None = None) -> torch.Tensor:
    """Lloyd's k-means.

    Args:
        x: (N, d) float32, N >= k.
        init: (k, d) starting centroids (torch backend; e.g. the previous round's in OPQ);
            None = seeded as ``cfg.init`` says.
    Returns:
        (k, d) centroids. Deterministic for a given seed and backend.
    """
    n, d = x.shape
    if n < cfg.k:
        raise ValueError(f"k-means with k={cfg.k} needs at least {cfg.k} points, got {n}")
    if cfg.backend == "faiss":
        return _kmeans_faiss(x, cfg)
    g = torch.Generator().manual_seed(cfg.seed)
    fit = x
    if cfg.max_points_per_centroid and n > cfg.k * cfg.max_points_per_centroid:
        idx = torch.randperm(n, generator=g)[: cfg.k * cfg.max_points_per_centroid]
        fit = x[idx.to(x.device)]
    if init is not None:
        c = init.to(x).clone()
    elif cfg.init == "kmeans++":
        # seeding on a subsample keeps it O(k * 20k * d)
        m = min(fit.shape[0], max(cfg.k * 20, 2048))
        sub = fit[torch.randperm(fit.shape[0], generator=g)[:m].to(x.device)]
        c = _kmeanspp(sub, cfg.k, g).clone()
    else:
        c = fit[torch.randperm(fit.shape[0], generator=g)[: cfg.k].to(x.device)].clone()
    for _ in range(cfg.iters):
        assign = nearest(fit, c)  # (M,)
        sums = torch.zeros_like(c).index_add_(0, assign, fit)  # (k, d)
        counts = torch.bincount(assign, minlength=cfg.k).to(fit.dtype)  # (k,)
        empty = counts == 0
        c = torch.where(empty[:, None], c, sums / counts.clamp_min(1)[:, None])
        if empty.any():
            c = _split_large(c, counts, empty, g)
    return c


def _split_large(
    c: torch.Tensor,
    counts: torch.Tensor,
    empty: torch.Tensor,
    g: torch.Generator,
    eps: float = 1.0 / 1024,
) -> torch.Tensor:
    """Empty-cluster repair as in faiss: each empty centroid takes half of a large cluster —
    pick a cluster with probability ~ (size - 1), place the two centroids at c (1 +- eps).

    (Moving empty centroids onto outlying points instead makes singleton clusters whose
    residual is zero, which collapses the next residual level.)"""
    c, counts = c.clone(), counts.clone()
    for j in empty.nonzero().flatten().tolist():
        weights = (counts - 1).clamp_min(0)
        if weights.sum() <= 0:
            break
        m = int(torch.multinomial((weights / weights.sum()).cpu(), 1, generator=g))
        c[j] = c[m] * (1 + eps)
        c[m] = c[m] * (1 - eps)
        counts[j] = counts[m] // 2
        counts[m] -= counts[j]
    return c


def _kmeans_faiss(x: torch.Tensor, cfg: KMeansConfig) -> torch.Tensor:
    import faiss

    xn = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
    km = faiss.Kmeans(
        xn.shape[1],
        cfg.k,
        niter=cfg.iters,
        seed=cfg.seed,
        verbose=False,
        max_points_per_centroid=cfg.max_points_per_centroid or 1 << 30,
    )
    km.train(xn)
    return torch.from_numpy(km.centroids.copy()).to(x.device)
