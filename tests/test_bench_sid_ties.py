"""benchmarks/bench_sid_ties.py: the tie diagnostics of parallel-SID's top ten equal a slow
per-user reference on a model whose catalogue has planted shared SIDs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from mmsid.retrieval.data import NextItemSplit  # noqa: E402
from mmsid.retrieval.parallel import ParallelSID, ParallelSIDConfig  # noqa: E402


def reference(scores: np.ndarray, target: int, group: np.ndarray, pop: np.ndarray, k: int):
    """One user, item by item: (tie-fair hit, popularity tie-break hit, SID hit)."""
    st = scores[target]
    above = sum(scores[i] > st for i in range(len(scores)))
    tied = [i for i in range(len(scores)) if scores[i] == st]
    fair = min(1.0, max(0.0, (k - above) / len(tied)))
    before = [i for i in tied if (pop[i], -i) > (pop[target], -target)]
    by_pop = float(above + len(before) < k)
    best = {}
    for i in range(len(scores)):
        best[group[i]] = scores[i]  # every member of a group has the same score
    sid = float(sum(v > st for v in best.values()) < k)
    return fair, by_pop, sid


@pytest.mark.parametrize("seed", range(3))
def test_tie_facts_equal_the_slow_reference(seed):
    from bench_sid_ties import K, tie_facts

    rng = np.random.default_rng(seed)
    n, m, codebook = 60, 2, 4  # 16 possible SIDs for 60 items: most items share theirs
    codes = rng.integers(codebook, size=(n, m))
    torch.manual_seed(seed)
    cfg = ParallelSIDConfig(d_model=16, n_heads=2, n_layers=1, d_ff=32, dropout=0.0)
    model = ParallelSID(codes, codebook, cfg).eval()
    with torch.no_grad():
        model.w1.normal_(0, 0.3)
    _, group = np.unique(codes, axis=0, return_inverse=True)
    group = group.reshape(-1)
    pop = rng.integers(5, size=n)  # many equal counts: the item id decides among them
    users = 40
    lengths = rng.integers(1, 6, size=users)
    history = np.full((users, 6), -1)
    for u, h in enumerate(lengths):
        history[u, :h] = rng.integers(n, size=h)
    target = rng.integers(n, size=users)
    split = NextItemSplit(np.arange(users), history, target)
    f = tie_facts(model, group, pop, split, batch=7)
    with torch.no_grad():
        scores = model.score(torch.from_numpy(history)).numpy()
    assert (np.bincount(group) > 1).any() and 0 < f["sid"].mean() < 1
    for u in range(users):
        fair, by_pop, sid = reference(scores[u], target[u], group, pop, K)
        assert f["fair"][u] == pytest.approx(fair)
        assert (f["pop"][u], f["sid"][u]) == (by_pop, sid)
        # scores tie only within a SID, so the top ten's SIDs are those scoring >= the 10th
        kth = np.sort(scores[u])[::-1][K - 1]
        assert f["distinct"][u] == len(set(group[scores[u] >= kth]))
        # the evaluated hit is one of the tie orders': certain where no tie straddles the cut
        assert f["hit"][u] in (0.0, 1.0)
        assert (fair == 0) <= (f["hit"][u] == 0) and (fair == 1) <= (f["hit"][u] == 1)
        assert f["sid"][u] >= f["pop"][u] and f["sid"][u] >= (fair > 0)
