"""Graph-constrained decoding (mmsid.retrieval.graph): the blocked graph build and the batched
walk equal their slow references; with every item as a neighbour it is exact scoring; more
steps never lower the best score found; through ParallelSID it returns distinct items with
their exact scores and serves items added after training."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mmsid.errors import ConfigError
from mmsid.retrieval.graph import (
    build_graph,
    build_graph_reference,
    code_similarity,
    graph_topk,
    graph_topk_reference,
    random_start,
)
from mmsid.retrieval.parallel import ParallelSID, ParallelSIDConfig

TINY = dict(d_model=32, n_heads=2, n_layers=1, d_ff=64, dropout=0.0, max_history=6)


def unique_codes(n: int, m: int, K: int, seed: int = 0) -> torch.Tensor:
    """(n, m) random codes with no two items sharing a full SID (so scores never tie)."""
    rng = np.random.default_rng(seed)
    codes = np.unique(rng.integers(K, size=(4 * n, m)), axis=0)
    return torch.as_tensor(codes[rng.permutation(len(codes))[:n]])


def log_probs(B: int, m: int, K: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, m, K, generator=g).log_softmax(-1)  # (B, m, K)


@pytest.mark.parametrize("block", [1, 37, 2**24])
def test_graph_build_equals_reference(block):
    codes = unique_codes(60, 4, 8)
    sim = code_similarity(torch.randn(4, 8, 16))  # (m, K, K)
    fast = build_graph(codes, sim, 7, block=block)
    ref = build_graph_reference(codes, sim, 7)

    def sims(adj):  # (N, E) the mean similarity of each chosen neighbour
        return torch.stack([sim[j][codes[:, j, None], codes[adj, j]] for j in range(4)]).mean(0)

    # equal similarities may be taken in either order: compare what was chosen, not the ids
    assert torch.allclose(sims(fast), sims(ref), atol=1e-6)
    assert (sims(fast)[:, :-1] >= sims(fast)[:, 1:] - 1e-6).all()  # most similar first
    # an item is its own most similar item (cos = 1 at every position; SIDs are unique)
    assert torch.equal(fast[:, 0], torch.arange(60))


def test_code_similarity_is_a_rescaled_cosine():
    sim = code_similarity(torch.randn(3, 5, 4))
    assert sim.shape == (3, 5, 5)
    assert torch.allclose(sim.diagonal(dim1=1, dim2=2), torch.ones(3, 5))
    assert (sim >= -1e-6).all() and (sim <= 1 + 1e-6).all()
    assert torch.allclose(sim, sim.transpose(1, 2))


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_graph_topk_equals_reference(steps):
    N, m, K = 80, 3, 16
    codes = unique_codes(N, m, K, seed=1)
    adj = build_graph(codes, code_similarity(torch.randn(m, K, 8)), 6)
    lp = log_probs(5, m, K)
    start = torch.stack(
        [torch.randperm(N, generator=torch.Generator().manual_seed(u))[:8] for u in range(5)]
    )
    ids, vals = graph_topk(lp, codes, adj, start, steps, 5)
    rids, rvals = graph_topk_reference(lp, codes, adj, start, steps, 5)
    assert torch.equal(ids, rids)
    assert torch.allclose(vals, rvals, atol=1e-6)
    for row in ids:  # distinct items
        assert len(set(row.tolist())) == 5


def test_complete_graph_is_exact_scoring():
    """With every item a neighbour of every item, one step scores the whole catalogue."""
    N, m, K = 50, 4, 8
    codes = unique_codes(N, m, K)
    adj = torch.arange(N).expand(N, N)
    lp = log_probs(6, m, K, seed=2)
    start = random_start(N, 10, 6, torch.Generator().manual_seed(0))
    ids, vals = graph_topk(lp, codes, adj, start, 1, 10)
    exact = torch.stack([lp[:, j, codes[:, j]] for j in range(m)]).mean(0).topk(10, dim=1)
    assert torch.equal(ids, exact.indices)
    assert torch.allclose(vals, exact.values, atol=1e-6)


def test_more_steps_never_lower_the_best_score():
    N, m, K = 400, 4, 16
    codes = unique_codes(N, m, K, seed=3)
    adj = build_graph(codes, code_similarity(torch.randn(m, K, 8)), 5)
    lp = log_probs(20, m, K, seed=3)
    start = random_start(N, 4, 20, torch.Generator().manual_seed(1))
    best = [graph_topk(lp, codes, adj, start, s, 1)[1][:, 0] for s in range(1, 6)]
    for a, b in zip(best, best[1:]):
        assert (b >= a - 1e-6).all()
    assert (best[-1] > best[0]).any()  # and the walk does move


def test_beam_narrower_than_k_is_refused():
    codes = unique_codes(20, 2, 8)
    adj = build_graph(codes, code_similarity(torch.randn(2, 8, 4)), 3)
    with pytest.raises(ValueError, match="beam"):
        graph_topk(log_probs(1, 2, 8), codes, adj, torch.arange(3)[None], 1, 5)
    with pytest.raises(ValueError, match="beam"):
        random_start(20, 21, 1, torch.Generator())


def parallel_model(codes: np.ndarray, K: int, **kw) -> ParallelSID:
    torch.manual_seed(0)
    net = ParallelSID(codes, K, ParallelSIDConfig(**TINY, **kw))
    with torch.no_grad():
        net.w1.normal_(0, 0.1)
    return net.eval()


def test_parallel_sid_graph_decode_returns_exact_scores_of_distinct_items():
    codes = unique_codes(300, 4, 16, seed=4).numpy()
    net = parallel_model(codes, 16, decode="graph", graph_edges=20, graph_beams=10)
    hist = torch.tensor([[1, 2, 3, -1], [4, -1, -1, -1], [7, 8, 9, 10]])
    ids, vals = net.recommend({"history": hist}, 12)  # k > graph_beams: the beam widens to k
    assert ids.shape == (3, 12)
    assert all(len(set(r)) == 12 for r in ids.tolist())
    assert torch.allclose(vals, net.score(hist).gather(1, ids), atol=1e-6)
    # with every item a neighbour it ranks as exact scoring does
    full = parallel_model(codes, 16, decode="graph", graph_edges=300)
    exact = parallel_model(codes, 16)
    assert torch.equal(
        full.recommend({"history": hist}, 10)[0], exact.recommend({"history": hist}, 10)[0]
    )


def test_graph_decode_serves_items_added_after_training():
    """A new catalogue rebuilds the graph (the old one has no edge to the new item): a new item
    whose codes are the user's likeliest ones is recommended first."""
    codes = unique_codes(120, 3, 16, seed=5).numpy()
    net = parallel_model(codes, 16, decode="graph", graph_edges=1000)  # every item a neighbour
    hist = torch.tensor([[5, 6, 7]])
    first, _ = net.recommend({"history": hist}, 10)  # builds the graph over 120 items
    best = net.last_log_probs(hist).argmax(-1).numpy()  # (1, m) the likeliest code per position
    assert not (codes == best).all(1).any()  # not yet in the catalogue
    net.set_catalogue(np.concatenate([codes, best]))
    ids, _ = net.recommend({"history": hist}, 10)
    assert ids[0, 0].item() == 120  # the new item: the best score any SID can get
    assert torch.equal(ids[0, 1:], first[0, :9])  # the rest as before


def test_decode_setting_is_checked():
    with pytest.raises(ConfigError, match="decode"):
        ParallelSIDConfig(decode="beam")
    with pytest.raises(ConfigError, match="graph_steps"):
        ParallelSIDConfig(graph_steps=0)


def test_graph_is_rebuilt_after_new_weights():
    """Loading other weights drops the graph: the next decode builds it from the new code
    embeddings, not the old ones."""
    codes = unique_codes(100, 3, 16, seed=6).numpy()
    net = parallel_model(codes, 16, decode="graph", graph_edges=8)
    old = net.sid_graph()[0].clone()
    other = ParallelSID(codes, 16, net.cfg)  # other random code embeddings
    net.load_state_dict(other.state_dict())
    assert not torch.equal(net.sid_graph()[0], old)
    assert torch.equal(net.sid_graph()[0], other.sid_graph()[0])


def test_stage_evaluates_with_the_decode_setting_on_real_data(real_data_dir, tmp_path):
    """The retrieve stage on ml100k-mm decodes as its config says: with every item a neighbour
    the graph gives exact scoring's metrics; with a sparse one-step graph the same trained model
    (training does not read the setting) scores differently."""
    import dataclasses

    from mmsid.ids import SIDTable
    from mmsid.protocol import ProtocolConfig
    from mmsid.retrieval.config import RetrieveConfig
    from mmsid.retrieval.run import run_retrieve

    path = tmp_path / "sids.parquet"
    codes = unique_codes(1682, 3, 16).numpy()  # no shared SIDs: no ties across the cut
    SIDTable.from_codes(codes, codebook_size=16).save(path)
    base = ParallelSIDConfig(**TINY)
    runs = {}
    for name, kw in {
        "exact": {},
        "complete": dict(decode="graph", graph_edges=1682, graph_beams=20, graph_steps=1),
        "sparse": dict(decode="graph", graph_edges=3, graph_beams=20, graph_steps=1),
    }.items():
        cfg = RetrieveConfig(
            dataset="ml100k-mm",
            model="parallel-sid",
            sids=str(path),
            out=str(tmp_path / name),
            data_dir=str(real_data_dir),
            epochs=1,
            epoch_samples=3000,
            valid_sample=200,
            parallel=dataclasses.replace(base, **kw),
            protocol=ProtocolConfig(max_history=6),
            amp="off",
        )
        runs[name] = run_retrieve(cfg, progress=False)
    loss = {n: r["history"][0]["train_loss"] for n, r in runs.items()}
    assert loss["exact"] == loss["complete"] == loss["sparse"]
    for split in ("valid", "test"):
        assert runs["complete"][split]["all"] == runs["exact"][split]["all"]
    assert runs["sparse"]["test"]["all"] != runs["exact"]["test"]["all"]


def test_graph_settings_can_be_compared_on_one_model():
    """graph_top_codes over a graph of explicit edges, beams and steps (what
    bench_graph_decode compares) decodes as a model configured with those settings does, and
    leaves the model's own settings and graph alone."""
    codes = unique_codes(200, 4, 16, seed=7).numpy()
    net = parallel_model(codes, 16)  # exact decoding, default graph settings
    hist = torch.tensor([[1, 2, 3, -1], [4, -1, -1, -1], [7, 8, 9, 10]])
    lp = net.last_log_probs(hist)
    tops = []
    for edges, beams, steps in ((20, 10, 1), (20, 60, 1), (20, 10, 4), (60, 10, 1)):
        cfg = dataclasses.replace(
            net.cfg, decode="graph", graph_edges=edges, graph_beams=beams, graph_steps=steps
        )
        want = ParallelSID(codes, 16, cfg)
        want.load_state_dict(net.state_dict())
        g = net.build_sid_graph(edges=edges)
        assert g[0].shape == (200, edges)
        got, _ = net.graph_top_codes(lp, 10, g, beams=beams, steps=steps)
        assert torch.equal(got, want.eval().recommend({"history": hist}, 10)[0])
        tops.append(got)
    assert all(not torch.equal(tops[0], t) for t in tops[1:])  # each setting decodes otherwise
    assert net._graph is None and net.cfg.decode == "exact"
