"""Tokenizer contract: fit / transform / save / load, error paths, real-data SIDs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmsid.errors import DataError, VersionError
from mmsid.quantizers import RQKMeansTokenizer, RQVAETokenizer, Tokenizer
from mmsid.quantizers.rqkmeans import RQKMeansConfig
from mmsid.quantizers.rqvae import RQVAEConfig


def _blobs(n=600, d=16, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(12, d)) * 4
    return (centers[rng.integers(0, 12, n)] + rng.normal(size=(n, d))).astype(np.float32)


@pytest.mark.parametrize(
    "tok",
    [
        RQKMeansTokenizer(RQKMeansConfig(levels=3, codebook_size=16)),
        RQVAETokenizer(
            RQVAEConfig(
                levels=2, codebook_size=16, epochs=5, batch_size=128, hidden=(32,), latent_dim=8
            )
        ),
    ],
)
def test_save_load_round_trip(tok, tmp_path):
    x = _blobs()
    codes = tok.fit(
        x, **({"progress": False} if isinstance(tok, RQVAETokenizer) else {})
    ).transform(x)
    assert codes.shape == (600, tok.levels) and codes.max() < 16
    tok.save(tmp_path / "t.pt")
    again = Tokenizer.load(tmp_path / "t.pt")
    assert type(again) is type(tok)
    np.testing.assert_array_equal(again.transform(x), codes)


def _small_cfg(**kw):
    return RQVAEConfig(
        levels=2,
        codebook_size=16,
        epochs=6,
        batch_size=128,
        hidden=(32,),
        latent_dim=8,
        checkpoint_every=3,
        **kw,
    )


def test_rqvae_is_deterministic():
    x = _blobs()
    a = RQVAETokenizer(_small_cfg()).fit(x, progress=False)
    b = RQVAETokenizer(_small_cfg()).fit(x, progress=False)
    np.testing.assert_array_equal(a.transform(x), b.transform(x))
    assert [h["reconstruction"] for h in a.history] == [h["reconstruction"] for h in b.history]


def _small_mmq(**kw):
    from mmsid.quantizers.mmq import MMQConfig

    return MMQConfig(
        modality_dims=[10, 6],
        codebook_size=16,
        epochs=6,
        batch_size=128,
        checkpoint_every=3,
        **kw,
    )


@pytest.mark.parametrize("method", ["rq-vae", "mmq"])
def test_resume_after_interruption_equals_uninterrupted(method, tmp_path, monkeypatch):
    """Both trained tokenizers go through mmsid.quantizers.loop: kill after the epoch-3
    checkpoint, re-run, and the codes equal an uninterrupted fit."""
    import mmsid.quantizers.loop as mod
    from mmsid.quantizers.mmq_tokenizer import MMQTokenizer

    make = (
        (lambda **kw: RQVAETokenizer(_small_cfg(**kw)))
        if method == "rq-vae"
        else (lambda **kw: MMQTokenizer(_small_mmq(**kw)))
    )
    x = _blobs()
    full = make().fit(x, progress=False)

    class Killed(Exception):
        pass

    real_save = mod.save_torch

    def save_then_die(path, obj):  # the process dies right after the epoch-3 checkpoint
        real_save(path, obj)
        raise Killed

    ck = tmp_path / "ck.pt"
    monkeypatch.setattr(mod, "save_torch", save_then_die)
    with pytest.raises(Killed):
        make().fit(x, checkpoint=ck, progress=False)
    monkeypatch.setattr(mod, "save_torch", real_save)
    assert torch.load(ck, weights_only=False)["epoch"] == 3
    resumed = make().fit(x, checkpoint=ck, progress=False)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_array_equal(resumed.transform(x), full.transform(x))
    # a checkpoint of another config is not resumed from
    other = make(seed=1).fit(x, checkpoint=ck, progress=False)
    assert other.history[0]["reconstruction"] != resumed.history[0]["reconstruction"]


def test_error_paths(tmp_path):
    tok = RQKMeansTokenizer(RQKMeansConfig(codebook_size=16))
    x = _blobs()
    bad = x.copy()
    bad[5, 3] = np.nan
    with pytest.raises(DataError, match=r"row 5 holds NaN or inf"):
        tok.fit(bad)
    with pytest.raises(DataError, match="zero variance"):
        tok.fit(np.ones((100, 4), dtype=np.float32))
    with pytest.raises(DataError, match=r"10 items but codebook_size=16.*--codebook-size 10"):
        tok.fit(x[:10])
    tok.fit(x)
    with pytest.raises(
        DataError, match=r"dimension 8 but the tokenizer was fitted on dimension 16"
    ):
        tok.transform(x[:, :8])
    with pytest.raises(DataError, match="2-D"):
        tok.transform(x[0])
    tok.save(tmp_path / "t.pt")
    blob = torch.load(tmp_path / "t.pt", weights_only=False)
    blob["format_version"] = 99
    torch.save(blob, tmp_path / "old.pt")
    with pytest.raises(VersionError, match="format version 99.*re-fit"):
        Tokenizer.load(tmp_path / "old.pt")


def test_real_lfm2k_sids_unique_and_coherent(lfm2k, tmp_path):
    """RQ-KMeans on the real Last.fm features: unique SIDs after the collision level, level-1
    codes group artists with similar tags far above random pairs."""
    from mmsid.eval.codebook import coherence
    from mmsid.features import build_features
    from mmsid.features.inputs import concat_features
    from mmsid.ids import SIDTable

    names = ["text_minilm", "audio_vggish", "audio_whisper"]
    f = build_features(lfm2k, modalities=names, cache=tmp_path, progress=False)
    x, _ = concat_features(f, names)
    codes = RQKMeansTokenizer(RQKMeansConfig(levels=3, codebook_size=64)).fit(x).transform(x)
    table = SIDTable.from_codes(codes, codebook_size=64, collision_cap=64)
    assert len(np.unique(table.sids, axis=0)) == 1425
    coh = coherence(f.embeddings["text_minilm"], codes)
    assert coh["prefix"][0] > coh["random"] + 0.1, coh


def test_center_removes_a_common_direction_and_keeps_absent_rows_zero():
    """Embeddings that share one large common direction (as lfm2k's audio ones do): centering
    makes them unit rows whose mean is ~0; items without the modality stay zero; off = as is."""
    from mmsid.features import ItemFeatures, l2_normalize
    from mmsid.features.inputs import concat_features

    rng = np.random.default_rng(0)
    a = l2_normalize(5.0 + rng.normal(size=(50, 8))).astype(np.float32)
    b = l2_normalize(rng.normal(size=(50, 4))).astype(np.float32)
    mask_a = np.ones(50, dtype=bool)
    mask_a[:5] = False
    a[~mask_a] = 0
    feats = ItemFeatures({"a": a, "b": b}, {"a": mask_a, "b": np.ones(50, dtype=bool)})
    plain, m = concat_features(feats, ["a", "b"])
    np.testing.assert_array_equal(plain, np.concatenate([a, b], 1))
    x, m2 = concat_features(feats, ["a", "b"], center=True)
    np.testing.assert_array_equal(m, m2)
    xa = x[:, :8]
    assert (xa[~mask_a] == 0).all()
    np.testing.assert_allclose(np.linalg.norm(xa[mask_a], axis=1), 1.0, atol=1e-5)
    # mean pairwise cosine: ~1 before (the common direction), near 0 after
    assert (a[mask_a] @ a[mask_a].T).mean() > 0.9
    assert abs((xa[mask_a] @ xa[mask_a].T).mean()) < 0.1
