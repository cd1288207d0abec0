"""Ranking: metrics against hand-computed values, MCCA masking, no split leakage, learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmsid.eval.ranking import auc, gauc, logloss
from mmsid.protocol import build_protocol
from mmsid.ranking.din import DIN
from mmsid.ranking.layers import SIDEmbedding
from mmsid.ranking.mcca import MCCA
from mmsid.ranking.samples import build_ctr


def test_auc_hand_computed_with_ties():
    # pairs (pos, neg): (0.9 > 0.1) (0.9 > 0.5) (0.5 = 0.5 -> 1/2) (0.5 > 0.1) -> 3.5 / 4
    assert auc(np.array([1, 0, 1, 0]), np.array([0.9, 0.1, 0.5, 0.5])) == pytest.approx(0.875)
    assert np.isnan(auc(np.array([1, 1]), np.array([0.2, 0.3])))


def test_gauc_hand_computed():
    users = np.array([1, 1, 1, 2, 2, 3, 3])
    labels = np.array([1, 0, 0, 1, 0, 1, 1])  # user 3 has one class: excluded
    scores = np.array([0.8, 0.9, 0.1, 0.2, 0.7, 0.5, 0.6])
    # user 1: pos 0.8 beats 0.1, loses to 0.9 -> 0.5 (3 impressions); user 2: 0.0 (2)
    assert gauc(users, labels, scores) == pytest.approx((0.5 * 3 + 0.0 * 2) / 5)


def test_logloss_hand_computed():
    assert logloss(np.array([1, 0]), np.array([0.8, 0.4])) == pytest.approx(
        -(np.log(0.8) + np.log(0.6)) / 2
    )


def _batch(B=4, H=5, n_items=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    hist = torch.randint(0, n_items, (B, H), generator=g)
    hist[0, :3] = -1  # padded positions (left padding)
    hist[1, :] = -1  # a user with no history
    return {
        "user": torch.arange(B),
        "item": torch.randint(0, n_items, (B,), generator=g),
        "label": torch.ones(B),
        "history": hist,
    }


def _codes(n=30, L=3, K=8, seed=0):
    return np.random.default_rng(seed).integers(0, K, size=(n, L))


def test_mcca_shape_and_padding_gets_zero_attention():
    torch.manual_seed(0)
    m = MCCA(
        30,
        {"joint": _codes(seed=0), "text": _codes(seed=1), "audio": _codes(seed=2)},
        joint="joint",
        codebook_size=8,
    )
    b = _batch()
    logit, w = m(b, return_weights=True)
    assert logit.shape == (4,)
    for name in ("joint", "text", "audio", "id"):
        assert w[name].shape == (4, 5)
        assert (w[name][0, :3] == 0).all() and (w[name][1] == 0).all()
        assert (w[name][0, 3:] != 0).all()
    # what sits in a padded slot does not matter
    b2 = {**b, "history": b["history"].clone()}
    b2["history"][0, :3] = -7
    torch.testing.assert_close(m(b2), logit)
    loss = m.loss(b)
    loss.backward()
    assert all(p.grad is not None for n, p in m.named_parameters() if "sid" in n and "tables" in n)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 40),
    L=st.integers(1, 6),
    shape=st.sampled_from([(7,), (5, 9), (2, 3, 4)]),
    seed=st.integers(0, 2**16),
)
def test_sid_embedding_equals_the_per_position_reference(n, L, shape, seed):
    """The distinct-items path gives the per-position sum's values exactly (padding row
    included) and its gradients up to float summation order, also after the catalogue
    grows."""
    g = np.random.default_rng(seed)
    torch.manual_seed(seed)
    m = SIDEmbedding(g.integers(0, 8, (n, L)), 8, 5)
    for grown in (False, True):
        if grown:
            n = n + 3
            m.set_codes(g.integers(0, 8, (n, L)))
        items = torch.from_numpy(g.integers(0, n + 1, shape))  # n = padding
        fast, ref = m(items), m.forward_reference(items)
        assert fast.shape == (*shape, 5)
        assert torch.equal(fast, ref)
        assert torch.equal(fast[items == n], torch.zeros_like(fast[items == n]))
        w = torch.randn(*shape, 5)
        g_fast = torch.autograd.grad((fast * w).sum(), list(m.parameters()))
        g_ref = torch.autograd.grad((ref * w).sum(), list(m.parameters()))
        for a, b in zip(g_fast, g_ref):
            torch.testing.assert_close(a, b)


def test_din_with_and_without_sids():
    b = _batch()
    assert DIN(30)(b).shape == (4,)
    d = DIN(30, sids={"joint": _codes()}, codebook_size=8)
    assert d.predict(b).min() > 0 and d.predict(b).max() < 1


def test_din_learns_on_real_data(lfm2k):
    from mmsid.ranking.train import TrainConfig, fit, metrics, predict

    """With popularity-proportional negatives AUC is no popularity test: the popularity
    scorer sits near 0.5 and DIN, trained one epoch, well above it."""
    p = build_protocol(lfm2k)
    data = build_ctr(p)
    torch.manual_seed(0)
    model = DIN(lfm2k.n_items)
    fit(model, data, TrainConfig(epochs=1, batch_size=512), progress=False)
    m = metrics(data.test, predict(model, data.test, device="cpu"), data)
    pop = metrics(data.test, p.popularity[data.test.item].astype(float), data, probabilistic=False)
    assert 0.4 < pop["all"]["auc"] < 0.6, pop["all"]
    assert m["all"]["auc"] > pop["all"]["auc"] + 0.1, m["all"]
    assert m["cold"]["users"] > 0 and m["cold"]["n"] == 2 * m["cold"]["users"]


def test_ranking_resumes_only_its_own_checkpoint(lfm2k, tmp_path, monkeypatch):
    import dataclasses

    import mmsid.ranking.train as tr
    import mmsid.training as loop
    from mmsid.ranking.samples import CTRSplit

    full_data = build_ctr(build_protocol(lfm2k))
    keep = np.random.default_rng(0).permutation(len(full_data.train.item))[:20_000]
    small = CTRSplit(
        *(getattr(full_data.train, f)[keep] for f in ("user", "item", "label", "history", "row"))
    )
    data = dataclasses.replace(full_data, train=small)
    cfg = tr.TrainConfig(epochs=2, batch_size=2048)

    def run(key, ck):
        torch.manual_seed(0)
        m = DIN(lfm2k.n_items)
        return m, tr.fit(m, data, cfg, checkpoint=ck, run_key=key, progress=False)

    full_model, full = run("a", tmp_path / "full.pt")

    class Killed(Exception):
        pass

    real = loop.save_torch

    def die_after_first(path, obj):
        real(path, obj)
        raise Killed

    monkeypatch.setattr(loop, "save_torch", die_after_first)
    with pytest.raises(Killed):
        run("a", tmp_path / "ck.pt")
    monkeypatch.setattr(loop, "save_torch", real)
    resumed_model, resumed = run("a", tmp_path / "ck.pt")
    assert [h["epoch"] for h in resumed] == [1, 2]
    assert resumed[1]["valid_auc"] == pytest.approx(full[1]["valid_auc"], abs=1e-6)
    # another run's checkpoint (different key) is ignored: training starts from epoch 1
    _, other = run("b", tmp_path / "ck.pt")
    assert len(other) == 2 and other[0]["train_loss"] == pytest.approx(full[0]["train_loss"])
