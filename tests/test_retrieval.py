"""Retrieval: the trie against a slow reference, constrained beam search never leaves the
catalogue, metrics against hand-computed values, models learn a planted pattern, the stage
refuses bad SID tables and resumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmsid.errors import ConfigError, DataError
from mmsid.eval.retrieval import ndcg_at_k, recall_at_k, retrieval_metrics
from mmsid.protocol import ProtocolConfig
from mmsid.retrieval.data import NextItemSplit
from mmsid.retrieval.sasrec import SASRec, SASRecConfig, training_windows
from mmsid.retrieval.tiger import TIGER, TIGERConfig, recommend_reference
from mmsid.retrieval.trie import SIDTrie, reference_allowed
from mmsid.training import LoopConfig, train

TINY = TIGERConfig(
    d_model=32,
    n_heads=2,
    d_head=16,
    d_ff=64,
    enc_layers=1,
    dec_layers=1,
    dropout=0.0,
    user_buckets=0,
    max_history=4,
)


def random_sids(rng, n, vocab):
    """n unique SIDs with per-level vocabulary sizes ``vocab``."""
    seen: set[tuple] = set()
    while len(seen) < n:
        seen.add(tuple(int(rng.integers(v)) for v in vocab))
    return np.array(sorted(seen, key=lambda _: rng.random()))


@pytest.mark.parametrize("seed", range(5))
def test_trie_matches_reference(seed):
    rng = np.random.default_rng(seed)
    vocab = (4, 3, 5)
    sids = random_sids(rng, int(rng.integers(5, 40)), vocab)
    trie = SIDTrie.from_sids(sids, vocab_sizes=vocab)
    frontier = {(): 0}
    for t in range(3):
        nxt = {}
        for prefix, node in frontier.items():
            child = trie.allowed(torch.tensor(node), t)
            assert set(torch.nonzero(child >= 0).flatten().tolist()) == reference_allowed(
                sids, prefix
            )
            for tok in reference_allowed(sids, prefix):
                nxt[prefix + (tok,)] = int(child[tok])
        frontier = nxt
    leaves = {prefix: int(trie.leaf_item[node]) for prefix, node in frontier.items()}
    assert leaves == {tuple(s): i for i, s in enumerate(sids.tolist())}


def test_trie_rejects_duplicate_sids():
    with pytest.raises(DataError, match="shared by several items"):
        SIDTrie.from_sids(np.array([[0, 1], [0, 1], [1, 0]]))


@pytest.mark.parametrize("seed", range(4))
def test_beam_search_only_yields_catalogue_items(seed):
    # an untrained model's scores are arbitrary: whatever it prefers, every output must be a
    # real item, each at most once, with scores sorted best first
    rng = np.random.default_rng(seed)
    vocab = (6, 5, 3)
    n = int(rng.integers(25, 80))
    sids = random_sids(rng, n, vocab)
    torch.manual_seed(seed)
    model = TIGER(sids, vocab, TINY).eval()
    hist = torch.from_numpy(rng.integers(-1, n, size=(7, 4)))
    hist = torch.sort(hist, dim=1, descending=True).values  # -1 padding at the end
    hist[:, 0] = hist[:, 0].clamp(min=0)
    items, scores = model.recommend({"user": torch.arange(7), "history": hist}, 10, beam=12)
    assert items.shape == (7, 10)
    assert ((items >= 0) & (items < n)).all()
    for row in items.tolist():
        assert len(set(row)) == len(row)
    assert (scores[:, :-1] >= scores[:, 1:]).all()


@pytest.mark.parametrize("seed", range(3))
def test_batched_beam_search_equals_reference(seed):
    rng = np.random.default_rng(seed)
    vocab = (5, 4, 2)
    sids = random_sids(rng, 30, vocab)
    torch.manual_seed(seed)
    model = TIGER(sids, vocab, TINY).eval()
    hist = torch.tensor([[3, 7, -1, -1], [1, 2, 3, 4], [0, -1, -1, -1]])
    items, scores = model.recommend({"user": torch.arange(3), "history": hist}, 6, beam=8)
    for u in range(3):
        ref = recommend_reference(model, u, hist[u], 6, 8, sids)
        assert items[u].tolist() == [i for i, _ in ref]
        assert scores[u].tolist() == pytest.approx([s for _, s in ref], abs=1e-5)


def test_beam_search_with_fewer_items_than_k_pads_with_minus_one():
    sids = np.array([[0, 0], [0, 1], [1, 0]])
    model = TIGER(sids, (2, 2), TINY).eval()
    items, scores = model.recommend(
        {"user": torch.zeros(2, dtype=torch.long), "history": torch.tensor([[0, -1], [1, 2]])},
        5,
    )
    for row in items.tolist():
        assert sorted(row[:3]) == [0, 1, 2] and row[3:] == [-1, -1]
    assert torch.isinf(scores[:, 3:]).all()


def test_metrics_hand_computed():
    topk = np.array([[3, 1, 2], [9, 8, 4], [5, 6, 7]])
    target = np.array([1, 4, 0])  # rank 1, rank 2, miss
    assert recall_at_k(topk, target, 1) == 0.0
    assert recall_at_k(topk, target, 2) == pytest.approx(1 / 3)
    assert recall_at_k(topk, target, 3) == pytest.approx(2 / 3)
    assert ndcg_at_k(topk, target, 3) == pytest.approx((1 / np.log2(3) + 1 / np.log2(4)) / 3)
    m = retrieval_metrics(topk, target, ks=(2, 3), slices={"first": np.array([1, 0, 0], bool)})
    assert m["first"]["recall@2"] == 1.0 and m["first"]["n"] == 1
    assert m["all"]["ndcg@2"] == pytest.approx(1 / np.log2(3) / 3)
    with pytest.raises(ValueError):
        retrieval_metrics(topk, target, ks=(5,))


def planted(n_items=24, n_users=300, length=6, seed=0):
    """Sequences that walk the catalogue: the next item is always (previous + 1) mod n."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(n_items, size=n_users)
    return [(s + np.arange(length)) % n_items for s in starts]


def _fit(model, split_or_windows, key, epochs, lr=3e-3):
    def batches(rng):
        perm = rng.permutation(len(split_or_windows))
        return [perm[i : i + 64] for i in range(0, len(perm), 64)]

    if isinstance(split_or_windows, NextItemSplit):

        def make(idx):
            s = split_or_windows.take(idx)
            return {
                "user": torch.from_numpy(s.user),
                "history": torch.from_numpy(s.history),
                "target": torch.from_numpy(s.target),
            }
    else:

        def make(idx):
            return {key: torch.from_numpy(split_or_windows[idx])}

    # validate only after the last epoch, so the kept "best" state is the final one
    train(
        model,
        LoopConfig(epochs=epochs, lr=lr, seed=0, eval_every=epochs),
        batches=batches,
        make_batch=make,
        evaluate=lambda m: {"x": 0.0},
        select="x",
        progress=False,
    )


def test_tiger_learns_planted_pattern():
    torch.manual_seed(0)
    n = 24
    seqs = planted(n)
    hist, tgt = [], []
    for s in seqs:
        for t in range(1, len(s)):
            h = np.full(4, -1)
            w = s[max(0, t - 4) : t]
            h[: len(w)] = w
            hist.append(h)
            tgt.append(s[t])
    split = NextItemSplit(np.zeros(len(tgt), np.int64), np.array(hist), np.array(tgt))
    # SIDs that do not reveal the order: a random permutation of a 4 x 6 grid
    rng = np.random.default_rng(1)
    grid = np.array([(a, b) for a in range(4) for b in range(6)])[rng.permutation(n)]
    sids = np.concatenate([grid, np.zeros((n, 1), np.int64)], 1)
    model = TIGER(sids, (4, 6, 1), TINY)
    _fit(model, split, None, epochs=40)
    model.eval()
    test_hist = torch.tensor([[i, -1, -1, -1] for i in range(n)])
    items, _ = model.recommend({"user": torch.zeros(n, dtype=torch.long), "history": test_hist}, 1)
    assert (items[:, 0].numpy() == (np.arange(n) + 1) % n).mean() >= 0.9


def test_sasrec_learns_planted_pattern():
    torch.manual_seed(0)
    n = 24
    windows = training_windows(planted(n), 4)
    model = SASRec(n, SASRecConfig(d_model=32, dropout=0.0, max_history=4))
    _fit(model, windows, "seq", epochs=30)
    model.eval()
    items, _ = model.recommend({"history": torch.tensor([[i, -1, -1, -1] for i in range(n)])}, 1)
    assert (items[:, 0].numpy() == (np.arange(n) + 1) % n).mean() >= 0.9


def test_training_windows_cover_every_transition_once():
    seq = np.arange(45)
    w = training_windows([seq], 20)
    pairs = {(int(r[i]), int(r[i + 1])) for r in w for i in range(len(r) - 1) if r[i + 1] >= 0}
    n_pairs = sum(int((r[1:] >= 0).sum()) for r in w)
    assert pairs == {(i, i + 1) for i in range(44)} and n_pairs == 44


# ---- the stage on real data -------------------------------------------------------------


@pytest.fixture(scope="module")
def ml_sids(real_data_dir, tmp_path_factory):
    """A quick RQ-KMeans-style table for ml100k from random codes (the stage only needs valid,
    unique SIDs; the tokenizers have their own tests)."""
    from mmsid.ids import SIDTable

    rng = np.random.default_rng(0)
    codes = rng.integers(16, size=(1682, 2))
    path = tmp_path_factory.mktemp("sids") / "sids.parquet"
    SIDTable.from_codes(codes, codebook_size=16, collision_cap=None).save(path)
    return path, codes


def _cfg(real_data_dir, tmp_path, **kw):
    from mmsid.retrieval.config import RetrieveConfig

    base = dict(
        dataset="ml100k-mm",
        model="tiger",
        out=str(tmp_path / "run"),
        data_dir=str(real_data_dir),
        epochs=1,
        epoch_samples=2000,
        valid_sample=200,
        beam=20,
        tiger=TINY,
        protocol=ProtocolConfig(max_history=kw.pop("max_history", 4)),
        amp="off",
    )
    base.update(kw)
    return RetrieveConfig(**base)


def test_stage_refuses_bad_sid_tables(real_data_dir, tmp_path, ml_sids):
    from mmsid.ids import SIDTable
    from mmsid.retrieval.run import run_retrieve

    _, codes = ml_sids
    short = tmp_path / "short.parquet"
    SIDTable.from_codes(codes[:1000], codebook_size=16, collision_cap=None).save(short)
    with pytest.raises(DataError, match="misses 682 catalogue item"):
        run_retrieve(_cfg(real_data_dir, tmp_path, sids=str(short)), progress=False)
    dup = tmp_path / "dup.parquet"
    t = SIDTable.from_codes(codes, codebook_size=16, collision_cap=None)
    t.collision[:] = 0  # drop the collision level: items now share SIDs
    t.save(dup)
    with pytest.raises(DataError, match="shared by several items"):
        run_retrieve(_cfg(real_data_dir, tmp_path, sids=str(dup)), progress=False)
    with pytest.raises(ConfigError, match="exceeds the catalogue"):
        run_retrieve(
            _cfg(real_data_dir, tmp_path, sids=str(short), ks=(10, 5000), beam=5000), progress=False
        )
    with pytest.raises(ConfigError, match="needs a SID table"):
        run_retrieve(_cfg(real_data_dir, tmp_path), progress=False)
    from mmsid.retrieval.config import RetrieveConfig

    with pytest.raises(ConfigError, match="schedule 'linear'"):
        RetrieveConfig(dataset="ml100k-mm", schedule="linear")
    with pytest.raises(ConfigError, match="optimizer 'sgd'"):
        RetrieveConfig(dataset="ml100k-mm", optimizer="sgd")


def test_stage_runs_and_resumes_on_real_data(real_data_dir, tmp_path, ml_sids):
    import json

    from mmsid.retrieval.run import run_retrieve

    path, _ = ml_sids
    r1 = run_retrieve(_cfg(real_data_dir, tmp_path, sids=str(path)), progress=False)
    assert r1["samples"]["test"] == 943 and r1["epochs_run"] == 1
    for split in ("valid", "test"):
        for sl in ("all", "head", "long_tail", "cold"):
            assert 0.0 <= r1[split][sl].get("recall@10", 0.0) <= 1.0
        n = r1[split]
        assert n["head"]["n"] + n["long_tail"]["n"] + n["cold"]["n"] == 943  # a partition
    # a larger epoch budget continues the finished run instead of starting over
    r2 = run_retrieve(_cfg(real_data_dir, tmp_path, sids=str(path), epochs=2), progress=False)
    assert r2["epochs_run"] == 2
    assert r2["history"][0]["train_loss"] == r1["history"][0]["train_loss"]
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["epochs_run"] == 2 and (tmp_path / "run" / "curves.png").exists()
    # time is carried across the resume, and a readable progress record sits by the checkpoint
    e1, e2 = (h["elapsed"] for h in r2["history"])
    assert e1 == r1["history"][0]["elapsed"] and e2 > e1 and r2["train_seconds"] == e2
    prog = json.loads((tmp_path / "run" / "checkpoints" / "progress.json").read_text())
    # the record is written at each epoch's end, before the loop knows why it stops
    expected = json.loads(json.dumps(r2["history"]))
    assert expected[-1].pop("stopped") == "epochs" and r2["stopped"] == "epochs"
    assert prog["epoch"] == 2 and prog["history"] == expected
    assert prog["best"] == max(h["valid"]["recall@10"] for h in r2["history"])


def test_a_remade_sid_table_starts_training_over(real_data_dir, tmp_path):
    """The checkpoint is keyed by the SID table's content, not its path: new IDs written where
    the old ones were must not resume a model trained on the old IDs."""
    from mmsid.ids import SIDTable
    from mmsid.retrieval.run import run_retrieve

    path = tmp_path / "sids.parquet"
    rng = np.random.default_rng(1)
    SIDTable.from_codes(rng.integers(16, size=(1682, 2)), codebook_size=16).save(path)
    r1 = run_retrieve(_cfg(real_data_dir, tmp_path, sids=str(path)), progress=False)
    SIDTable.from_codes(rng.integers(16, size=(1682, 2)), codebook_size=16).save(path)
    r2 = run_retrieve(_cfg(real_data_dir, tmp_path, sids=str(path), epochs=2), progress=False)
    assert r2["epochs_run"] == 2
    assert r2["history"][0]["train_loss"] != r1["history"][0]["train_loss"]  # trained anew


def test_sasrec_stage_on_real_data(real_data_dir, tmp_path):
    from mmsid.retrieval.run import run_retrieve

    r = run_retrieve(
        _cfg(real_data_dir, tmp_path, model="sasrec", epochs=8, epoch_samples=0, max_history=20),
        progress=False,
    )
    # 1,682 movies, a random list of 10 finds the target 0.6% of the time
    assert r["test"]["all"]["recall@10"] > 0.03
    # SASRec cannot score items it never trained on: the cold slice is near zero, and its
    # size is reported beside it
    assert r["test"]["cold"]["n"] == r["protocol"]["test_slices"]["cold"] > 0


def test_baselines_on_real_data(real_data_dir, tmp_path):
    """Popularity recommends no cold item; content-kNN, which reads only content, finds cold
    targets; both write the per-user ranks the paired comparisons read."""
    from mmsid.retrieval.run import run_retrieve

    kw = dict(dataset="lfm2k-mm", max_history=20)  # precomputed embeddings: no encoder run
    pop = run_retrieve(
        _cfg(real_data_dir, tmp_path / "p", model="popularity", **kw), progress=False
    )
    knn = run_retrieve(
        _cfg(real_data_dir, tmp_path / "k", model="content-knn", **kw), progress=False
    )
    assert pop["test"]["cold"]["recall@20"] == 0.0
    assert pop["test"]["head"]["recall@10"] > pop["test"]["long_tail"]["recall@10"]
    assert knn["test"]["cold"]["recall@20"] > 0.0
    z = np.load(tmp_path / "k" / "run" / "ranks.npz", allow_pickle=False)
    hit = (z["test_rank"] >= 0) & (z["test_rank"] < 10)
    assert hit.mean() == pytest.approx(knn["test"]["all"]["recall@10"])
    assert list(z["slice_names"]) == ["head", "long_tail", "cold", "rare<30"]


def test_sasrec_training_never_touches_untrainable_items():
    """Cold items are out of the training softmax (and of sampled negatives): their
    embeddings receive no gradient, as a new item's would not in production."""
    torch.manual_seed(0)
    n = 30
    mask = np.ones(n, bool)
    mask[[3, 7, 11]] = False
    seq = torch.tensor([[0, 1, 2, 4, 5, -1], [8, 9, 10, 12, -1, -1]])
    for loss in ("ce", "bce"):
        m = SASRec(
            n, SASRecConfig(d_model=16, dropout=0.0, max_history=5, loss=loss), trainable=mask
        )
        m.loss({"seq": seq}).backward()
        g = m.item.weight.grad
        assert g[[3, 7, 11]].abs().max() == 0 and g[[0, 1, 2]].abs().max() > 0
