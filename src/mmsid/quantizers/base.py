"""The one quantizer contract and the GEMM-based nearest-codeword search all quantizers share."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class QuantizerOutput:
    """What every quantizer's ``forward`` returns.

    Attributes:
        quantized: (B, d) the quantized vector, with straight-through gradients to the input.
        codes: (B, L) int64 code per level.
        losses: named scalar losses (e.g. ``codebook``, ``commitment``); sum them to train.
    """

    quantized: torch.Tensor
    codes: torch.Tensor
    losses: dict[str, torch.Tensor] = field(default_factory=dict)


def sq_distances(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances by one GEMM: ||x||^2 - 2 x C^T + ||C||^2.

    Args:
        x: (B, d); codebook: (K, d).
    Returns:
        (B, K) distances (clamped at 0 against rounding).
    """
    x_sq = (x * x).sum(dim=1, keepdim=True)  # (B, 1)
    c_sq = (codebook * codebook).sum(dim=1)  # (K,)
    return torch.addmm(x_sq + c_sq, x, codebook.t(), alpha=-2.0).clamp_min_(0.0)  # (B, K)


@torch.no_grad()
def nearest(x: torch.Tensor, codebook: torch.Tensor, *, chunk: int = 65536) -> torch.Tensor:
    """Index of the nearest codeword for every row of ``x``, in row chunks.

    ||x||^2 does not change the argmin, so it is skipped: argmin_k (||C_k||^2 - 2 x.C_k).
    Args:
        x: (N, d); codebook: (K, d).
    Returns:
        (N,) int64.
    """
    c_sq = (codebook * codebook).sum(dim=1)  # (K,)
    out = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    for s in range(0, x.shape[0], chunk):
        xb = x[s : s + chunk]
        scores = torch.addmm(c_sq.expand(xb.shape[0], -1), xb, codebook.t(), alpha=-2.0)
        out[s : s + chunk] = scores.argmin(dim=1)
    return out


def nearest_reference(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Slow reference for :func:`nearest`: explicit pairwise differences. (N,) int64."""
    diff = x[:, None, :] - codebook[None, :, :]  # (N, K, d)
    return (diff * diff).sum(-1).argmin(dim=1)
