"""Stable IDs across retrains: a tokenizer refitted on a grown catalogue keeps the code numbers
of the previous fit where the geometry allows.

Two steps, both settings of ``mmsid tokenize --align-to PREVIOUS_RUN``:

1. **Warm start** (RQ-KMeans): each level's k-means starts from the previous codebooks, so
   centroid ``j`` of the new fit grows out of centroid ``j`` of the old one.
2. **Relabelling** (any tokenizer): per level, the code numbers of the new fit are permuted to
   agree with the previous codes on the items both catalogues share: a maximum-weight
   bipartite matching (Hungarian, ``scipy.optimize.linear_sum_assignment``) on the (K, K)
   table of co-occurring (old code, new code) counts. A permutation changes what the codes
   are called, not which items share them, so no model quality depends on it; it maximises
   the number of shared items whose code at that level is unchanged. Issue 18 names matching
   of centroids; matching on the shared items instead works for every tokenizer (RQ-VAE's and
   MMQ's codebooks live in learned spaces) and optimises the quantity users see.

The relabelling is stored in the tokenizer (``Tokenizer.code_map``), so ``transform`` of new
items gives aligned codes too.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from mmsid.errors import DataError


def match_codes(old: np.ndarray, new: np.ndarray, codebook_size: int) -> np.ndarray:
    """(L, K) permutations: ``perm[l, new_code] = aligned code`` maximising, level by level,
    the number of rows with ``aligned == old``.

    Args:
        old, new: (n, L) int codes of the same n items under the previous and the new fit.
    """
    old, new = np.asarray(old), np.asarray(new)
    if old.shape != new.shape or old.ndim != 2:
        raise DataError(f"match_codes: code tables of shapes {old.shape} and {new.shape}")
    K = codebook_size
    L = old.shape[1]
    perm = np.empty((L, K), dtype=np.int64)
    for lvl in range(L):
        counts = np.zeros((K, K), dtype=np.int64)  # (new, old)
        np.add.at(counts, (new[:, lvl], old[:, lvl]), 1)
        rows, cols = linear_sum_assignment(counts, maximize=True)
        perm[lvl, rows] = cols
    return perm


def match_reference(old: np.ndarray, new: np.ndarray, codebook_size: int) -> np.ndarray:
    """The slow reference for small K: the best of every permutation, level by level."""
    from itertools import permutations

    K, L = codebook_size, old.shape[1]
    out = np.empty((L, K), dtype=np.int64)
    for lvl in range(L):
        best = max(
            permutations(range(K)),
            key=lambda p: int((np.asarray(p)[new[:, lvl]] == old[:, lvl]).sum()),
        )
        out[lvl] = best
    return out


def relabel(codes: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """(n, L) codes -> the same codes under ``perm`` (L, K)."""
    return np.take_along_axis(perm.T, codes, axis=0)


def changed(old: np.ndarray, new: np.ndarray) -> dict:
    """Share of items whose code changed at each level, and whose whole code tuple did."""
    diff = np.asarray(old) != np.asarray(new)
    return {
        "by_level": diff.mean(0).round(6).tolist(),
        "any_level": float(diff.any(1).mean()),
        "items": int(len(diff)),
    }
