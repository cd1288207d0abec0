"""Intervals and paired comparisons against hand-computed values and slow references."""

from __future__ import annotations

import numpy as np
import pytest

from mmsid.eval.ranking import auc
from mmsid.eval.stats import (
    mean_ci,
    paired_auc,
    paired_text,
    paired_users,
    per_user,
    weighted_auc,
)


def test_mean_ci_by_hand():
    c = mean_ci([1.0, 2.0, 3.0])
    # t(0.975, df=2) = 4.3027; sd = 1; half-width = 4.3027 / sqrt(3)
    assert c["mean"] == 2.0 and c["ci"] == pytest.approx(4.302653 / 3**0.5, rel=1e-5)
    assert mean_ci([0.5])["ci"] is None and mean_ci([])["mean"] is None
    assert mean_ci([0.1, float("nan"), 0.3])["n"] == 2
    # every seed's own figure is kept, in order, a dropped one as None
    assert c["values"] == [1.0, 2.0, 3.0]
    assert mean_ci([0.1, float("nan"), None, 0.3])["values"] == [0.1, None, None, 0.3]
    assert mean_ci(np.array([0.5]))["values"] == [0.5] and mean_ci([])["values"] == []


@pytest.mark.parametrize("seed", range(4))
def test_weighted_auc_equals_auc_on_repeated_samples(seed):
    """Integer weights = the samples repeated; ties (few distinct scores) counted as half."""
    rng = np.random.default_rng(seed)
    n = 60
    y = rng.integers(0, 2, n)
    s = rng.integers(0, 7, n).astype(float)  # many ties
    w = rng.integers(0, 4, (3, n)).astype(float)
    got = weighted_auc(y, s, w)
    for b in range(3):
        rep = np.repeat(np.arange(n), w[b].astype(int))
        assert got[b] == pytest.approx(auc(y[rep], s[rep]))
    assert weighted_auc(y, s, np.ones((1, n)))[0] == pytest.approx(auc(y, s))


def test_per_user_metrics():
    rank = np.array([0, 3, 9, 10, -1])
    assert per_user(rank, "recall@10").tolist() == [1, 1, 1, 0, 0]
    assert per_user(rank, "ndcg@10")[1] == pytest.approx(1 / np.log2(5))


def test_paired_users_detects_a_real_gap_and_not_a_null_one():
    rng = np.random.default_rng(0)
    U = 3000
    base = (rng.random((3, U)) < 0.10).astype(float)
    better = np.maximum(base, (rng.random((3, U)) < 0.05))  # strictly more hits
    d = paired_users(better, base, names=("new", "old"))
    assert d["win"] == "new" and d["lo"] > 0 and d["lo"] <= d["diff"] <= d["hi"]
    same = paired_users(base, base[::-1], names=("a", "b"))  # seeds permuted: no difference
    assert same["win"] is None and same["diff"] == pytest.approx(0.0)
    noise = paired_users(base, (rng.random((3, U)) < 0.10).astype(float), names=("a", "b"))
    assert noise["lo"] < noise["diff"] < noise["hi"]
    with pytest.raises(ValueError, match="same users"):
        paired_users(base, base[:, :10])
    text = paired_text(d, U)
    assert text.startswith("new - old = +0.") and text.endswith(f"over {U} users: new wins")
    assert paired_text(same, U, "test users").endswith(f"over {U} test users: within noise")


def test_paired_auc_resamples_users_and_finds_the_better_scorer():
    rng = np.random.default_rng(1)
    U = 800
    users = np.repeat(np.arange(U), 2)
    labels = np.tile([1, 0], U)
    signal = labels + rng.normal(0, 1.0, 2 * U)
    good = np.stack([signal + rng.normal(0, 0.3, 2 * U) for _ in range(3)])
    bad = rng.normal(0, 1, (3, 2 * U))
    d = paired_auc(users, labels, good, bad, names=("good", "bad"), n_boot=300)
    assert d["win"] == "good" and d["lo"] > 0.1
    point = np.mean([auc(labels, g) for g in good]) - np.mean([auc(labels, b) for b in bad])
    assert d["diff"] == pytest.approx(point)
    tie = paired_auc(users, labels, good, good, names=("a", "b"), n_boot=100)
    assert tie["win"] is None and tie["diff"] == 0.0


def test_speed_ratio_is_the_geometric_mean_of_paired_ratios():
    from mmsid.eval.stats import speed_ratio

    a = np.array([1.0, 2.0, 4.0])  # A's seconds per round
    ratio, lo, hi = speed_ratio(a, a * np.array([2.0, 2.0, 2.0]))
    assert np.isclose(ratio, 2.0) and np.isclose(lo, 2.0) and np.isclose(hi, 2.0)
    ratio, lo, hi = speed_ratio(a, a * np.array([1.0, 4.0, 2.0]))
    assert np.isclose(ratio, 2.0) and lo < 2.0 < hi  # exp(mean log) of 1, 4, 2
