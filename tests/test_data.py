"""Loaders on the real data sets, and every documented error path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mmsid.data import custom, load_dataset
from mmsid.data.download import manifest, resolve_data_dir
from mmsid.errors import DataError


@pytest.mark.parametrize(
    "fixture,users,items,rows",
    [
        ("ml100k", 943, 1682, 100_000),
        ("lfm2k", 1858, 1425, 56_345),
        ("beauty", 22_363, 12_101, 198_502),
    ],
)
def test_real_counts(request, fixture, users, items, rows):
    ds = request.getfixturevalue(fixture)
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (users, items, rows)
    inter = ds.interactions
    assert inter["user"].between(0, users - 1).all() and inter["item"].between(0, items - 1).all()
    # sorted by (user, time) so sequences are in order
    assert (inter.groupby("user")["timestamp"].diff().dropna() >= 0).all()


def test_ml100k_modalities_have_explicit_masks(ml100k):
    text, image = ml100k.modalities["text"], ml100k.modalities["image"]
    assert len(text) == len(image) == 1682
    # a handful of movies lack an overview or a poster: masked, not filled
    assert 0 < (~text.mask).sum() < 40 and 0 < (~image.mask).sum() < 40
    assert all((t is None) == (not m) for t, m in zip(text.raw, text.mask))
    assert "Toy Story" in text.raw[0] and "Animation" in text.raw[0]
    assert image.raw[0].name == "1.jpg"


def test_lfm2k_keeps_publisher_split_and_features(lfm2k):
    assert set(lfm2k.interactions["split"]) == {"train", "valid", "test"}
    assert lfm2k.modalities["audio_vggish"].raw.shape == (1425, 128)
    assert lfm2k.modalities["audio_whisper"].raw.shape == (1425, 512)
    assert lfm2k.modalities["text_minilm"].raw.shape == (1425, 384)
    assert lfm2k.modalities["text"].raw[0].startswith("Artist tags:")


def test_beauty_text_is_title_and_categories(beauty):
    t = beauty.modalities["text"].raw[0]
    assert t.startswith("Glow in the Dark Neon Nail Polish") and "Beauty > Makeup > Nails" in t
    # the same two fields as separate views (MMQ's documented second "modality" on Beauty)
    title, cats = beauty.modalities["title"].raw[0], beauty.modalities["categories"].raw[0]
    assert t == f"{title}. {cats}" and "Beauty > Makeup > Nails" in cats
    assert beauty.modalities["title"].mask.all()


def test_manifest_matches_reference_copy(real_data_dir):
    from mmsid.io import sha256_file

    for name in ("lfm2k-mm", "amazon-beauty"):
        for rel, meta in manifest()[name].items():
            assert sha256_file(real_data_dir / name / rel) == meta["sha256"], rel


# ---- error paths -------------------------------------------------------------------------


def test_unknown_dataset_suggests_closest():
    with pytest.raises(DataError, match="unknown data set 'ml100k'.*Did you mean 'ml100k-mm'"):
        load_dataset("ml100k")


def test_missing_files_name_them(tmp_path):
    (tmp_path / "lfm2k-mm").mkdir()
    with pytest.raises(DataError, match=r"missing 6 file\(s\).*lfm2k.inter.*Place them"):
        load_dataset("lfm2k-mm", tmp_path)


def test_offline_message_says_where_to_put_files(tmp_path, monkeypatch):
    monkeypatch.delenv("MMSID_DATA_DIR", raising=False)
    monkeypatch.setenv("MMSID_CACHE_DIR", str(tmp_path))
    with pytest.raises(
        DataError, match=r"missing \(sequential_data.txt\).*MMSID_DATA_DIR=/path/to/datasets"
    ):
        resolve_data_dir("amazon-beauty", ["sequential_data.txt"], download_missing=True)
    assert not any(tmp_path.rglob("*.tmp")), "nothing half-written"


def _write(tmp_path, name, df):
    p = tmp_path / name
    df.to_csv(p, index=False)
    return p


def test_custom_round_trip(tmp_path):
    inter = _write(
        tmp_path,
        "inter.csv",
        pd.DataFrame({"user": [10, 10, 11], "item": [5, 7, 5], "timestamp": [1, 2, 3]}),
    )
    items = _write(tmp_path, "items.csv", pd.DataFrame({"item": [5, 7, 9], "name": ["a", "b", ""]}))
    np.save(tmp_path / "img.npy", np.random.default_rng(0).normal(size=(3, 4)))
    ds = custom.load(inter, items, {"image": tmp_path / "img.npy"}, text_column="name")
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (2, 3, 3)
    assert ds.modalities["text"].mask.tolist() == [True, True, False]


def test_custom_wrong_column(tmp_path):
    p = _write(tmp_path, "i.csv", pd.DataFrame({"uid": [1], "item": [2]}))
    with pytest.raises(DataError, match=r"i.csv: missing column 'user'.*rename"):
        custom.load(p)


def test_custom_non_numeric_id(tmp_path):
    p = _write(tmp_path, "i.csv", pd.DataFrame({"user": [1, 2], "item": ["3", "x7"]}))
    with pytest.raises(DataError, match=r"column 'item' row 1 holds 'x7', not a number"):
        custom.load(p)


def test_custom_nan_embedding(tmp_path):
    p = _write(tmp_path, "i.csv", pd.DataFrame({"user": [1, 2], "item": [3, 4]}))
    e = np.ones((2, 3))
    e[1, 2] = np.nan
    np.save(tmp_path / "e.npy", e)
    with pytest.raises(DataError, match=r"e.npy: row 1 holds NaN or inf"):
        custom.load(p, embeddings={"audio": tmp_path / "e.npy"})


def test_custom_embedding_beyond_float32_is_refused_not_cast_to_inf(tmp_path):
    p = _write(tmp_path, "i.csv", pd.DataFrame({"user": [1, 2], "item": [3, 4]}))
    e = np.ones((2, 3))  # float64: finite here, inf once cast to float32
    e[1, 0] = -1e300
    np.save(tmp_path / "e.npy", e)
    with pytest.raises(DataError, match=r"e.npy: row 1 holds a value beyond float32's range"):
        custom.load(p, embeddings={"audio": tmp_path / "e.npy"})
    e[1, 0] = 3e38  # the largest values float32 holds still load, as float32
    np.save(tmp_path / "e.npy", e)
    ds = custom.load(p, embeddings={"audio": tmp_path / "e.npy"})
    arr = ds.modalities["audio"].raw
    assert arr.dtype == np.float32 and np.isfinite(arr).all()


def test_custom_row_count_mismatch(tmp_path):
    p = _write(tmp_path, "i.csv", pd.DataFrame({"user": [1, 2], "item": [3, 4]}))
    np.save(tmp_path / "e.npy", np.ones((3, 3)))
    with pytest.raises(DataError, match=r"e.npy: 3 rows but the item table has 2 items"):
        custom.load(p, embeddings={"audio": tmp_path / "e.npy"})


def test_custom_duplicates_reported_and_dropped(tmp_path):
    p = _write(
        tmp_path,
        "i.csv",
        pd.DataFrame({"user": [1, 1, 2], "item": [3, 3, 4], "timestamp": [5, 5, 6]}),
    )
    with pytest.warns(UserWarning, match=r"1 duplicated \(user, item, timestamp\) rows dropped"):
        ds = custom.load(p)
    assert ds.n_interactions == 2


def test_custom_unknown_item_in_interactions(tmp_path):
    p = _write(tmp_path, "i.csv", pd.DataFrame({"user": [1], "item": [99]}))
    items = _write(tmp_path, "items.csv", pd.DataFrame({"item": [1, 2]}))
    with pytest.raises(DataError, match=r"row 0 names item 99 missing from .*items.csv"):
        custom.load(p, items)
