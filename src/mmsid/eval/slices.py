"""Item slices shared by every task: head (the top ``head_share`` of items with training
interactions, by training popularity), long tail (the rest), cold (fewer than
``cold_threshold`` training interactions)."""

from __future__ import annotations

import numpy as np


def item_slices(
    popularity: np.ndarray, items: np.ndarray, *, head_share: float, cold_threshold: int
) -> dict[str, np.ndarray]:
    """Boolean masks over ``items`` (any shape of item ids) from per-item training counts."""
    k = max(1, round(head_share * int((popularity > 0).sum())))
    is_head = np.zeros(len(popularity), dtype=bool)
    is_head[np.argsort(-popularity, kind="stable")[:k]] = True
    return {
        "head": is_head[items],
        "long_tail": ~is_head[items],
        "cold": popularity[items] < cold_threshold,
    }
