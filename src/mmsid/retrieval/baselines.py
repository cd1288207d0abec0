"""Retrieval baselines any practitioner could build, on the retrievers' ``recommend`` contract
(``recommend(batch, k) -> (items (B, k), scores (B, k))`` over the whole catalogue).

* :class:`Popularity`: the ``k`` items with the most training interactions, the same list for
  every user (ties by item id). It never recommends a cold item (they have no interactions).
* :class:`ContentKNN`: the items whose content embedding is closest (cosine) to the user's last
  history item, that item itself excluded. It needs no interactions, so it scores cold items
  like any other: the cold-start baseline a semantic ID has to beat.

:func:`item_content` builds the content table ContentKNN (and content fusion, and the service's
fusion) reads.
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


def item_content(
    dataset: str, data_dir: str | None, modalities: list[str], center: bool, ds=None
) -> tuple[np.ndarray, dict[str, int], dict[str, np.ndarray]]:
    """What content-kNN and content fusion read: (N, d) item content (the modalities'
    L2-normalised concatenation; empty ``modalities`` = the data set's tokenizer defaults),
    each modality's width in that order, and the centring means when ``center`` (else {}): a
    new item's content is built with the same modalities and means (mmsid.serve).
    ``ds``: ``dataset`` already loaded, for a caller that also builds its protocol."""
    from mmsid.data import load_dataset
    from mmsid.features import build_features
    from mmsid.features.inputs import DEFAULT_MODALITIES, center_means, concat_features

    ds = ds if ds is not None else load_dataset(dataset, data_dir)
    names = list(modalities) or DEFAULT_MODALITIES.get(dataset, list(ds.modalities))
    feats = build_features(ds, modalities=names, progress=False)
    means = center_means(feats, names) if center else {}
    widths = {n: int(feats.embeddings[n].shape[1]) for n in names}
    return concat_features(feats, names, means=means)[0], widths, means
