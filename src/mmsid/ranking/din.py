"""DIN (Zhou et al., KDD 2018) over item ids, optionally adding SID embeddings to every item's
id embedding (``DIN + SID``, the PSRQ paper's "DIN + semantic IDs" baselines)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mmsid.ranking.layers import SIDEmbedding, TargetAttention, grow_catalogue, mlp


@dataclass(frozen=True)
class DINConfig:
    dim: int = 64
    attention_hidden: tuple[int, ...] = (80, 40)
    mlp_hidden: tuple[int, ...] = (200, 80)


class DIN(nn.Module):
    def __init__(
        self,
        n_items: int,
        cfg: DINConfig = DINConfig(),
        *,
        sids: dict[str, np.ndarray] | None = None,
        codebook_size: int = 256,
    ) -> None:
        """sids: optional {name: (n_items, L) codes}; their embeddings are added to the id's."""
        super().__init__()
        self.n_items = n_items
        self.pad = n_items  # the padding index (n_catalogue after set_catalogue)
        self.item = nn.Embedding(n_items + 1, cfg.dim, padding_idx=n_items)  # row n = padding
        nn.init.normal_(self.item.weight, std=0.05)
        with torch.no_grad():
            self.item.weight[n_items].zero_()
        self.sid = nn.ModuleDict(
            {k: SIDEmbedding(v, codebook_size, cfg.dim) for k, v in (sids or {}).items()}
        )
        self.att = TargetAttention(cfg.dim, cfg.dim, hidden=cfg.attention_hidden, mode="din")
        self.out = mlp([3 * cfg.dim, *cfg.mlp_hidden, 1])

    def set_catalogue(self, codes: dict[str, np.ndarray]) -> None:
        """Score a catalogue grown after training ({set: (N', L) codes}, the first ``n_items``
        rows the trained items'): an added item has no id embedding (the zero padding row,
        as an item never seen) and its SID embeddings from its codes."""
        self.pad = grow_catalogue(self.sid, self.n_items, codes)

    def embed(self, items: torch.Tensor) -> torch.Tensor:
        """(...) item indices (``self.pad`` = padding) -> (..., d)."""
        e = self.item(items.clamp(max=self.n_items))  # added items and padding: zero row
        for s in self.sid.values():
            e = e + s(items)
        return e

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """-> logits (B,)."""
        hist = batch["history"]  # (B, H), -1 = padding
        mask = hist >= 0
        h = self.embed(torch.where(mask, hist, self.pad))  # (B, H, d)
        t = self.embed(batch["item"])  # (B, d)
        interest, _ = self.att(h, t, mask.float())
        return self.out(torch.cat([interest, t, interest * t], dim=-1)).squeeze(-1)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(self(batch), batch["label"])

    @torch.no_grad()
    def predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.sigmoid(self(batch))
