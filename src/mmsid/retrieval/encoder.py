"""The causal self-attention encoder SASRec and the parallel-SID retriever share: learned
absolute positions (items left-aligned, oldest first), pre-LayerNorm transformer blocks with
GELU, a causal mask and a key-padding mask, a final LayerNorm."""

from __future__ import annotations

import torch
from torch import nn


class CausalEncoder(nn.Module):
    def __init__(
        self,
        d: int,
        n_heads: int,
        d_ff: int,
        n_layers: int,
        dropout: float,
        max_history: int,
        *,
        pos_std: float | None = None,
    ) -> None:
        """pos_std: re-initialise the position table with this std (None: nn.Embedding's N(0, 1),
        which suits inputs scaled up by sqrt(d), as SASRec's)."""
        super().__init__()
        self.pos = nn.Embedding(max_history, d)
        if pos_std is not None:
            nn.init.normal_(self.pos.weight, std=pos_std)
        layer = nn.TransformerEncoderLayer(
            d, n_heads, d_ff, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """x (B, T, d) item inputs, pad (B, T) True after each sequence's end -> (B, T, d);
        position t reads positions <= t only."""
        T = x.shape[1]
        x = self.drop(x + self.pos.weight[:T])
        causal = torch.triu(torch.ones(T, T, dtype=torch.bool, device=x.device), 1)
        # padding sits after the real items, so a causal row never sees only padding
        x = self.blocks(x, mask=causal, src_key_padding_mask=pad, is_causal=True)
        return self.norm(x)


def next_item_pairs(seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, H+1) padded sequences (-1 after the end) -> inputs (B, H), targets (B, H) and the
    (B, H) mask of supervised positions (an item followed by an item): what the one-pass
    next-item losses average over."""
    inp, tgt = seq[:, :-1], seq[:, 1:]
    return inp, tgt, (tgt >= 0) & (inp >= 0)


def next_item_units(batch: dict[str, torch.Tensor]) -> int:
    """How many positions a one-pass next-item loss averages over (``loss_units`` of SASRec
    and parallel-sid: data-parallel training weighs each rank's loss by it)."""
    return int(next_item_pairs(batch["seq"])[2].sum())
