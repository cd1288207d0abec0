"""Content fusion: the fused score equals a slow reference, its limits are the model alone
(w = 0) and content-kNN (w -> infinity), and the stage picks w on validation and reports it
beside the model alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmsid.errors import ConfigError
from mmsid.retrieval.baselines import ContentKNN
from mmsid.retrieval.fusion import ContentFusion, fusion_reference
from mmsid.retrieval.parallel import ParallelSID, ParallelSIDConfig
from mmsid.retrieval.sasrec import SASRec, SASRecConfig


def _histories(rng, n_items, B=6, H=5):
    hist = np.full((B, H), -1, np.int64)
    for b in range(B):
        n = int(rng.integers(1, H + 1))
        hist[b, :n] = rng.choice(n_items, n, replace=False)
    return hist


def _models(n, seed):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    codes = rng.integers(8, size=(n, 3))
    cfg = ParallelSIDConfig(d_model=16, n_heads=2, d_ff=32, dropout=0.0, max_history=5)
    sas = SASRec(n, SASRecConfig(d_model=16, n_heads=2, dropout=0.0, max_history=5))
    return [ParallelSID(codes, 8, cfg).eval(), sas.eval()]


@pytest.mark.parametrize("seed", range(3))
def test_fused_score_equals_reference(seed):
    rng = np.random.default_rng(seed)
    n = 40
    content = rng.normal(size=(n, 7))
    content[[2, 9]] = 0.0  # items without content: no content term
    hist = _histories(rng, n)
    for base in _models(n, seed):
        w = float(rng.uniform(0.1, 3.0))
        got = ContentFusion(base, content, w).score(torch.as_tensor(hist)).double().numpy()
        np.testing.assert_allclose(got, fusion_reference(base, content, hist, w), atol=1e-5)


def test_fusion_limits_are_the_model_and_content_knn():
    rng = np.random.default_rng(0)
    n, k = 40, 5
    content = np.abs(rng.normal(size=(n, 7)))  # every cosine > 0: the last item ranks below all
    hist = torch.as_tensor(_histories(rng, n))
    batch = {"history": hist}
    knn_items, _ = ContentKNN(content).recommend(batch, k)
    for base in _models(n, 1):
        alone, _ = base.recommend(batch, k)
        assert torch.equal(ContentFusion(base, content, 0.0).recommend(batch, k)[0], alone)
        assert torch.equal(ContentFusion(base, content, 1e6).recommend(batch, k)[0], knn_items)


def test_a_model_without_exact_scores_cannot_be_fused(real_data_dir, tmp_path):
    from mmsid.retrieval.run import RetrieveConfig, run_retrieve

    with pytest.raises(TypeError, match="no exact score"):
        ContentFusion(torch.nn.Linear(2, 2), np.ones((3, 2)), 1.0)
    cfg = RetrieveConfig(dataset="lfm2k-mm", model="tiger", sids="x.parquet", fusion_weights=(1.0,))
    with pytest.raises(ConfigError, match="no exact score to fuse"):
        run_retrieve(cfg, progress=False)
    with pytest.raises(ConfigError, match="must be >= 0"):
        RetrieveConfig(dataset="lfm2k-mm", model="sasrec", fusion_weights=(-1.0,))


def test_stage_picks_the_weight_on_validation(real_data_dir, tmp_path):
    """On lfm2k-mm (precomputed audio embeddings: no encoder run) SASRec with a fusion grid:
    w is the grid's best on the whole validation split, the model alone stays reported, the
    fused ranks are written, and a run without a grid drops them."""
    from mmsid.protocol import ProtocolConfig
    from mmsid.retrieval.run import RetrieveConfig, run_retrieve

    kw = dict(
        dataset="lfm2k-mm",
        model="sasrec",
        out=str(tmp_path / "run"),
        data_dir=str(real_data_dir),
        epochs=2,
        valid_sample=200,
        sasrec=SASRecConfig(d_model=32, n_heads=2, dropout=0.0),
        protocol=ProtocolConfig(max_history=20),
        amp="off",
    )
    r = run_retrieve(RetrieveConfig(**kw, fusion_weights=(0.5, 4.0)), progress=False)
    f, sel = r["fused"], "recall@10"
    assert set(f["grid"]) == {"0.0", "0.5", "4.0"} and str(f["weight"]) in f["grid"]
    assert f["grid"]["0.0"] == pytest.approx(r["valid"]["all"][sel])  # w = 0: the model alone
    assert f["valid"]["all"][sel] == pytest.approx(max(f["grid"].values()))
    z = np.load(tmp_path / "run" / "fused_ranks.npz")
    hit = (z["test_rank"] >= 0) & (z["test_rank"] < 10)
    assert hit.mean() == pytest.approx(f["test"]["all"][sel])
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["fused"]["weight"] == f["weight"]
    # the grid is chosen after training: a run without it reuses the trained model
    r2 = run_retrieve(RetrieveConfig(**kw), progress=False)
    assert r2["history"] == r["history"] and "fused" not in r2
    assert not (tmp_path / "run" / "fused_ranks.npz").exists()


def test_cli_prints_the_fused_rows(real_data_dir, tmp_path):
    from click.testing import CliRunner

    from mmsid.cli import main

    args = ["retrieve", "--dataset", "lfm2k-mm", "--model", "sasrec", "--epochs", "1"]
    args += ["--set", "fusion_weights=0.5,2", "--device", "cpu", "--out", str(tmp_path / "r")]
    r = CliRunner().invoke(main, [*args, "--data-dir", str(real_data_dir)])
    assert r.exit_code == 0, r.output
    w = json.loads((tmp_path / "r" / "metrics.json").read_text())["fused"]["weight"]
    assert f"fused (w={w:g}) test: Recall@5" in r.output
    bad = [*args[:4], "popularity", "--set", "fusion_weights=1", "--out", str(tmp_path / "p")]
    r = CliRunner().invoke(main, bad)
    assert r.exit_code != 0 and "no exact score to fuse" in r.output
