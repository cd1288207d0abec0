"""Seeds, intervals and paired comparisons.

* A table cell is the mean over model seeds ± the half-width of a 95% Student-t interval over
  those seeds (:func:`mean_ci`); with one seed there is no interval (``ci`` None).
* "A beats B" is a **paired bootstrap over test users** (:func:`paired_users`,
  :func:`paired_auc`): both models are scored on the same users (one protocol); each bootstrap
  replicate resamples users with replacement and recomputes the seed-averaged metric of A and
  of B on that one resample; the 2.5/97.5 percentiles of A - B give the interval. A win is
  printed only where the interval excludes 0; otherwise the difference is "within noise".
  The seed spread is inside each replicate's seed average; the user resampling carries the
  test-set noise, which dominates with one held-out item per user.
"""

from __future__ import annotations

import math

import numpy as np

LEVEL = 0.95


def mean_ci(values: list[float] | np.ndarray, level: float = LEVEL) -> dict:
    """Mean and half-width of the t interval over seeds; NaN values are dropped from both.

    ``values`` keeps every seed's own figure in the order given (None where it was NaN or
    missing), so a results file shows the spread behind each cell and a later comparison can
    be recomputed from it without the runs."""
    from scipy.stats import t

    seeds = [None if x is None or x != x else float(x) for x in np.asarray(values).tolist()]
    v = np.asarray([x for x in seeds if x is not None], dtype=np.float64)
    if not len(v):
        return {"mean": None, "ci": None, "n": 0, "values": seeds}
    if len(v) == 1:
        return {"mean": float(v[0]), "ci": None, "n": 1, "values": seeds}
    half = float(t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return {"mean": float(v.mean()), "ci": half, "n": int(len(v)), "values": seeds}


def speed_ratio(seconds_a, seconds_b, level: float = LEVEL) -> tuple[float, float, float]:
    """How many times faster A ran than B over paired timings (round i of A beside round i of
    B): the geometric mean of ``seconds_b / seconds_a`` and its t interval, taken on the log
    ratios. Returns (ratio, low, high)."""
    ci = mean_ci(np.log(np.asarray(seconds_b, np.float64) / np.asarray(seconds_a, np.float64)))
    return tuple(float(np.exp(ci["mean"] + h)) for h in (0.0, -ci["ci"], ci["ci"]))


def per_user(rank: np.ndarray, metric: str) -> np.ndarray:
    """Per-user value of ``recall@K`` (hit) or ``ndcg@K`` from 0-based target ranks (-1 =
    absent), as mmsid.eval.retrieval computes them."""
    name, k = metric.split("@")
    hit = (rank >= 0) & (rank < int(k))
    if name == "recall":
        return hit.astype(np.float64)
    return np.where(hit, 1.0 / np.log2(np.maximum(rank, 0) + 2.0), 0.0)


def _replicates(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) counts: how often each of n users is drawn in each replicate."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def _verdict(diff: float, lo: float, hi: float, a: str, b: str) -> dict:
    win = a if lo > 0 else b if hi < 0 else None
    return {"diff": diff, "lo": lo, "hi": hi, "win": win, "a": a, "b": b}


def paired_users(
    a: np.ndarray,
    b: np.ndarray,
    *,
    names: tuple[str, str] = ("A", "B"),
    n_boot: int = 2000,
    seed: int = 0,
) -> dict:
    """Paired bootstrap of mean(A) - mean(B) over users.

    Args:
        a, b: (S_a, U) and (S_b, U) per-user metric values of each seed, the same U users in
            the same order (a deterministic baseline has S = 1).
    Returns:
        {"diff", "lo", "hi", "win" (name or None), "a", "b"}.
    """
    a, b = np.atleast_2d(a).mean(0), np.atleast_2d(b).mean(0)  # (U,)
    if a.shape != b.shape:
        raise ValueError(f"paired comparison needs the same users: {a.shape} vs {b.shape}")
    d = a - b
    w = _replicates(len(d), n_boot, seed)
    boot = w @ d / len(d)
    lo, hi = np.percentile(boot, [50 * (1 - LEVEL), 50 * (1 + LEVEL)])
    return _verdict(float(d.mean()), float(lo), float(hi), *names)


def paired_text(d: dict, n: int, unit: str = "users") -> str:
    """One line for a :func:`paired_users` result: 'A - B = +x [+lo, +hi] over n users: A
    wins' (or 'within noise' where the interval holds 0)."""
    verdict = f"{d['win']} wins" if d["win"] else "within noise"
    return (
        f"{d['a']} - {d['b']} = {d['diff']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}] over {n} "
        f"{unit}: {verdict}"
    )


def weighted_auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC under sample weights, ties counted as half, for many weight vectors at once.

    Args:
        labels: (N,) 0/1; scores: (N,); weights: (B, N).
    Returns:
        (B,) AUC of each weighting (NaN where a class has no weight).
    """
    order = np.argsort(scores, kind="mergesort")
    s, y, w = scores[order], labels[order] > 0, weights[:, order]
    starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]  # tie groups in sorted order
    neg = np.add.reduceat(np.where(y, 0.0, w), starts, axis=1)  # (B, G)
    pos = np.add.reduceat(np.where(y, w, 0.0), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # negative weight strictly below each group
    num = (pos * (below + 0.5 * neg)).sum(1)
    den = pos.sum(1) * neg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def paired_auc(
    users: np.ndarray,
    labels: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    *,
    names: tuple[str, str] = ("A", "B"),
    n_boot: int = 1000,
    seed: int = 0,
    chunk: int = 100,
) -> dict:
    """Paired bootstrap over users of AUC(A) - AUC(B), each the mean over its seeds.

    Args:
        users, labels: (N,) the samples (the same for both models).
        a, b: (S_a, N) and (S_b, N) scores per seed.
    """
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    uniq, inv = np.unique(users, return_inverse=True)
    rep = _replicates(len(uniq), n_boot, seed)  # (n_boot, U)
    ones = np.ones((1, len(labels)))

    def auc_of(scores: np.ndarray, w: np.ndarray) -> np.ndarray:
        return np.mean([weighted_auc(labels, s, w) for s in scores], axis=0)

    point = float(auc_of(a, ones)[0] - auc_of(b, ones)[0])
    boot = np.concatenate(
        [
            auc_of(a, rep[i : i + chunk][:, inv]) - auc_of(b, rep[i : i + chunk][:, inv])
            for i in range(0, n_boot, chunk)
        ]
    )
    boot = boot[np.isfinite(boot)]
    if not len(boot):
        return _verdict(point, float("nan"), float("nan"), *names) | {"win": None}
    lo, hi = np.percentile(boot, [50 * (1 - LEVEL), 50 * (1 + LEVEL)])
    return _verdict(point, float(lo), float(hi), *names)
