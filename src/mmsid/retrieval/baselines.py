"""Retrieval baselines any practitioner could build, on the retrievers' ``recommend`` contract
(``recommend(batch, k) -> (items (B, k), scores (B, k))`` over the whole catalogue).

* :class:`Popularity`: the ``k`` items with the most training interactions, the same list for
  every user (ties by item id). It never recommends a cold item (they have no interactions).
* :class:`ContentKNN`: the items whose content embedding is closest (cosine) to the user's last
  history item, that item itself excluded. It needs no interactions, so it scores cold items
  like any other: the cold-start baseline a semantic ID has to beat.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class Popularity(nn.Module):
    def __init__(self, popularity: np.ndarray) -> None:
        super().__init__()
        pop = torch.as_tensor(np.asarray(popularity), dtype=torch.float64)
        # ties broken by item id: subtract a tiny increasing offset
        order = torch.arange(len(pop), dtype=torch.float64) / (len(pop) + 1)
        self.register_buffer("score", (pop - order).float())

    @torch.no_grad()
    def recommend(self, batch: dict[str, torch.Tensor], k: int, **_) -> tuple[torch.Tensor, ...]:
        B = batch["history"].shape[0]
        top = self.score.topk(k)
        return top.indices.expand(B, k), top.values.expand(B, k)


class ContentKNN(nn.Module):
    def __init__(self, content: np.ndarray) -> None:
        """content: (n_items, d) embeddings (any scale; rows are L2-normalised here, an
        all-zero row, an item without content, scores 0 against everything)."""
        super().__init__()
        x = torch.as_tensor(np.asarray(content), dtype=torch.float32)
        self.register_buffer("x", x / x.norm(dim=1, keepdim=True).clamp_min(1e-12))

    def similarity(self, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, H) histories, -1 padded at the end -> each user's last item (B,) and the cosine
        of every item with it (B, N)."""
        n = (history >= 0).sum(1)  # (B,)
        last = history[torch.arange(len(n), device=history.device), (n - 1).clamp_min(0)]
        return last, self.x[last] @ self.x.T

    @torch.no_grad()
    def recommend(self, batch: dict[str, torch.Tensor], k: int, **_) -> tuple[torch.Tensor, ...]:
        last, s = self.similarity(batch["history"])  # (B,), (B, N)
        s[torch.arange(len(last), device=s.device), last] = float("-inf")  # not the item itself
        top = s.topk(k, dim=1)
        return top.indices, top.values
