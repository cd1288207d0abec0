"""SASRec (Kang & McAuley, ICDM 2018): a causal self-attention encoder over item ids; the
hidden state at the last position scores every catalogue item by a dot product with the
(shared) item embeddings.

Reading for the baseline: the paper trains with one sampled negative per position (BCE); the
numbers TIGER's table quotes come from full-ranking evaluation, and cross-entropy over the
whole catalogue is the stronger, now common choice for that protocol, so ``loss="ce"`` is the
default and ``loss="bce"`` the paper's. Defaults: 2 blocks, d 64, 1 head, dropout 0.2 (the
paper's 0.5 is for its sparse-data settings; a setting), history 20 (same as TIGER here).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmsid.retrieval.encoder import CausalEncoder, next_item_pairs, next_item_units


@dataclass(frozen=True)
class SASRecConfig:
    d_model: int = 64
    n_heads: int = 1
    n_layers: int = 2
    dropout: float = 0.2
    max_history: int = 20
    loss: str = "ce"  # "ce" (full softmax) or "bce" (one sampled negative, the paper's)

    def __post_init__(self) -> None:
        from mmsid.config import check_ranges
        from mmsid.errors import ConfigError

        check_ranges(
            self,
            d_model=(1, None),
            n_heads=(1, None),
            n_layers=(1, None),
            dropout=(0.0, 0.99),
            max_history=(1, None),
        )
        if self.d_model % self.n_heads:
            raise ConfigError(f"sasrec.d_model {self.d_model} is not a multiple of n_heads")
        if self.loss not in ("ce", "bce"):
            raise ConfigError(f"sasrec.loss '{self.loss}': choose ce or bce")


class SASRec(nn.Module):
    """Contract (shared with TIGER): ``loss(batch)``, ``recommend(batch, k)``.

    Training batches hold ``seq`` (B, H+1): a training sequence window, oldest first, -1
    padded at the end; position t predicts item t+1. Evaluation batches hold ``history``
    (B, H) in the same layout."""

    def __init__(
        self,
        n_items: int,
        cfg: SASRecConfig = SASRecConfig(),
        *,
        trainable: np.ndarray | None = None,
    ) -> None:
        """trainable: (n_items,) bool, the items training may score (default all). The
        protocol's cold items are left out: the training softmax never sees them, so their
        embeddings stay at initialisation, as a new item's would in production."""
        super().__init__()
        mask = np.ones(n_items, bool) if trainable is None else np.asarray(trainable, bool)
        self.register_buffer("trainable", torch.as_tensor(mask), persistent=False)
        self.cfg, self.n_items = cfg, n_items
        d = cfg.d_model
        self.item = nn.Embedding(n_items + 1, d, padding_idx=n_items)  # row n_items = pad
        self.encoder = CausalEncoder(
            d, cfg.n_heads, 4 * d, cfg.n_layers, cfg.dropout, cfg.max_history
        )
        nn.init.normal_(self.item.weight, std=0.02)

    def hidden(self, seq: torch.Tensor) -> torch.Tensor:
        """seq (B, T) items oldest first, -1 padded at the end -> (B, T, d)."""
        pad = seq < 0
        x = self.item(seq.masked_fill(pad, self.n_items)) * self.cfg.d_model**0.5
        return self.encoder(x, pad)

    def scores(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.item.weight[: self.n_items].T  # (..., n_items)

    loss_units = staticmethod(next_item_units)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inp, tgt, valid = next_item_pairs(batch["seq"])  # (B, H) each
        h = self.hidden(inp)
        h, tgt = h[valid], tgt[valid]  # (M, d), (M,)
        if self.cfg.loss == "ce":
            return F.cross_entropy(self.scores(h).masked_fill(~self.trainable, -1e9), tgt)
        allowed = self.trainable.nonzero().squeeze(1)
        neg = allowed[torch.randint(0, len(allowed), tgt.shape, device=tgt.device)]
        pos_s = (h * self.item(tgt)).sum(-1)
        neg_s = (h * self.item(neg)).sum(-1)
        return F.binary_cross_entropy_with_logits(
            torch.cat([pos_s, neg_s]), torch.cat([torch.ones_like(pos_s), torch.zeros_like(neg_s)])
        )

    @torch.no_grad()
    def score(self, history: torch.Tensor) -> torch.Tensor:
        """(B, H) histories, -1 padded at the end -> (B, n_items) logits of the next item."""
        n = (history >= 0).sum(1)  # (B,)
        h = self.hidden(history[:, : int(n.max())])  # (B, T, d)
        return self.scores(h[torch.arange(len(n), device=h.device), n - 1])  # (B, n_items)

    @torch.no_grad()
    def recommend(self, batch: dict[str, torch.Tensor], k: int, **_) -> tuple[torch.Tensor, ...]:
        top = self.score(batch["history"]).topk(k, dim=1)
        return top.indices, top.values  # (B, k) each


def training_windows(sequences: list[np.ndarray], max_history: int) -> np.ndarray:
    """Training sequences cut into rows of ``max_history + 1`` items (B, H+1), oldest first,
    -1 padded at the end. A long sequence gives several rows, from its end backwards with
    stride H, overlapping by one item, so every transition is trained exactly once."""
    rows = []
    for s in sequences:
        end = len(s)
        while end >= 2:
            rows.append(s[max(0, end - max_history - 1) : end])
            end -= max_history
    out = np.full((len(rows), max_history + 1), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out
