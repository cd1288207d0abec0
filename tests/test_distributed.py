"""Data-parallel training (mmsid.distributed): real process groups (gloo, 2 processes spawned
here) against one process; the sampler's partition; one writer; resuming a 2-process
checkpoint in 1 process. The torchrun launches of real stages on real data are measured in
benchmarks/bench_distributed.py."""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from mmsid import distributed
from mmsid.distributed import Context, shard
from mmsid.training import LoopConfig, train

N, BATCH = 97, 32  # the last batch has 1 row: rank 1's part is empty (the zero-loss path)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(n=st.integers(0, 60), world=st.integers(1, 6))
def test_shard_partitions_a_batch_in_rank_order(n, world):
    idx = np.arange(100, 100 + n)
    parts = [shard(idx, Context(rank=r, world=world)) for r in range(world)]
    assert np.array_equal(np.concatenate(parts), idx)  # every row once, in order
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


class Toy(nn.Module):
    """Linear regression whose loss is a mean over rows (the default ``units``)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(8, 1)

    def loss(self, batch):
        return ((self.lin(batch["x"]).squeeze(1) - batch["y"]) ** 2).mean()


def _data():
    g = np.random.default_rng(0)
    x = torch.from_numpy(g.normal(size=(N, 8)).astype(np.float32))
    y = x @ torch.arange(8, dtype=torch.float32) + 0.1
    return x, y


def _fit(epochs: int, ckpt: Path | None) -> tuple[list[dict], dict]:
    x, y = _data()
    model = Toy()

    def batches(rng):
        perm = rng.permutation(N)
        return [perm[i : i + BATCH] for i in range(0, N, BATCH)]

    def evaluate(m):
        with torch.no_grad():
            return {"neg_mse": -float(m.loss({"x": x, "y": y}))}

    hist = train(
        model,
        LoopConfig(epochs=epochs, lr=0.05, log_steps=True, seed=3),
        batches=batches,
        make_batch=lambda idx: {"x": x[idx], "y": y[idx]},
        evaluate=evaluate,
        select="neg_mse",
        checkpoint=ckpt,
        run_key="toy",
        progress=False,
    )
    return hist, {k: v.clone() for k, v in model.state_dict().items()}


def _join(rank: int, world: int, port: int) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(world),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    distributed.init("cpu")


def _train_worker(rank: int, world: int, port: int, out: str, epochs: int) -> None:
    _join(rank, world, port)
    hist, state = _fit(epochs, Path(out) / "ckpt.pt")
    torch.save({"hist": hist, "state": state}, Path(out) / f"rank{rank}.pt")  # both ranks
    from mmsid.io import write_json

    write_json(Path(out) / f"written-by-rank{rank}.json", {"rank": rank})  # mmsid's writer
    distributed.shutdown()


def _tok_worker(rank: int, world: int, port: int, out: str) -> None:
    _join(rank, world, port)
    tok = _rqvae()
    tok.fit(_tok_data(), progress=False)
    torch.save({"hist": tok.history, "state": tok.module.state_dict()}, Path(out) / f"tok{rank}.pt")
    distributed.shutdown()


def _rqvae():
    from mmsid.quantizers import tokenizer_for

    return tokenizer_for(
        "rq-vae",
        levels=2,
        codebook_size=64,
        epochs=4,
        batch_size=64,
        hidden=(32,),
        latent_dim=8,
        dead_code_threshold=6,  # of 301 rows over 64 codes: some restart every epoch
        log_steps=True,
        seed=0,
    )


def _tok_data() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(301, 16)).astype(np.float32)


def _spawn(fn, *args) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(fn, args=(2, port, *args), nprocs=2, join=True)


def _steps(hist: list[dict]) -> np.ndarray:
    return np.concatenate([h["step_losses"] for h in hist])


def test_two_processes_train_as_one_with_the_same_global_batch(tmp_path):
    _spawn(_train_worker, str(tmp_path), 3)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    ref_hist, ref_state = _fit(3, None)
    # every rank logs the global batch's loss, and it is one process's loss
    assert np.array_equal(_steps(r0["hist"]), _steps(r1["hist"]))
    np.testing.assert_allclose(_steps(r0["hist"]), _steps(ref_hist), rtol=1e-5, atol=1e-6)
    for k in ref_state:  # identical weights on both ranks, one process's weights
        assert torch.equal(r0["state"][k], r1["state"][k])
        torch.testing.assert_close(r0["state"][k], ref_state[k], rtol=1e-5, atol=1e-6)
    # one writer: rank 1's mmsid writes are discarded
    assert (tmp_path / "written-by-rank0.json").is_file()
    assert not (tmp_path / "written-by-rank1.json").exists()


def test_a_two_process_checkpoint_resumes_in_one_process(tmp_path):
    _spawn(_train_worker, str(tmp_path), 2)  # 2 epochs in 2 processes, checkpointed
    hist, state = _fit(4, tmp_path / "ckpt.pt")  # resumed to 4 epochs in this process
    ref_hist, ref_state = _fit(4, None)  # uninterrupted, one process
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    np.testing.assert_allclose(_steps(hist), _steps(ref_hist), rtol=1e-5, atol=1e-6)
    for k in ref_state:
        torch.testing.assert_close(state[k], ref_state[k], rtol=1e-5, atol=1e-6)


def test_tokenizer_loop_keeps_ranks_identical_through_dead_code_restarts(tmp_path):
    _spawn(_tok_worker, str(tmp_path))
    t0, t1 = (torch.load(tmp_path / f"tok{r}.pt") for r in (0, 1))
    ref = _rqvae()
    ref.fit(_tok_data(), progress=False)
    restarted = [h["restarted_codes"] for h in ref.history]
    assert sum(restarted) > 0  # the check below covers restarts
    # code usage is summed over ranks before a restart, so both ranks restart the same codes
    assert [h["restarted_codes"] for h in t0["hist"]] == restarted
    for k, v in t0["state"].items():
        assert torch.equal(v, t1["state"][k]), k
        torch.testing.assert_close(v, ref.module.state_dict()[k], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_steps(t0["hist"]), _steps(ref.history), rtol=1e-5, atol=1e-6)


def test_ema_codebooks_are_refused_in_a_process_group(monkeypatch):
    from mmsid.errors import ConfigError
    from mmsid.quantizers import tokenizer_for

    monkeypatch.setattr(distributed, "_CTX", Context(rank=0, world=2, backend="gloo"))
    tok = tokenizer_for("rq-vae", levels=2, codebook_size=16, epochs=1, ema=True)
    with pytest.raises(ConfigError, match="EMA"):  # before any step or collective call
        tok.fit(_tok_data(), progress=False)


class _ByHistory(nn.Module):
    """A retriever whose top-k is a function of each row's history (sum of item ids)."""

    def recommend(self, batch, k, *, beam):
        h = batch["history"]
        base = (h.clamp(min=0).sum(1) + batch["user"])[:, None]  # (B, 1)
        items = base * 10 + torch.arange(k)  # (B, k)
        return items, -items.float()


def _split(n: int = 53):
    from mmsid.retrieval.data import NextItemSplit

    g = np.random.default_rng(2)
    hist = g.integers(0, 50, size=(n, 6))
    for i in range(n):  # varied lengths, -1 padded at the end
        hist[i, g.integers(1, 7) :] = -1
    return NextItemSplit(np.arange(n), hist, np.zeros(n, dtype=np.int64))


def _recommend_worker(rank: int, world: int, port: int, out: str) -> None:
    from mmsid.retrieval.run import recommend_all

    _join(rank, world, port)
    top = recommend_all(_ByHistory(), _split(), 4, beam=1, batch_size=5, device="cpu")
    np.save(Path(out) / f"top{rank}.npy", top)
    distributed.shutdown()


def test_evaluation_is_sharded_and_every_rank_gets_the_whole(tmp_path):
    """recommend_all in 2 processes: each scores every other row (by history length), and both
    get all rows, in the split's order, equal to one process's result."""
    from mmsid.retrieval.run import recommend_all

    one = recommend_all(_ByHistory(), _split(), 4, beam=1, batch_size=5, device="cpu")
    _spawn(_recommend_worker, str(tmp_path))
    for rank in (0, 1):
        np.testing.assert_array_equal(np.load(tmp_path / f"top{rank}.npy"), one)
    s = _split()
    np.testing.assert_array_equal(one[:, 0], (s.history.clip(0).sum(1) + s.user) * 10)


def _sequence_model(which: str):
    """A small TIGER or MCCA over synthetic data, its batch maker, and the row count: the two
    trained components of issue 19 beyond SASRec and the tokenizers."""
    import itertools

    g = np.random.default_rng(4)
    n_items, n_rows, H = 40, 91, 6  # the last batch (27) splits 14 + 13: scaled shares
    hist = g.integers(0, n_items, size=(n_rows, H))
    for i in range(n_rows):  # varied lengths, -1 padded at the end: shards differ in length
        hist[i, g.integers(1, H + 1) :] = -1
    data = {
        "user": torch.from_numpy(g.integers(0, 30, n_rows)),
        "history": torch.from_numpy(hist),
        "target": torch.from_numpy(g.integers(0, n_items, n_rows)),
        "item": torch.from_numpy(g.integers(0, n_items, n_rows)),
        "label": torch.from_numpy(g.integers(0, 2, n_rows).astype(np.float32)),
    }
    torch.manual_seed(0)
    if which == "tiger":
        from mmsid.retrieval.tiger import TIGER, TIGERConfig

        sids = np.array(list(itertools.product(range(4), range(4), range(3)))[:n_items])
        cfg = TIGERConfig(
            d_model=16, n_heads=2, d_head=8, d_ff=32, enc_layers=1, dec_layers=1, dropout=0.0
        )
        model = TIGER(sids, [4, 4, 3], dataclasses.replace(cfg, max_history=H))
        keys = ("user", "history", "target")
    else:
        from mmsid.ranking.mcca import MCCA, MCCAConfig

        codes = {s: g.integers(0, 8, size=(n_items, 3)) for s in ("joint", "text")}
        model = MCCA(n_items, codes, joint="joint", codebook_size=8, cfg=MCCAConfig(dim=8))
        keys = ("user", "history", "item", "label")
    return model, (lambda idx: {k: data[k][torch.as_tensor(idx)] for k in keys}), n_rows


def _fit_model(which: str) -> tuple[list[dict], dict]:
    model, make_batch, n = _sequence_model(which)

    def batches(rng):
        perm = rng.permutation(n)
        return [perm[i : i + BATCH] for i in range(0, n, BATCH)]

    hist = train(
        model,
        LoopConfig(epochs=2, lr=0.01, log_steps=True, seed=3),
        batches=batches,
        make_batch=make_batch,
        evaluate=lambda m: {"neg_loss": -float(m.loss(make_batch(np.arange(n))).detach())},
        select="neg_loss",
        progress=False,
    )
    return hist, {k: v.clone() for k, v in model.state_dict().items()}


def _model_worker(rank: int, world: int, port: int, out: str, which: str) -> None:
    _join(rank, world, port)
    hist, state = _fit_model(which)
    world_seen = distributed.context().world  # the group was joined: the ranks split batches
    torch.save({"hist": hist, "state": state, "world": world_seen}, Path(out) / f"{which}{rank}.pt")
    distributed.shutdown()


@pytest.mark.parametrize("which", ["tiger", "mcca"])
def test_tiger_and_mcca_train_in_two_processes_as_in_one(tmp_path, which):
    """TIGER (encoder-decoder; each rank's shard drops its own all-padding history slots) and
    MCCA under a 2-process group: the global batch's per-step losses and the final weights
    equal one process's, and both ranks hold the same weights."""
    _spawn(_model_worker, str(tmp_path), which)
    r0, r1 = (torch.load(tmp_path / f"{which}{r}.pt") for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    ref_hist, ref_state = _fit_model(which)
    assert len(_steps(ref_hist)) == 2 * 3  # 91 rows in batches of 32, 2 epochs
    np.testing.assert_allclose(_steps(r0["hist"]), _steps(ref_hist), rtol=1e-5, atol=1e-6)
    for k in ref_state:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
        torch.testing.assert_close(r0["state"][k], ref_state[k], rtol=1e-4, atol=1e-5)


def _mmq_data() -> np.ndarray:
    """257 items (batches of 64 end with 1 row: rank 1's part is empty), two modalities of 8;
    40 items lack the second and 20 the first, so the means over present items weigh the
    ranks' parts unequally."""
    x = np.random.default_rng(6).normal(size=(257, 16)).astype(np.float32)
    x[:40, 8:] = 0.0
    x[40:60, :8] = 0.0
    return x


def _mmq(path: Path | None = None):
    """MMQ at its routed layout (2 shared, 2 specific experts per modality), stage 1 then
    stage 2; saved at ``path`` when given. Returns (history, weights)."""
    from mmsid.quantizers import tokenizer_for

    tok = tokenizer_for(
        "mmq",
        modality_dims=(8, 8),
        codebook_size=16,
        latent_dim=8,
        hidden=(16,),
        epochs=2,
        batch_size=64,
        finetune_epochs=2,
        finetune_batch_size=32,
        finetune_pairs_per_epoch=65,  # batches 32, 32, 1: rank 1's last part is empty
        log_steps=True,
        seed=0,
    )
    x = _mmq_data()
    tok.fit(x, progress=False)
    tok.finetune(x, np.random.default_rng(5).integers(0, len(x), size=(90, 2)), progress=False)
    weights = {k: v for k, v in tok.module.state_dict().items() if not k.endswith("usage")}
    return tok.history, weights  # code-usage counts are per rank


def _mmq_worker(rank: int, world: int, port: int, out: str) -> None:
    _join(rank, world, port)
    hist, state = _mmq()
    torch.save({"hist": hist, "state": state}, Path(out) / f"mmq{rank}.pt")
    distributed.shutdown()


def test_mmq_trains_in_two_processes_as_in_one(tmp_path):
    """MMQ stage 1 and stage 2 under a 2-process group: the batch-level terms (orthogonality
    and gate sharpness over the items present, the gates' load balance) and stage 2's
    in-batch negatives are computed over the global batch, so every per-step loss, each
    term's epoch mean and the weights equal one process's; ranks with an empty part of a
    last batch take part in the gathers."""
    _spawn(_mmq_worker, str(tmp_path))
    r0, r1 = (torch.load(tmp_path / f"mmq{r}.pt") for r in (0, 1))
    ref_hist, ref_state = _mmq()
    assert [h["stage"] for h in ref_hist] == [1, 1, 2, 2]
    assert len(_steps(ref_hist)) == 2 * 5 + 2 * 3
    terms = ("orthogonality", "gate_balance", "gate_entropy")
    assert all(h[k] != 0 for h in ref_hist for k in terms)  # every term is in play
    assert all(h["behavior"] > 0 for h in ref_hist[2:])
    np.testing.assert_array_equal(_steps(r0["hist"]), _steps(r1["hist"]))
    np.testing.assert_allclose(_steps(r0["hist"]), _steps(ref_hist), rtol=1e-5, atol=1e-6)
    for h0, h in zip(r0["hist"], ref_hist, strict=True):
        for k in (*terms, "reconstruction", "behavior"):
            assert h0.get(k) == pytest.approx(h.get(k), rel=1e-5), (h["stage"], k)
    assert len(ref_state) > 10
    for k in ref_state:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
        torch.testing.assert_close(r0["state"][k], ref_state[k], rtol=1e-4, atol=1e-5)
