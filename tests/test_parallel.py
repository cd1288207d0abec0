"""The parallel-SID retriever: exact scoring equals a slow reference, causality, the one-pass
loss equals the prefix-by-prefix loss, new items are scored with no retraining, it learns a
planted pattern; the PQ/OPQ tokenizer encodes as faiss does."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mmsid.retrieval.catalogue_loss import (
    CatalogueLSE,
    item_loss_reference,
    sampled_item_loss_reference,
)
from mmsid.retrieval.parallel import (
    ParallelSID,
    ParallelSIDConfig,
    bucketed_batches,
    score_reference,
)
from mmsid.retrieval.sasrec import training_windows
from mmsid.training import LoopConfig, train

TINY = ParallelSIDConfig(
    d_model=32, n_heads=2, n_layers=1, d_ff=64, dropout=0.0, temperature=0.1, max_history=6
)


def model(seed=0, n=40, m=4, K=8, **kw):
    torch.manual_seed(seed)
    codes = np.random.default_rng(seed).integers(K, size=(n, m))
    cfg = ParallelSIDConfig(**{**TINY.__dict__, **kw})
    net = ParallelSID(codes, K, cfg)
    with torch.no_grad():  # non-trivial heads (their last weight starts at zero)
        (net.w1 if cfg.head == "linear" else net.w2).normal_(0, 0.1)
    return net.eval()


@pytest.mark.parametrize("chunk,head", [(7, "linear"), (65536, "linear"), (7, "mlp")])
def test_exact_scoring_equals_reference(chunk, head):
    net = model(score_chunk=chunk, head=head)
    lp = net.log_probs(torch.randn(5, 32))  # (5, m, K)
    assert torch.allclose(net.score_codes(lp), score_reference(net, lp), atol=1e-5)
    # log-probabilities: each code position sums to 1, so scores are at most 0
    assert torch.allclose(lp.exp().sum(-1), torch.ones(5, 4), atol=1e-5)
    assert (net.score_codes(lp) <= 0).all()


@pytest.mark.parametrize("chunk", [1, 7, 40, 65536])
def test_chunked_top_k_equals_top_k_of_all_scores(chunk):
    """Catalogues larger than a chunk keep a running top-k (memory B x chunk, not B x N)."""
    net = model(n=300, m=4, K=256, score_chunk=chunk)  # 256^4 code space: no tied items
    with torch.no_grad():
        lp = net.log_probs(torch.randn(6, 32))
        ids, vals = net.top_codes(lp, 10)
        full = score_reference(net, lp).topk(10, dim=1)
    assert torch.equal(ids, full.indices)
    assert torch.allclose(vals, full.values, atol=1e-5)
    # and through recommend: the same items as ranking every item's score
    hist = torch.tensor([[1, 2, 3, -1], [4, -1, -1, -1]])
    with torch.no_grad():
        rec, _ = net.recommend({"history": hist}, 10)
        assert torch.equal(rec, net.score(hist).topk(10, dim=1).indices)


def test_causal():
    """Changing the item at t+1 never changes the output at t (or before)."""
    net = model()
    seq = torch.tensor([[3, 5, 7, 9, 11, 13]])
    h = net.hidden(seq)
    for t in range(5):
        alt = seq.clone()
        alt[0, t + 1 :] = torch.randint(0, 40, (5 - t,))
        assert torch.allclose(net.hidden(alt)[0, : t + 1], h[0, : t + 1], atol=1e-5)


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_one_pass_loss_equals_prefix_by_prefix_loss(head):
    net = model(input="sum", head=head, loss="code")
    seq = torch.tensor([[1, 2, 3, 4, 5, 6, 7], [8, 9, 10, -1, -1, -1, -1]])
    one_pass = net.loss({"seq": seq})
    losses = []
    for row in seq:
        items = row[row >= 0]
        for t in range(1, len(items)):
            lp = net.score(items[:t][None])  # (1, N): mean code log-prob of every item
            losses.append(-lp[0, items[t]])
    assert torch.allclose(one_pass, torch.stack(losses).mean(), atol=1e-5)


@pytest.mark.parametrize("loss", ["item", "both"])
def test_item_loss_equals_catalogue_softmax_prefix_by_prefix(loss):
    """loss="item": cross-entropy over the trainable items of m x the evaluation's score (an
    item left out of training, e.g. a cold one, is never in the softmax)."""
    torch.manual_seed(0)
    codes = np.random.default_rng(0).integers(8, size=(40, 4))
    trainable = np.ones(40, bool)
    trainable[[0, 17]] = False
    net = ParallelSID(codes, 8, dataclasses.replace(TINY, loss=loss), trainable=trainable)
    net.eval()
    seq = torch.tensor([[1, 2, 3, 4, 5, 6, 7], [8, 9, 10, -1, -1, -1, -1]])
    item, code = [], []
    for row in seq:
        items = row[row >= 0]
        for t in range(1, len(items)):
            s = net.score(items[:t][None])[0] * 4  # (N,): sum of code log-probs
            s[[0, 17]] = float("-inf")
            item.append(-s.log_softmax(0)[items[t]])
            code.append(-net.score(items[:t][None])[0, items[t]])
    want = torch.stack(item).mean() + (torch.stack(code).mean() if loss == "both" else 0)
    assert torch.allclose(net.loss({"seq": seq}), want, atol=1e-5)
    # items added after training join the catalogue as not trainable
    net.set_catalogue(np.concatenate([codes, codes[:2]]))
    assert net.trainable.tolist() == trainable.tolist() + [False, False]


@pytest.mark.parametrize("block", [1, 97, 2**19])
def test_blocked_item_loss_and_gradient_equal_the_autograd_reference(block, monkeypatch):
    """CatalogueLSE (items a block at a time, hand-written backward) against plain autograd over
    the whole (M, N) score matrix, with untrainable items and blocks that split the catalogue."""
    monkeypatch.setattr(CatalogueLSE, "block", block)
    rng = np.random.default_rng(1)
    trainable = rng.random(300) > 0.1
    net = ParallelSID(rng.integers(16, size=(300, 5)), 16, TINY, trainable=trainable)
    lp = torch.randn(23, 5, 16).log_softmax(-1).requires_grad_()
    tgt = torch.from_numpy(rng.choice(np.flatnonzero(trainable), 23))
    fast = net.item_loss(lp, tgt)
    (g_fast,) = torch.autograd.grad(fast, lp)
    ref = item_loss_reference(net, lp, tgt)
    (g_ref,) = torch.autograd.grad(ref, lp)
    assert torch.allclose(fast, ref, atol=1e-5)
    assert torch.allclose(g_fast, g_ref, atol=1e-6)
    assert g_ref.abs().sum() > 0


@pytest.mark.parametrize("S", [1, 40, 200])
def test_sampled_item_loss_and_gradient_equal_the_reference(S):
    """item_negatives=S: each position's softmax over S drawn trainable items and its target,
    a target that was drawn counted once; blocked forward and hand-written backward against
    plain autograd on the same draw."""
    rng = np.random.default_rng(2)
    trainable = rng.random(300) > 0.1
    cfg = dataclasses.replace(TINY, item_negatives=S)
    net = ParallelSID(rng.integers(16, size=(300, 5)), 16, cfg, trainable=trainable)
    lp = torch.randn(23, 5, 16).log_softmax(-1).requires_grad_()
    tgt = torch.from_numpy(rng.choice(np.flatnonzero(trainable), 23))
    torch.manual_seed(5)
    neg = net.sample_negatives()
    assert len(neg) == S == len(torch.unique(neg)) and net.trainable[neg].all()
    tgt[:3] = neg[:3] if S >= 3 else neg[0]  # targets that were also drawn
    torch.manual_seed(5)
    fast = net.item_loss(lp, tgt)  # draws the same negatives
    (g_fast,) = torch.autograd.grad(fast, lp)
    ref = sampled_item_loss_reference(net, lp, tgt, neg)
    (g_ref,) = torch.autograd.grad(ref, lp)
    assert torch.allclose(fast, ref, atol=1e-5)
    assert torch.allclose(g_fast, g_ref, atol=1e-6)
    # fewer items in the softmax than the catalogue: a smaller normaliser, a smaller loss
    assert fast < item_loss_reference(net, lp, tgt)


def test_sampling_as_many_items_as_the_catalogue_is_the_exact_loss():
    rng = np.random.default_rng(3)
    trainable = rng.random(50) > 0.2
    cfg = dataclasses.replace(TINY, item_negatives=int(trainable.sum()))
    net = ParallelSID(rng.integers(16, size=(50, 3)), 16, cfg, trainable=trainable)
    assert net.sample_negatives() is None
    lp = torch.randn(7, 3, 16).log_softmax(-1)
    tgt = torch.from_numpy(rng.choice(np.flatnonzero(trainable), 7))
    assert torch.allclose(net.item_loss(lp, tgt), item_loss_reference(net, lp, tgt), atol=1e-5)


def test_a_new_item_is_scored_and_recommended_without_retraining():
    net = model()
    hist = torch.tensor([[1, 2, 3, -1, -1, -1]])
    before = net.score(hist)
    best = int(before.argmax())
    # a new item whose codes equal the best item's ties with it at the top of the list
    codes = np.concatenate([net.codes.numpy(), net.codes[best : best + 1].numpy()])
    net.set_catalogue(codes)
    after = net.score(hist)
    assert after.shape == (1, 41) and torch.isfinite(after).all()
    assert torch.equal(after[:, :40], before) and after[0, 40] == after[0, best]
    assert 40 in net.recommend({"history": hist}, 2)[0][0].tolist()
    # a new item can also be put in a history: its input is its codes' embeddings
    assert torch.isfinite(net.score(torch.tensor([[40, 2, -1, -1, -1, -1]]))).all()
    with pytest.raises(ValueError, match="catalogue codes"):
        net.set_catalogue(np.full((3, 4), 8))


@pytest.mark.parametrize(
    "head,loss,negatives",
    [("linear", "code", 0), ("mlp", "code", 0), ("linear", "item", 0), ("linear", "item", 8)],
)
def test_learns_a_planted_pattern(head, loss, negatives):
    """Item i is always followed by item i+1 (mod N); after training, the next item is the
    top-1 recommendation for nearly every history."""
    n, m, K = 30, 3, 6
    rng = np.random.default_rng(0)
    codes = np.unique(rng.integers(K, size=(200, m)), axis=0)[:n]  # distinct SIDs
    rng.shuffle(codes)
    seqs = [(np.arange(s, s + 6) % n) for s in range(n) for _ in range(4)]
    windows = training_windows(seqs, 5)
    lengths = (windows >= 0).sum(1)
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, max_history=5, head=head, loss=loss, item_negatives=negatives)
    net = ParallelSID(codes, K, cfg)
    step = iter(range(10**6))  # "validation" improves every epoch: keep the last state
    train(
        net,
        LoopConfig(epochs=60, lr=3e-3, schedule="cosine", warmup_steps=5),
        batches=lambda g: bucketed_batches(lengths, 32, g),
        make_batch=lambda idx: {"seq": torch.from_numpy(windows[idx])},
        evaluate=lambda _: {"x": float(next(step))},
        select="x",
        progress=False,
    )
    net.eval()
    hist = torch.tensor([[(s + j) % n for j in range(3)] + [-1, -1] for s in range(n)])
    top = net.recommend({"history": hist}, 1)[0][:, 0]
    assert (top == (torch.arange(n) + 3) % n).float().mean() > 0.9


def test_bucketed_batches_cover_every_row_once_with_similar_lengths():
    lengths = np.random.default_rng(0).integers(1, 20, size=1000)
    b = bucketed_batches(lengths, 64, np.random.default_rng(1))
    assert np.array_equal(np.sort(np.concatenate(b)), np.arange(1000))
    spread = np.mean([np.ptp(lengths[x]) for x in b])
    assert spread < 3  # a random batch spans about the whole range (18)
    assert len(np.concatenate(bucketed_batches(lengths, 64, np.random.default_rng(1), 300))) == 300


# ---- the PQ / OPQ tokenizer -----------------------------------------------------------------


def correlated(n=3000, d=24, seed=0):
    """Data whose variance sits in a few directions mixed across every axis (where a learned
    rotation helps PQ)."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, d)) * np.geomspace(4.0, 0.05, d)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return (z @ q.T).astype(np.float32)


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_opq_encodes_as_faiss_does_and_beats_pq(backend):
    import faiss

    from mmsid.quantizers.opq import OPQConfig, OPQTokenizer

    x = correlated()
    cfg = OPQConfig(levels=4, codebook_size=16, opq_iters=10, backend=backend)
    opq = OPQTokenizer(cfg).fit(x)
    pq = OPQTokenizer(dataclasses.replace(cfg, rotate=False)).fit(x)
    codes = opq.transform(x)
    assert codes.shape == (3000, 4) and codes.max() < 16
    A = opq.module.rotation.numpy()
    assert np.allclose(A.T @ A, np.eye(24), atol=1e-4)  # a rotation
    ref = faiss.ProductQuantizer(24, 4, 4)
    faiss.copy_array_to_vector(opq.module.codebooks.numpy().ravel(), ref.centroids)
    dec = ref.decode(ref.compute_codes(np.ascontiguousarray(x @ A.T)))  # faiss's own encoder
    ours = opq.module.decode(torch.from_numpy(codes)).numpy() @ A.T
    assert np.allclose(ours, dec, atol=1e-4)
    assert (
        opq.history[0]["reconstruction_sq_error"] < 0.8 * pq.history[0]["reconstruction_sq_error"]
    )
    assert np.array_equal(pq.module.rotation.numpy(), np.eye(24, dtype=np.float32))


def test_opq_pads_dimensions_and_round_trips_through_save(tmp_path):
    from mmsid.quantizers import Tokenizer
    from mmsid.quantizers.opq import OPQConfig, OPQTokenizer

    x = correlated(n=1000, d=10)
    tok = OPQTokenizer(OPQConfig(levels=4, codebook_size=16, opq_iters=3)).fit(x)
    assert tok.module.rotation.shape == (12, 10)  # 10 dims padded to 4 x 3
    tok.save(tmp_path / "t.pt")
    back = Tokenizer.load(tmp_path / "t.pt")
    assert np.array_equal(back.transform(x), tok.transform(x))


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_opq_on_whitened_principal_axes(backend, tmp_path):
    """``pca_dim``: OPQ quantizes the top principal axes of the input, centred and (whitened)
    scaled to unit variance, as RPG's tokenizer does; the codes are the faiss encoder's on that
    projection, the reconstruction is back in the input space, a saved fit encodes alike, and a
    warm start keeps the previous fit's projection."""
    import faiss

    from mmsid.errors import ConfigError
    from mmsid.quantizers import Tokenizer
    from mmsid.quantizers.opq import OPQConfig, OPQTokenizer

    x = correlated() + 3.0  # off-centre: the projection must centre it
    cfg = OPQConfig(levels=4, codebook_size=16, opq_iters=5, pca_dim=8, backend=backend)
    tok = OPQTokenizer(cfg).fit(x)
    z = tok.module.to_pca(torch.from_numpy(x)).numpy()  # (3000, 8)
    assert z.shape == (3000, 8) and tok.module.rotation.shape == (8, 8)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(z.std(0, ddof=1), 1.0, atol=1e-4)
    # the kept axes span the data's top-8 principal subspace (numpy's SVD)
    vt = np.linalg.svd(x - x.mean(0), full_matrices=False)[2][:8]
    proj = tok.module.project.numpy()
    np.testing.assert_allclose(np.linalg.norm(proj @ vt.T @ vt - proj), 0.0, atol=1e-3)
    codes = tok.transform(x)
    A = tok.module.rotation.numpy()
    ref = faiss.ProductQuantizer(8, 4, 4)
    faiss.copy_array_to_vector(tok.module.codebooks.numpy().ravel(), ref.centroids)
    dec = ref.decode(ref.compute_codes(np.ascontiguousarray(z @ A.T)))  # faiss's own encoder
    ours = tok.module.codebooks.numpy()[np.arange(4), codes].reshape(3000, 8)
    assert np.allclose(ours, dec, atol=1e-4)
    rec = tok.reconstruct(torch.from_numpy(x)).numpy()
    assert rec.shape == x.shape
    # back in the input space: far nearer x than the mean is (8 of 24 axes, most variance)
    assert ((rec - x) ** 2).sum(1).mean() < 0.2 * ((x - x.mean(0)) ** 2).sum(1).mean()
    plain = OPQTokenizer(dataclasses.replace(cfg, pca_whiten=False)).fit(x)
    assert np.allclose(plain.module.to_pca(torch.from_numpy(x)).numpy().std(0)[0], 4.0, rtol=0.2)
    tok.save(tmp_path / "t.pt")
    assert np.array_equal(Tokenizer.load(tmp_path / "t.pt").transform(x), codes)
    again = OPQTokenizer(cfg).fit(x[:1500] * 2.0, warm_start=tok)  # other data, old projection
    assert torch.equal(again.module.project, tok.module.project)
    assert torch.equal(again.module.mean, tok.module.mean)
    with pytest.raises(ConfigError, match="pca_dim 30 must be between 0"):
        OPQTokenizer(dataclasses.replace(cfg, pca_dim=30)).fit(x)


def test_opq_without_pca_keeps_its_saved_state():
    """Without PCA the module holds only the rotation and codebooks, as fits saved before PCA
    existed do, so they load; a PCA setting on another tokenizer is refused."""
    from mmsid.errors import ConfigError
    from mmsid.quantizers.opq import OPQConfig, OPQTokenizer
    from mmsid.tokenize import TokenizeConfig

    tok = OPQTokenizer(OPQConfig(levels=4, codebook_size=16, opq_iters=2)).fit(correlated(500))
    assert set(tok.module.state_dict()) == {"rotation", "codebooks"}
    with pytest.raises(ConfigError, match="only opq and pq project"):
        TokenizeConfig(dataset="ml100k-mm", method="rq-vae", pca_dim=64)


def test_stage_on_real_data_reads_shared_sids(real_data_dir, tmp_path):
    """The stage trains parallel-sid on ml100k-mm from a SID table in which items share SIDs
    (no collision level needed: they tie), evaluates every slice, and records its input."""
    from mmsid.ids import SIDTable
    from mmsid.protocol import ProtocolConfig
    from mmsid.retrieval.config import RetrieveConfig
    from mmsid.retrieval.run import run_retrieve

    path = tmp_path / "sids.parquet"
    t = SIDTable.from_codes(np.random.default_rng(0).integers(4, size=(1682, 3)), codebook_size=4)
    t.collision[:] = 0  # 64 distinct SIDs over 1,682 items: most items share one
    t.save(path)
    cfg = RetrieveConfig(
        dataset="ml100k-mm",
        model="parallel-sid",
        sids=str(path),
        out=str(tmp_path / "run"),
        data_dir=str(real_data_dir),
        epochs=1,
        valid_sample=200,
        parallel=TINY,
        protocol=ProtocolConfig(max_history=6),
        amp="off",
    )
    r = run_retrieve(cfg, progress=False)
    assert r["samples"]["test"] == 943 and r["epochs_run"] == 1
    assert r["test"]["cold"]["n"] > 0 and 0 <= r["test"]["cold"]["recall@20"] <= 1
    assert (tmp_path / "run" / "trained_on.npz").exists()
