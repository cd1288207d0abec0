from __future__ import annotations

import numpy as np
import pytest

from mmsid.errors import DataError
from mmsid.eval.codebook import codebook_report, coherence, perplexity, utilization
from mmsid.ids import SIDTable, collision_index, collision_rate


def test_collision_index_numbers_items_in_order():
    codes = np.array([[1, 2], [3, 4], [1, 2], [1, 2], [3, 4], [0, 0]])
    assert collision_index(codes).tolist() == [0, 0, 1, 2, 1, 0]
    assert collision_rate(codes) == pytest.approx(5 / 6)
    with pytest.raises(DataError, match=r"3 items share the SID prefix \[1, 2\].*cap 2"):
        collision_index(codes, cap=2)


def test_sid_table_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 4, size=(50, 3))
    t = SIDTable.from_codes(codes, np.arange(100, 150), config_hash="abc", codebook_size=4)
    assert len(np.unique(t.sids, axis=0)) == 50
    t.save(tmp_path / "sids.parquet")
    back = SIDTable.load(tmp_path / "sids.parquet")
    np.testing.assert_array_equal(back.sids, t.sids)
    np.testing.assert_array_equal(back.item_ids, t.item_ids)
    assert back.config_hash == "abc" and back.codebook_size == 4
    df = t.to_frame()
    assert list(df.columns) == ["item_id", "sid", "c0", "c1", "c2", "collision", "config_hash"]
    assert not list(tmp_path.glob("*.tmp"))


def test_codebook_metrics_hand_computed():
    codes = np.array([[0, 1], [0, 1], [1, 0], [2, 0]])
    assert utilization(codes, 4) == [0.75, 0.5]
    assert perplexity(codes, 4)[1] == pytest.approx(2.0)
    x = np.array([[1.0, 0], [1.0, 0], [0, 1.0], [0, -1.0]])
    coh = coherence(x, codes, n_random=1000)
    assert coh["prefix"][0] == pytest.approx(1.0)  # only group of 2 at level 1 = items 0, 1
    # level-2 code 0 groups items 2, 3 (cos -1) and code 1 groups 0, 1 (cos 1)
    assert coh["code"][1] == pytest.approx(0.0)
    r = codebook_report(codes, 4)
    assert r["max_items_per_sid"] == 2 and r["unique_sids"] == 3
