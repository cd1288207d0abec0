"""Top-K retrieval metrics for leave-one-out evaluation (one relevant item per user).

With a single held-out item, Recall@K is the hit rate (is the target among the top K) and
NDCG@K is ``1 / log2(rank + 2)`` for a hit at 0-based ``rank`` (the ideal DCG is 1), as in the
TIGER and SASRec papers.
"""

from __future__ import annotations

import numpy as np


def target_rank(topk: np.ndarray, target: np.ndarray) -> np.ndarray:
    """0-based rank of each user's target in its list, or -1 when absent.

    Args:
        topk: (U, K) item ids, best first; -1 marks an empty slot.
        target: (U,) item ids.
    Returns:
        (U,) int64.
    """
    hit = topk == np.asarray(target)[:, None]  # (U, K)
    return np.where(hit.any(1), hit.argmax(1), -1).astype(np.int64)


def recall_at_k(topk: np.ndarray, target: np.ndarray, k: int) -> float:
    rank = target_rank(topk[:, :k], target)
    return float((rank >= 0).mean()) if len(rank) else float("nan")


def ndcg_at_k(topk: np.ndarray, target: np.ndarray, k: int) -> float:
    rank = target_rank(topk[:, :k], target)
    if not len(rank):
        return float("nan")
    return float(np.where(rank >= 0, 1.0 / np.log2(np.maximum(rank, 0) + 2.0), 0.0).mean())


def retrieval_metrics(
    topk: np.ndarray,
    target: np.ndarray,
    *,
    ks: tuple[int, ...] = (5, 10, 20),
    slices: dict[str, np.ndarray] | None = None,
) -> dict[str, dict[str, float]]:
    """Recall@K and NDCG@K on all users and on each slice (a boolean mask over users).

    Returns ``{"all": {"recall@5": .., "ndcg@5": .., ..., "n": U}, "<slice>": {...}}``.
    """
    if topk.shape[1] < max(ks):
        raise ValueError(f"lists hold {topk.shape[1]} items, fewer than K = {max(ks)}")
    masks = {"all": np.ones(len(target), dtype=bool), **(slices or {})}
    out = {}
    for name, m in masks.items():
        row: dict[str, float] = {}
        for k in ks:
            row[f"recall@{k}"] = recall_at_k(topk[m], target[m], k)
            row[f"ndcg@{k}"] = ndcg_at_k(topk[m], target[m], k)
        row["n"] = int(m.sum())
        out[name] = row
    return out
