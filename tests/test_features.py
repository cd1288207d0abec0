"""Real offline encoders on a few real items; masks; normalisation; cache."""

from __future__ import annotations

import numpy as np
import pytest

from mmsid.data.base import Modality, RecDataset
from mmsid.features import build_features


@pytest.fixture(scope="module")
def small_ml(ml100k):
    """Six real movies, one of them without a poster and one without an overview."""
    no_img = int(np.flatnonzero(~ml100k.modalities["image"].mask)[0])
    no_txt = int(np.flatnonzero(~ml100k.modalities["text"].mask)[0])
    idx = [0, 1, 2, 49, no_img, no_txt]
    mods = {
        k: Modality(k, m.kind, [m.raw[i] for i in idx], source=m.source)
        for k, m in ml100k.modalities.items()
    }
    return RecDataset(
        "ml100k-mm-small", ml100k.interactions.iloc[:0], ml100k.items.iloc[idx], ml100k.users, mods
    )


def test_real_encoders_shapes_masks_and_cache(small_ml, tmp_path):
    f = build_features(small_ml, cache=tmp_path, progress=False)
    assert f.shapes() == {"text": (6, 384), "image": (6, 1280)}
    for k in ("text", "image"):
        assert f.masks[k].tolist() == small_ml.modalities[k].mask.tolist()
        assert f.masks[k][:4].all() and not f.masks[k].all()
    for k in ("text", "image"):
        norms = np.linalg.norm(f.embeddings[k], axis=1)
        np.testing.assert_allclose(norms[f.masks[k]], 1.0, atol=1e-5)
        assert (norms[~f.masks[k]] == 0).all()
    # Toy Story (row 0) and Star Wars (row 3) texts differ; the encoder is not constant
    t = f.embeddings["text"]
    assert t[0] @ t[3] < 0.9
    again = build_features(small_ml, cache=tmp_path, progress=False)
    assert again.cached == {"text": True, "image": True}
    for k in f.embeddings:
        np.testing.assert_array_equal(again.embeddings[k], f.embeddings[k])


def test_precomputed_pass_through(lfm2k, tmp_path):
    f = build_features(lfm2k, modalities=["audio_vggish"], cache=tmp_path, progress=False)
    raw = lfm2k.modalities["audio_vggish"].raw
    np.testing.assert_allclose(
        f.embeddings["audio_vggish"], raw / np.linalg.norm(raw, axis=1, keepdims=True), rtol=1e-5
    )
    g = build_features(
        lfm2k, modalities=["audio_vggish"], normalize=False, cache=tmp_path, progress=False
    )
    np.testing.assert_allclose(g.embeddings["audio_vggish"], raw, rtol=1e-6)


def test_repeated_texts_are_encoded_once_and_equal_a_plain_encode(beauty, tmp_path):
    """Eight real Beauty category strings, several repeated: rows of equal strings are equal,
    and each row matches encoding that string on its own."""
    from mmsid.features.text import TextEncoder

    cats = beauty.modalities["categories"].raw
    idx = [0, 1, 2, 3, 4, 5, 6, 7]
    mod = Modality("categories", "text", [cats[i] for i in idx], source="beauty")
    small = RecDataset(
        "beauty-small",
        beauty.interactions.iloc[:0],
        beauty.items.iloc[idx],
        beauty.users,
        {"categories": mod},
    )
    f = build_features(small, cache=tmp_path, progress=False, normalize=False)
    e = f.embeddings["categories"]
    texts = [cats[i] for i in idx]
    assert len(set(texts)) < len(texts)  # the case under test: repeats
    plain = TextEncoder().encode(texts, progress=False)
    np.testing.assert_allclose(e, plain, atol=1e-5)
    for i in range(len(texts)):
        for j in range(len(texts)):
            if texts[i] == texts[j]:
                np.testing.assert_array_equal(e[i], e[j])
