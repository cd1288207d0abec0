"""Codebook quality: utilization, perplexity, collisions, and semantic coherence per level."""

from __future__ import annotations

import numpy as np

from mmsid.ids import collision_rate


def utilization(codes: np.ndarray, codebook_size: int) -> list[float]:
    """Share of the K codes used at each level. codes: (N, L)."""
    return [len(np.unique(codes[:, lvl])) / codebook_size for lvl in range(codes.shape[1])]


def perplexity(codes: np.ndarray, codebook_size: int) -> list[float]:
    """exp(entropy) of each level's code distribution (K = perfectly uniform use)."""
    out = []
    for lvl in range(codes.shape[1]):
        p = np.bincount(codes[:, lvl], minlength=codebook_size) / len(codes)
        p = p[p > 0]
        out.append(float(np.exp(-(p * np.log(p)).sum())))
    return out


def prefix_groups(codes: np.ndarray, depth: int) -> np.ndarray:
    """Group id of each item's first ``depth`` codes. (N,) int64."""
    _, inv = np.unique(codes[:, :depth], axis=0, return_inverse=True)
    return inv.reshape(-1)


def coherence(
    x: np.ndarray,
    codes: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    n_random: int = 20000,
    seed: int = 0,
) -> dict:
    """Semantic coherence per level: for every item in a group of >= 2 items sharing a code
    prefix of depth l, its mean cosine similarity to its group-mates, averaged over items (so a
    single huge group does not dominate, as it would in a pair-weighted mean); against the mean
    cosine of random item pairs.

    Args:
        x: (N, d) content features (any modality or the tokenizer input); rows are normalised.
        codes: (N, L).
        mask: (N,) items to include (e.g. the ones that have the modality).
    Returns:
        {"prefix": [per level 1..L], "code": [items sharing the code at level l alone],
         "random": mean cosine of random pairs}; a level where no two items share a group is
        None.
    """
    keep = np.ones(len(x), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    xn = x[keep] / np.maximum(np.linalg.norm(x[keep], axis=1, keepdims=True), 1e-12)
    c = codes[keep]
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, len(xn), n_random), rng.integers(0, len(xn), n_random)
    ok = i != j
    rand = float((xn[i[ok]] * xn[j[ok]]).sum(1).mean())

    def within(groups: np.ndarray) -> float | None:
        # sum over pairs in a group of x_a.x_b = (||sum x||^2 - sum ||x||^2) / 2
        n_g = groups.max() + 1
        sums = np.zeros((n_g, xn.shape[1]))
        np.add.at(sums, groups, xn)
        cnt = np.bincount(groups, minlength=n_g).astype(float)
        multi = cnt >= 2
        if not multi.any():
            return None  # every item alone in its group: undefined (JSON null, not NaN)
        # mean over ordered pairs of group g: (||sum x||^2 - n) / (n (n - 1)); weight by n
        group_mean = ((sums[multi] ** 2).sum(1) - cnt[multi]) / (cnt[multi] * (cnt[multi] - 1))
        return float((group_mean * cnt[multi]).sum() / cnt[multi].sum())

    L = codes.shape[1]
    return {
        "prefix": [within(prefix_groups(c, lvl + 1)) for lvl in range(L)],
        "code": [
            within(np.unique(c[:, lvl], return_inverse=True)[1].reshape(-1)) for lvl in range(L)
        ],
        "random": rand,
    }


def codebook_report(
    codes: np.ndarray,
    codebook_size: int,
    x: np.ndarray | None = None,
    mask: np.ndarray | None = None,
) -> dict:
    """Every codebook metric in one JSON-able dict. codes: (N, L) before the collision level."""
    _, counts = np.unique(codes, axis=0, return_counts=True)
    out = {
        "items": int(len(codes)),
        "levels": int(codes.shape[1]),
        "codebook_size": codebook_size,
        "utilization": utilization(codes, codebook_size),
        "perplexity": perplexity(codes, codebook_size),
        "collision_rate": collision_rate(codes),
        "unique_sids": int(len(counts)),
        "max_items_per_sid": int(counts.max()),
    }
    if x is not None:
        out["coherence"] = coherence(x, codes, mask=mask)
    return out
