"""The evaluation protocol and its guard, on the real data sets: no training input of any stage
(tokenizer fit, MMQ fine-tuning pairs, retrieval, ranking, baselines) holds an interaction that
any task evaluates on, and no cold item enters any training input."""

from __future__ import annotations

import numpy as np
import pytest

from mmsid.protocol import (
    HELD_OUT,
    TEST,
    TRAIN,
    VALID,
    LeakError,
    ProtocolConfig,
    build_protocol,
)
from mmsid.ranking.samples import CTRConfig, build_ctr, training_record
from mmsid.retrieval.data import build_retrieval

DATASETS = ["ml100k", "lfm2k", "beauty"]


def _pairs(users, items) -> set[tuple[int, int]]:
    return set(zip(np.asarray(users).tolist(), np.asarray(items).tolist()))


@pytest.fixture(scope="module", params=DATASETS)
def setup(request):
    ds = request.getfixturevalue(request.param)
    p = build_protocol(ds, ProtocolConfig())
    tr = p.train
    train_pairs = _pairs(tr["user"], tr["item"])
    ev = p.inter[np.isin(p.role, (VALID, TEST))]
    # evaluated (user, item) pairs that are not also a training interaction (a re-consumed
    # item may legitimately be both)
    eval_only = _pairs(ev["user"], ev["item"]) - train_pairs
    return ds, p, train_pairs, eval_only


def test_roles_follow_leave_one_out_and_hold_out_cold_items(setup):
    ds, p, _, _ = setup
    role, inter = p.role, p.inter
    assert np.isin(role, (TRAIN, VALID, TEST, HELD_OUT)).all()
    # per eligible user: exactly one validation then one test interaction, at the very end
    last = inter.groupby("user").tail(2)
    long_users = inter.groupby("user").size()
    long_users = set(long_users[long_users >= 3].index)
    tail_roles = last[last["user"].isin(long_users)].groupby("user")["role"].apply(list)
    assert all(r == [VALID, TEST] for r in tail_roles)
    # no cold item trains; every cold item's pre-validation interaction is held out
    items = inter["item"].to_numpy()
    assert not p.is_cold[items[role == TRAIN]].any()
    assert p.is_cold[items[role == HELD_OUT]].all()
    assert len(p.cold_items) == round(0.05 * ds.n_items)
    # histories read no cold item and nothing at or after the target (a slow reference on
    # the first 200 users of each split)
    users = inter["user"].to_numpy()
    for split in (p.valid, p.test):
        for h, r in zip(split.history[:200], split.row[:200]):
            mine = items[:r][users[:r] == users[r]]
            assert np.array_equal(h, mine[~p.is_cold[mine]][-p.cfg.max_history :])


def test_protocol_is_seeded_and_the_cold_share_a_setting(ml100k):
    a = build_protocol(ml100k, ProtocolConfig(seed=3, cold_fraction=0.1))
    b = build_protocol(ml100k, ProtocolConfig(seed=3, cold_fraction=0.1))
    c = build_protocol(ml100k, ProtocolConfig(seed=4, cold_fraction=0.1))
    assert np.array_equal(a.cold_items, b.cold_items) and len(a.cold_items) == 168
    assert not np.array_equal(a.cold_items, c.cold_items)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert len(build_protocol(ml100k, ProtocolConfig(cold_fraction=0.0)).cold_items) == 0


def test_ties_in_time_break_by_item_id_not_file_order(ml100k):
    """ml100k-mm: 44% of users' last two ratings share a timestamp; the rule must not depend
    on the file's row order."""
    p = build_protocol(ml100k)
    shuffled = ml100k.interactions.sample(frac=1.0, random_state=0)
    ds2 = type(ml100k)(**{**ml100k.__dict__, "interactions": shuffled})
    p2 = build_protocol(ds2)
    assert np.array_equal(p.test.target, p2.test.target)
    assert np.array_equal(p.valid.target, p2.valid.target)
    t = p.inter
    same = t[(t["timestamp"].shift() == t["timestamp"]) & (t["user"].shift() == t["user"])]
    assert len(same) > 0
    prev_item = t["item"].shift().loc[same.index]
    assert (same["item"] > prev_item).all()


def test_retrieval_training_inputs_are_training_interactions(setup):
    _, p, train_pairs, eval_only = setup
    data = build_retrieval(p)
    p.check_training(rows=data.train_rows, items=data.train.history)
    tr = data.train
    seen = _pairs(tr.user, tr.target)
    for j in range(tr.history.shape[1]):
        m = tr.history[:, j] >= 0
        seen |= _pairs(tr.user[m], tr.history[m, j])
    assert seen <= train_pairs
    assert not (seen & eval_only)
    assert not p.is_cold[tr.target].any()


def test_ranking_training_inputs_are_training_interactions(setup):
    _, p, train_pairs, eval_only = setup
    data = build_ctr(p)
    rows, items = training_record(data)
    p.check_training(rows=rows, items=items)
    tr = data.train
    pos = _pairs(tr.user[tr.label > 0], tr.item[tr.label > 0])
    assert pos <= train_pairs and not (pos & eval_only)
    hist = set()
    for j in range(tr.history.shape[1]):
        m = tr.history[:, j] >= 0
        hist |= _pairs(tr.user[m], tr.history[m, j])
    assert hist <= train_pairs
    # the ranking test positives are exactly the retrieval test targets (one boundary)
    te = data.test
    assert _pairs(te.user[te.label > 0], te.item[te.label > 0]) == _pairs(
        p.test.user, p.test.target
    )


def test_mmq_finetuning_pairs_and_tokenizer_fit_read_training_only(setup):
    """The leak of the first pipeline: MMQ fine-tuning read transitions that ranking then
    evaluated on. Pairs now come from the protocol's training interactions only."""
    _, p, train_pairs, eval_only = setup
    pairs, rows = p.transitions()
    p.check_training(rows=rows, items=pairs)
    users = p.inter["user"].to_numpy()[rows[:, 0]]
    assert (users == p.inter["user"].to_numpy()[rows[:, 1]]).all()
    got = _pairs(users, pairs[:, 0]) | _pairs(users, pairs[:, 1])
    assert got <= train_pairs and not (got & eval_only)
    p.check_training(items=p.warm_items)  # the tokenizers' content fit


def test_the_guard_catches_leaks(ml100k):
    """The guard is not a promise: transitions over every interaction (as the first pipeline's
    fine-tuning did relative to ranking's evaluation), a cold item's content, or a cold item
    drawn as a negative each raise LeakError."""
    p = build_protocol(ml100k)
    all_rows = np.arange(len(p.inter))
    same_user = p.inter["user"].to_numpy()[1:] == p.inter["user"].to_numpy()[:-1]
    leaky_rows = np.stack([all_rows[:-1], all_rows[1:]], 1)[same_user]
    with pytest.raises(LeakError, match="not training interactions.*'test'"):
        p.check_training(rows=leaky_rows, what="fine-tuning pairs")
    with pytest.raises(LeakError, match="cold items"):
        p.check_training(items=np.arange(p.n_items), what="tokenizer fit")
    with pytest.raises(LeakError, match="cold"):
        p.check_training(items=np.array([-1, p.cold_items[0]]), what="negatives")


def test_ranking_negatives_follow_popularity_and_are_shared_by_every_model(ml100k):
    p = build_protocol(ml100k)
    a, b = build_ctr(p), build_ctr(p)
    assert np.array_equal(a.train.item, b.train.item) and np.array_equal(a.test.item, b.test.item)
    tr = a.train
    neg = tr.item[tr.label == 0]
    assert not p.is_cold[neg].any()
    # popularity-proportional: a negative's expected popularity is far above a uniform draw's
    assert p.popularity[neg].mean() > 2 * p.popularity[~p.is_cold].mean()
    uni = build_ctr(p, CTRConfig(negatives="uniform")).train
    assert p.popularity[uni.item[uni.label == 0]].mean() < 1.3 * p.popularity[~p.is_cold].mean()
    # training negatives: never one of the user's training items; evaluation negatives: never
    # any item the user touched
    assert not (_pairs(tr.user[tr.label == 0], neg) & _pairs(p.train["user"], p.train["item"]))
    every = _pairs(p.inter["user"], p.inter["item"])
    te = a.test
    assert not (_pairs(te.user[te.label == 0], te.item[te.label == 0]) & every)
    # a cold positive is paired with a cold negative (its AUC ranks new items among new items)
    cold_pos = (te.label > 0) & p.is_cold[te.item]
    n_pos = int((te.label > 0).sum())
    assert cold_pos.any()
    assert p.is_cold[te.item[n_pos:][cold_pos[:n_pos]]].all()
    s = a.slices(te.item)
    assert (s["cold"] & (te.label == 0)).sum() == cold_pos.sum()
