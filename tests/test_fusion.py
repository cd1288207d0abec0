"""Content fusion: the fused score equals a slow reference, its limits are the model alone
(w = b = 0), content-kNN (w -> infinity) and new items first (b -> infinity), the one-pass grid
equals fusing at each point, and the stage picks (w, b) on validation and reports it beside the
model alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmsid.errors import ConfigError
from mmsid.retrieval.baselines import ContentKNN
from mmsid.retrieval.fusion import ContentFusion, FusionGrid, choose_point, fusion_reference
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
    new = rng.random(n) < 0.2  # items neither model trained on
    cfg = ParallelSIDConfig(d_model=16, n_heads=2, d_ff=32, dropout=0.0, max_history=5)
    sas = SASRec(n, SASRecConfig(d_model=16, n_heads=2, dropout=0.0, max_history=5), trainable=~new)
    return [ParallelSID(codes, 8, cfg, trainable=~new).eval(), sas.eval()]


@pytest.mark.parametrize("seed", range(3))
def test_fused_score_equals_reference(seed):
    rng = np.random.default_rng(seed)
    n = 40
    content = rng.normal(size=(n, 7))
    content[[2, 9]] = 0.0  # items without content: no content term
    hist = _histories(rng, n)
    for base in _models(n, seed):
        w, b = float(rng.uniform(0.1, 3.0)), float(rng.uniform(0.1, 1.0))
        got = ContentFusion(base, content, w, b).score(torch.as_tensor(hist)).double().numpy()
        np.testing.assert_allclose(got, fusion_reference(base, content, hist, w, b), atol=1e-5)
        alone = base.score(torch.as_tensor(hist)).double().numpy()
        assert not np.allclose(got, alone)  # both terms changed something


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
        # b -> infinity: the new items first, in the fused score's order among themselves (b =
        # 100: far above these scores, small enough for fp32 to keep their order)
        new = ~base.trainable
        top, _ = ContentFusion(base, content, 0.5, 100.0).recommend(batch, k)
        assert bool(new[top].all()) and int(new.sum()) >= k
        only_new = ContentFusion(base, content, 0.5).score(hist).masked_fill(~new, -1e9)
        assert torch.equal(top, only_new.topk(k, dim=1).indices)


def test_one_pass_grid_equals_fusing_at_each_point():
    rng = np.random.default_rng(3)
    n, k = 40, 4
    content = rng.normal(size=(n, 7))
    batch = {"history": torch.as_tensor(_histories(rng, n, B=9))}
    grid = [(0.0, 0.0), (0.0, 0.3), (0.7, 0.0), (0.7, 0.3), (5.0, 2.0)]
    for base in _models(n, 2):
        items, values = FusionGrid(ContentFusion(base, content, 0.0), grid).recommend(
            batch, k * len(grid)
        )
        for g, (w, b) in enumerate(grid):
            want = ContentFusion(base, content, w, b).recommend(batch, k)
            assert torch.equal(items[:, g * k : (g + 1) * k], want[0])
            assert torch.equal(values[:, g * k : (g + 1) * k], want[1])


def test_a_model_without_exact_scores_cannot_be_fused(real_data_dir, tmp_path):
    from mmsid.retrieval.config import RetrieveConfig
    from mmsid.retrieval.run import run_retrieve

    with pytest.raises(TypeError, match="no exact score"):
        ContentFusion(torch.nn.Linear(2, 2), np.ones((3, 2)), 1.0)
    cfg = RetrieveConfig(dataset="lfm2k-mm", model="tiger", sids="x.parquet", fusion_weights=(1.0,))
    with pytest.raises(ConfigError, match="no exact score to fuse"):
        run_retrieve(cfg, progress=False)
    with pytest.raises(ConfigError, match="fusion_weights .* must be >= 0"):
        RetrieveConfig(dataset="lfm2k-mm", model="sasrec", fusion_weights=(-1.0,))
    with pytest.raises(ConfigError, match="fusion_new_item_bias .* must be >= 0"):
        RetrieveConfig(dataset="lfm2k-mm", model="sasrec", fusion_new_item_bias=(-0.1,))
    cfg = RetrieveConfig(dataset="lfm2k-mm", model="tiger", sids="x", fusion_new_item_bias=(1.0,))
    with pytest.raises(ConfigError, match="no exact score to fuse"):
        run_retrieve(cfg, progress=False)


def test_stage_picks_the_grid_point_on_validation(real_data_dir, tmp_path):
    """On lfm2k-mm (precomputed audio embeddings: no encoder run) SASRec with a (w, b) grid:
    the point is the grid's best on the whole validation split, the model alone stays
    reported, the fused ranks are written, and a run without a grid drops them."""
    from mmsid.protocol import ProtocolConfig
    from mmsid.retrieval.config import RetrieveConfig
    from mmsid.retrieval.run import run_retrieve

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
    grid = dict(fusion_weights=(0.5, 4.0), fusion_new_item_bias=(1.0, 1e6))
    r = run_retrieve(RetrieveConfig(**kw, **grid), progress=False)
    f, sel = r["fused"], "recall@10"
    points = {(g["weight"], g["new_item_bias"]): g["valid"] for g in f["grid"]}
    assert set(points) == {(w, b) for w in (0.0, 0.5, 4.0) for b in (0.0, 1.0, 1e6)}
    assert points[0.0, 0.0]["all"] == pytest.approx(r["valid"]["all"][sel])  # the model alone
    for slice_ in ("all", "cold"):
        assert points[0.0, 0.0][slice_] == pytest.approx(r["valid"][slice_][sel])
    chosen = points[f["weight"], f["new_item_bias"]]["all"]
    chosen_cold = points[f["weight"], f["new_item_bias"]]["cold"]
    assert chosen == pytest.approx(f["valid"]["all"][sel])
    assert chosen == max(p["all"] for p in points.values())
    # b = 1e6 puts the cold items first: every cold target in the top ten when there are no
    # more cold items than that, else far more of them than the model alone finds
    assert points[0.0, 1e6]["cold"] > points[0.0, 0.0]["cold"]
    z = np.load(tmp_path / "run" / "fused_ranks.npz")
    hit = (z["test_rank"] >= 0) & (z["test_rank"] < 10)
    assert hit.mean() == pytest.approx(f["test"]["all"][sel])
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["fused"]["weight"] == f["weight"]
    # the grid is chosen after training: a run without it reuses the trained model
    r2 = run_retrieve(RetrieveConfig(**kw), progress=False)
    assert r2["history"] == r["history"] and "fused" not in r2
    assert not (tmp_path / "run" / "fused_ranks.npz").exists()
    # a tolerance: the same grid, now the best point for cold targets within half the best
    r3 = run_retrieve(RetrieveConfig(**kw, **grid, fusion_tolerance=0.5), progress=False)
    f3 = r3["fused"]
    assert r3["history"] == r["history"] and f3["tolerance"] == 0.5 and f["tolerance"] == 0.0
    assert f3["grid"] == f["grid"]
    ok = [p for p in points.values() if p["all"] >= 0.5 * max(q["all"] for q in points.values())]
    got = points[f3["weight"], f3["new_item_bias"]]
    assert got in ok and got["cold"] == max(p["cold"] for p in ok)
    assert got["cold"] >= chosen_cold
    assert got["all"] == pytest.approx(f3["valid"]["all"][sel])


def test_cli_prints_the_fused_rows(real_data_dir, tmp_path):
    from click.testing import CliRunner

    from mmsid.cli import main

    args = ["retrieve", "--dataset", "lfm2k-mm", "--model", "sasrec", "--epochs", "1"]
    args += ["--set", "fusion_weights=0.5,2", "--set", "fusion_new_item_bias=0.1"]
    args += ["--device", "cpu", "--out", str(tmp_path / "r")]
    r = CliRunner().invoke(main, [*args, "--data-dir", str(real_data_dir)])
    assert r.exit_code == 0, r.output
    f = json.loads((tmp_path / "r" / "metrics.json").read_text())["fused"]
    assert f"fused (w={f['weight']:g}, b={f['new_item_bias']:g}) test: Recall@5" in r.output
    # one epoch with patience 5: the cap ended it, and the command says so
    assert "warning: training reached the epoch cap (1)" in r.output
    bad = [*args[:4], "popularity", "--set", "fusion_weights=1", "--out", str(tmp_path / "p")]
    r = CliRunner().invoke(main, bad)
    assert r.exit_code != 0 and "no exact score to fuse" in r.output


def test_choose_point_trades_overall_recall_for_new_items_only_within_the_tolerance():
    """Tolerance 0: the best overall point (ties: the earlier). Tolerance t: the best cold point
    among those within t of the best overall, so never below that floor and never worse on cold
    items than the overall choice; with no cold target, the tolerance has nothing to read."""

    def pts(alls, colds, n=7):
        return [{"all": {"r": a}, "cold": {"r": c, "n": n}} for a, c in zip(alls, colds)]

    p = pts([0.100, 0.0995, 0.090, 0.100], [0.0, 0.05, 0.2, 0.01])
    assert choose_point(p, "r") == 0
    assert choose_point(p, "r", 0.01) == 1
    assert choose_point(p, "r", 0.2) == 2
    assert choose_point(pts([0.1, 0.09], [0.0, 0.3], n=0), "r", 0.5) == 0
    rng = np.random.default_rng(0)
    for _ in range(300):
        g = int(rng.integers(1, 12))
        alls = rng.integers(5, 10, g) / 100  # ties on purpose
        colds = rng.integers(0, 5, g) / 10
        p, t = pts(alls, colds), float(rng.uniform(0.0, 0.6))
        g0, gt = choose_point(p, "r"), choose_point(p, "r", t)
        assert g0 == int(np.flatnonzero(alls == alls.max())[0])
        ok = alls >= (1 - t) * alls.max()
        assert ok[gt] and colds[gt] == colds[ok].max() and colds[gt] >= colds[g0]
