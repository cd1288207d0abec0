"""Content fusion: a trained retriever's score plus the item's content similarity to the user's
last item, with the weight chosen on validation.

    s_w(u, i) = s(u, i) + w * cos(x_last(u), x_i)       for every catalogue item i   (B, N)

``s`` is any retriever with an exact ``score(history) -> (B, N)`` (parallel-sid: the mean code
log-probability; SASRec: the dot-product logit); ``cos`` is content-kNN's score (x: the item's
L2-normalised content embedding, as :class:`~mmsid.retrieval.baselines.ContentKNN` reads it).
The user's last item itself gets no content term (content-kNN excludes it too), so a large w
does not spend a slot on repeating it.

Why: a semantic ID carries an item's content only through codes whose embeddings are learnt
from interactions, and on amazon-beauty content-kNN beats parallel-sid on long-tail and cold
items (``benchmarks/results/parallel_ids.md``). Adding the content score to a trained model is
the plainest hybrid, and it serves new items as the SIDs do (it needs only their content). The
model is trained and early-stopped on its own; w is then picked from a grid (0 = the model
alone is always a candidate) by the validation metric on the whole validation split, so test
never chooses it. Our choice, not RPG's; the scale of ``s`` differs between models, so each
model gets its own w.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mmsid.retrieval.baselines import ContentKNN


class ContentFusion(nn.Module):
    """The ``recommend`` contract over ``base.score(history) + weight * content term``."""

    def __init__(self, base: nn.Module, content: np.ndarray | torch.Tensor, weight: float) -> None:
        """content: (N, d) item embeddings, as :class:`ContentKNN` reads them (any scale; an
        all-zero row, an item without content, gets no content term)."""
        super().__init__()
        if not hasattr(base, "score"):
            raise TypeError(f"{type(base).__name__} has no exact score(history): cannot fuse")
        self.base, self.knn, self.weight = base, ContentKNN(content), float(weight)

    def content_scores(self, history: torch.Tensor) -> torch.Tensor:
        """(B, H) histories, -1 padded at the end -> (B, N) cosine of each item with the
        user's last item; 0 for that item itself."""
        last, c = self.knn.similarity(history)  # (B,), (B, N)
        c[torch.arange(len(last), device=c.device), last] = 0.0
        return c

    @torch.no_grad()
    def score(self, history: torch.Tensor) -> torch.Tensor:
        s = self.base.score(history)  # (B, N)
        if self.weight:
            s = s + self.weight * self.content_scores(history)
        return s

    @torch.no_grad()
    def recommend(self, batch: dict[str, torch.Tensor], k: int, **_) -> tuple[torch.Tensor, ...]:
        top = self.score(batch["history"]).topk(k, dim=1)
        return top.indices, top.values  # (B, k) each


def fusion_reference(base: nn.Module, content: np.ndarray, history: np.ndarray, w: float):
    """The slow reference for :meth:`ContentFusion.score`: user by user, item by item."""
    x = np.asarray(content, np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    s = base.score(torch.as_tensor(history)).double().numpy()
    out = s.copy()
    for u, h in enumerate(np.asarray(history)):
        last = h[h >= 0][-1]
        for i in range(s.shape[1]):
            if i != last:
                out[u, i] += w * float(x[last] @ x[i])
    return out
