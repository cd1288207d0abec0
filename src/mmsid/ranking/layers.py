"""Building blocks shared by the ranking models: SID embeddings and DIN-style attention."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def mlp(dims: list[int], *, last_act: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2 or last_act:
            layers.append(nn.PReLU())  # DIN uses PReLU/Dice
    return nn.Sequential(*layers)


class SIDEmbedding(nn.Module):
    """e_i = sum_j E_j[code_ij]: one table per codebook level (k x d), summed over levels.

    ``codes`` (n_items, L) holds the semantic levels only (the collision index carries no
    meaning, so it gets no table). Row ``n_items`` is padding: every level maps to index K,
    whose embedding is zero.
    """

    def __init__(self, codes: np.ndarray, codebook_size: int, dim: int) -> None:
        super().__init__()
        n, L = codes.shape
        pad = np.full((1, L), codebook_size, dtype=np.int64)
        self.register_buffer(
            "codes", torch.from_numpy(np.concatenate([codes, pad]).astype(np.int64))
        )  # (n_items + 1, L)
        self.tables = nn.ModuleList(
            nn.Embedding(codebook_size + 1, dim, padding_idx=codebook_size) for _ in range(L)
        )
        for t in self.tables:
            nn.init.normal_(t.weight, std=0.05)
            with torch.no_grad():
                t.weight[codebook_size].zero_()

    def set_codes(self, codes: np.ndarray) -> None:
        """Embed this (N', L) code table from now on (row N' = padding): items added after
        training, scored by their codes' embeddings."""
        K = self.tables[0].num_embeddings - 1
        if codes.ndim != 2 or codes.shape[1] != len(self.tables) or codes.max(initial=0) >= K:
            raise ValueError(f"codes must be (N, {len(self.tables)}) in [0, {K})")
        pad = np.full((1, codes.shape[1]), K, dtype=np.int64)
        self.codes = torch.from_numpy(np.concatenate([codes, pad]).astype(np.int64)).to(
            self.codes.device
        )

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """items: (...) in 0..n_items (n_items = padding) -> (..., d).

        Each distinct item of the batch is embedded once and then gathered: L lookups over U
        distinct items plus one gather over the batch, instead of L lookups over every
        position (a batch of 1024 x 20 histories holds at most the catalogue's items, so at
        long IDs the lookups stop dominating a DIN step). Values equal
        ``forward_reference``'s exactly (same sum, same order); gradients up to float
        summation order."""
        u, inv = torch.unique(items, return_inverse=True)  # (U,), (...) into u
        return self.forward_reference(u)[inv]  # (U, d) gathered to (..., d)

    def forward_reference(self, items: torch.Tensor) -> torch.Tensor:
        """The slow reference: every position's L code embeddings looked up and summed."""
        c = self.codes[items]  # (..., L)
        return sum(t(c[..., j]) for j, t in enumerate(self.tables))


def grow_catalogue(sid: nn.ModuleDict, n_items: int, codes: dict[str, np.ndarray]) -> int:
    """Point every SIDEmbedding of ``sid`` at a catalogue grown after training ({set: (N', L)
    codes}, the first ``n_items`` rows the trained items'); returns N', the new padding index.
    The rankers' ``set_catalogue`` (an added item has no id embedding, only its SID's)."""
    if set(codes) != set(sid):
        raise ValueError(f"codes for SID sets {sorted(sid)}, got {sorted(codes)}")
    sizes = {len(c) for c in codes.values()}
    if len(sizes) != 1 or min(sizes) < n_items:
        raise ValueError(f"every set needs the same N >= {n_items} rows")
    for k, s in sid.items():
        s.set_codes(codes[k])
    return sizes.pop()


class TargetAttention(nn.Module):
    """DIN activation unit: weight_j = a(features of history item j and the target), no softmax
    (DIN keeps the intensity of interest); padded positions get weight 0.

    ``mode="din"``: a([h; t; h - t; h * t]) (Zhou et al. 2018);
    ``mode="concat"``: a([h; t]) (the MCCA paper's formula).
    """

    def __init__(
        self, dim_h: int, dim_t: int, *, hidden: tuple[int, ...] = (80, 40), mode: str = "din"
    ) -> None:
        super().__init__()
        self.mode = mode
        d_in = 4 * dim_h if mode == "din" else dim_h + dim_t
        if mode == "din" and dim_h != dim_t:
            raise ValueError("din-mode attention needs equal history and target widths")
        self.score = mlp([d_in, *hidden, 1])

    def forward(
        self, hist: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """hist (B, H, dh), target (B, dt), mask (B, H) True = real item.
        Returns pooled (B, dh) and weights (B, H)."""
        t = target[:, None, :].expand(-1, hist.shape[1], -1)  # (B, H, dt)
        if self.mode == "din":
            feats = torch.cat([hist, t, hist - t, hist * t], dim=-1)  # (B, H, 4d)
        else:
            feats = torch.cat([hist, t], dim=-1)  # (B, H, dh + dt)
        w = self.score(feats).squeeze(-1) * mask  # (B, H); padding -> exactly 0
        return (w[..., None] * hist).sum(1), w
