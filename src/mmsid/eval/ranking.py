"""CTR metrics: AUC, GAUC (per-user AUC weighted by the user's impressions), LogLoss."""

from __future__ import annotations

import numpy as np


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney U) formula, ties counted as half.
    Returns NaN when only one class is present."""
    labels = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    s = np.asarray(scores)[order]
    ranks = np.empty(len(s))
    # average ranks over ties
    bounds = np.r_[0, np.flatnonzero(np.diff(s)) + 1, len(s)]
    for a, b in zip(bounds[:-1], bounds[1:]):
        ranks[a:b] = (a + b + 1) / 2.0  # 1-based mean rank of the tie block
    r = np.empty(len(s))
    r[order] = ranks
    return float((r[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def gauc(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> float:
    """Impression-weighted mean of per-user AUC over users that have both classes."""
    users, labels, scores = map(np.asarray, (users, labels, scores))
    order = np.argsort(users, kind="stable")
    u = users[order]
    bounds = np.r_[0, np.flatnonzero(np.diff(u)) + 1, len(u)]
    num = den = 0.0
    for a, b in zip(bounds[:-1], bounds[1:]):
        idx = order[a:b]
        value = auc(labels[idx], scores[idx])
        if value == value:  # not NaN
            num += value * (b - a)
            den += b - a
    return num / den if den else float("nan")


def logloss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(labels, dtype=np.float64)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())
