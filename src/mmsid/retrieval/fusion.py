"""Content fusion: a trained retriever's score plus the item's content similarity to the user's
last item and a prior for items the model never trained on, both weights chosen on validation.

    s_wb(u, i) = s(u, i) + w * cos(x_last(u), x_i) + b * new(i)   for every catalogue item i (B, N)

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

``new(i)`` is 1 for an item outside the model's training softmax (``base.trainable`` False: the
protocol's cold items, or an item added after training) and 0 otherwise. Why: the model's
scores are learnt relative to the items it trained on; an item it never saw as a target, or as
a negative, gets a score from its codes (parallel-sid) or its untrained embedding (SASRec) with
no calibration against the rest. ``b`` is that calibration, a log-prior for new items, read off
validation like w (on amazon-beauty validation, parallel-sid's new items are neither scored
systematically lower nor higher on average, but a small b moves cold items into the top ten at
almost no cost to warm ones). Our choice, not a paper's.

Which grid point (:func:`choose_point`): by default the best on the overall validation metric,
never the cold slice's. A catalogue that must surface its new items can set a tolerance t: among
the points whose overall validation metric is at least (1 - t) x the best, the one whose
validation metric on new-item targets (the cold slice) is highest. t bounds what new items may
cost everyone else, on validation; test never chooses. Our choice, not a paper's.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mmsid.retrieval.baselines import ContentKNN

# the grids the main job (mmsid run) and benchmarks/bench_retrievers.py search, each plus 0:
# w doubling from where the content term starts to reorder parallel-SID's top ten to where it
# dominates SASRec's logits; b doubling from well under parallel-SID's score spread (about 0.24
# on amazon-beauty) to well over SASRec's logits'
WEIGHT_GRID = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
NEW_ITEM_BIAS_GRID = (0.0125, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4)


def choose_point(points: list[dict[str, dict]], select: str, tolerance: float = 0.0) -> int:
    """The chosen grid point's index. ``points``: per grid point, validation metrics per slice
    ({"all": {select: v, ...}, "cold": {..., "n": users}, ...}), grid order (smaller w, then
    smaller b, first). Tolerance 0: the best ``all`` (ties: the earlier point). Tolerance t > 0:
    among the points with ``all`` >= (1 - t) x the best, the best ``cold`` (ties: the better
    ``all``, then the earlier point); with no cold target to read, as tolerance 0."""
    alls = [p["all"][select] for p in points]
    overall = max(range(len(points)), key=lambda g: (alls[g], -g))
    if not tolerance or not points[0].get("cold", {}).get("n"):
        return overall
    floor = (1.0 - tolerance) * alls[overall]
    ok = [g for g in range(len(points)) if alls[g] >= floor]
    return max(ok, key=lambda g: (points[g]["cold"][select], alls[g], -g))


class ContentFusion(nn.Module):
    """The ``recommend`` contract over ``base.score(history) + weight * content term +
    new_item_bias * new(i)``."""

    def __init__(
        self,
        base: nn.Module,
        content: np.ndarray | torch.Tensor,
        weight: float,
        new_item_bias: float = 0.0,
    ) -> None:
        """content: (N, d) item embeddings, as :class:`ContentKNN` reads them (any scale; an
        all-zero row, an item without content, gets no content term). ``base.trainable``:
        (N,) bool, the items it trained on (every item when it has none)."""
        super().__init__()
        if not hasattr(base, "score"):
            raise TypeError(f"{type(base).__name__} has no exact score(history): cannot fuse")
        self.base, self.knn, self.weight = base, ContentKNN(content), float(weight)
        self.new_item_bias = float(new_item_bias)

    def new_items(self) -> torch.Tensor:
        """(N,) 1.0 for the items the base model never trained on, else 0.0."""
        trained = getattr(self.base, "trainable", None)
        if trained is None:
            return torch.zeros(self.knn.x.shape[0], device=self.knn.x.device)
        return (~trained).float()

    def content_scores(self, history: torch.Tensor) -> torch.Tensor:
        """(B, H) histories, -1 padded at the end -> (B, N) cosine of each item with the
        user's last item; 0 for that item itself."""
        last, c = self.knn.similarity(history)  # (B,), (B, N)
        c[torch.arange(len(last), device=c.device), last] = 0.0
        return c

    @torch.no_grad()
    def score(self, history: torch.Tensor) -> torch.Tensor:
        return self.combine(self.base.score(history), history, self.weight, self.new_item_bias)

    def combine(self, s: torch.Tensor, history: torch.Tensor, w: float, b: float, c=None):
        """(B, N) base scores -> the fused ones at (w, b); ``c``: the content term, when
        already computed."""
        if w:
            s = s + w * (self.content_scores(history) if c is None else c)
        if b:
            s = s + b * self.new_items()
        return s

    @torch.no_grad()
    def recommend(self, batch: dict[str, torch.Tensor], k: int, **_) -> tuple[torch.Tensor, ...]:
        top = self.score(batch["history"]).topk(k, dim=1)
        return top.indices, top.values  # (B, k) each


class FusionGrid(nn.Module):
    """Every (w, b) of a grid in one pass over the users: the base model's score and the content
    term once per batch, then each grid point's top-k. ``recommend`` returns the grid points'
    top-k lists side by side, (B, G * k), so the evaluation loop of any retriever serves it."""

    def __init__(self, fused: ContentFusion, grid: list[tuple[float, float]]) -> None:
        super().__init__()
        self.fused, self.grid = fused, list(grid)

    @torch.no_grad()
    def recommend(self, batch: dict[str, torch.Tensor], k: int, **_) -> tuple[torch.Tensor, ...]:
        if k % len(self.grid):
            raise ValueError(f"k = {k}: ask for k per grid point times {len(self.grid)} points")
        h, k = batch["history"], k // len(self.grid)
        s, f = self.fused.base.score(h), self.fused  # (B, N)
        c = f.content_scores(h) if any(w for w, _ in self.grid) else None
        tops = [f.combine(s, h, w, b, c).topk(k, dim=1) for w, b in self.grid]
        return torch.cat([t.indices for t in tops], 1), torch.cat([t.values for t in tops], 1)


def fusion_reference(
    base: nn.Module, content: np.ndarray, history: np.ndarray, w: float, b: float = 0.0
):
    """The slow reference for :meth:`ContentFusion.score`: user by user, item by item."""
    trained = getattr(base, "trainable", None)
    x = np.asarray(content, np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    s = base.score(torch.as_tensor(history)).double().numpy()
    out = s.copy()
    for u, h in enumerate(np.asarray(history)):
        last = h[h >= 0][-1]
        for i in range(s.shape[1]):
            if i != last:
                out[u, i] += w * float(x[last] @ x[i])
            if trained is not None and not bool(trained[i]):
                out[u, i] += b
    return out
