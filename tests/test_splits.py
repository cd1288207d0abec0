from __future__ import annotations

import numpy as np

from mmsid.data.splits import cold_item_split, leave_one_out


def test_beauty_leave_one_out(beauty):
    split = leave_one_out(beauty, max_history=20)
    assert len(split.test_users) == 22_363 == len(split.valid_users)
    seqs = beauty.sequences()
    train_items = beauty.sequences(split.train)
    for u, h, t in zip(split.test_users, split.test_history, split.test_target):
        s = seqs[u]
        assert t == s[-1] and len(h) <= 20 and np.array_equal(h, s[:-1][-20:])
        assert t not in set(train_items[u].tolist()), "test item leaked into own training history"
    for u, t in zip(split.valid_users, split.valid_target):
        assert t == seqs[u][-2] and t not in set(train_items[u].tolist())
    # every user loses exactly two interactions to validation + test
    assert len(split.train) == beauty.n_interactions - 2 * 22_363


def test_history_cap_is_a_setting(ml100k):
    split = leave_one_out(ml100k, max_history=5)
    assert max(len(h) for h in split.test_history) == 5


def test_cold_item_split_is_seeded_and_disjoint(ml100k):
    a = cold_item_split(ml100k, fraction=0.1, seed=3)
    b = cold_item_split(ml100k, fraction=0.1, seed=3)
    assert np.array_equal(a.cold_items, b.cold_items) and len(a.cold_items) == 168
    assert not a.warm["item"].isin(a.cold_items).any()
    assert a.cold["item"].isin(a.cold_items).all()
    assert len(a.warm) + len(a.cold) == ml100k.n_interactions
