"""The retrieve stage: data set -> protocol -> next-item samples -> a retriever (parallel-sid or
TIGER over a SID table, SASRec over item ids, or the popularity / content-kNN baselines; built
by mmsid.retrieval.models) -> Recall/NDCG@K on validation and test, per slice. Evaluation always
runs in fp32 (``amp`` is for training). Its settings: mmsid.retrieval.config.RetrieveConfig.

Run folder: ``config.yaml``, ``metrics.json``, ``ranks.npz`` (each evaluated user's target and
its 0-based rank in the top ``max(ks)``, -1 when absent: the paired comparisons read it),
``trained_on.npz`` (the guard's record), ``fused_ranks.npz`` (the same for content fusion,
when a fusion grid is given: mmsid.retrieval.fusion), ``model.pt`` (best validation state),
``checkpoints/last.pt`` (resume; re-running the same command continues, and a larger
``epochs`` extends a finished run), ``curves.png``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from mmsid import distributed
from mmsid.artefacts import sealing
from mmsid.errors import ConfigError, DataError
from mmsid.eval.retrieval import retrieval_metrics, target_rank
from mmsid.io import save_npz, save_torch, stable_hash, write_json
from mmsid.protocol import load_protocol
from mmsid.retrieval.baselines import ContentKNN, Popularity, item_content
from mmsid.retrieval.config import BUDGET_KEYS, UNTRAINED, RetrieveConfig, check_config
from mmsid.retrieval.data import NextItemSplit, RetrievalData, build_retrieval
from mmsid.retrieval.models import build_trainable
from mmsid.training import LoopConfig, train


def recommend_all(
    model: torch.nn.Module,
    split: NextItemSplit,
    k: int,
    *,
    beam: int,
    batch_size: int,
    device: str,
    progress: bool = False,
) -> np.ndarray:
    """(M, k) top-k item ids for every row of ``split`` (rows batched by history length). In a
    multi-process run each rank scores every world-th row of that order and every rank gets
    the gathered whole."""
    from tqdm.auto import tqdm

    ctx = distributed.context()
    model.eval()
    order = np.argsort((split.history >= 0).sum(1), kind="stable")
    mine = order[ctx.rank :: ctx.world]  # interleaved: ranks get alike history lengths
    top = np.empty((len(mine), k), dtype=np.int64)
    for s in tqdm(
        range(0, len(mine), batch_size),
        desc="recommend",
        disable=not progress or not ctx.main,
        unit="batch",
        leave=False,
    ):
        idx = mine[s : s + batch_size]
        items, _ = model.recommend(
            {
                "user": torch.from_numpy(split.user[idx]).to(device),
                "history": torch.from_numpy(split.history[idx]).to(device),
            },
            k,
            beam=beam,
        )
        top[s : s + len(idx)] = items.cpu().numpy()
    out = np.empty((len(split), k), dtype=np.int64)
    rows = distributed.gather_rows(np.concatenate([mine[:, None], top], axis=1))  # one gather
    out[rows[:, 0]] = rows[:, 1:]
    return out


def evaluate(
    model,
    split: NextItemSplit,
    data: RetrievalData,
    cfg: RetrieveConfig,
    device: str,
    progress: bool = False,
    *,
    ranks: bool = False,
):
    """Metrics per slice, in fp32 (bf16 scores reorder top-k lists: evaluation never uses
    them). ``ranks``: also return each user's 0-based target rank (-1 when absent)."""
    top = recommend_all(
        model,
        split,
        max(cfg.ks),
        beam=cfg.beam,
        batch_size=cfg.eval_batch_size,
        device=device,
        progress=progress,
    )
    m = retrieval_metrics(top, split.target, ks=cfg.ks, slices=data.slices(split.target))
    return (m, target_rank(top, split.target)) if ranks else m


def _check_data(cfg: RetrieveConfig, data: RetrievalData) -> None:
    if max(cfg.ks) > data.n_items:
        raise ConfigError(f"K = {max(cfg.ks)} exceeds the catalogue ({data.n_items} items)")
    for name in ("train", "valid", "test"):
        h = getattr(data, name).history
        if h.max(initial=-1) >= data.n_items:
            raise DataError(
                f"{name} histories hold item ids outside the catalogue "
                f"(max {int(h.max())}, {data.n_items} items)"
            )


@sealing
def run_retrieve(cfg: RetrieveConfig, *, progress: bool = True) -> dict:
    from mmsid.device import start_run

    check_config(cfg)
    out, device = start_run(cfg)
    t0 = time.perf_counter()
    proto = load_protocol(cfg.dataset, cfg.data_dir, cfg.protocol)
    data = build_retrieval(proto)
    _check_data(cfg, data)
    torch.manual_seed(cfg.seed)
    g = np.random.default_rng(cfg.seed)
    if cfg.model in UNTRAINED:
        return _run_untrained(cfg, data, out, device, t0, progress)
    vsub = data.valid
    if cfg.valid_sample and len(vsub) > cfg.valid_sample:
        vsub = vsub.take(np.sort(g.choice(len(vsub), cfg.valid_sample, replace=False)))
    # what the model trains on, checked by the protocol's guard before any step
    proto.record(
        out / "trained_on.npz",
        rows=data.train_rows,
        items=np.concatenate([data.train.target, data.train.history.ravel()]),
    )
    t = build_trainable(cfg, data, device)
    model, batches, make_batch = t.model, t.batches, t.make_batch
    model.to(device)
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in BUDGET_KEYS}
    # the SID table's content, not its path: a table re-made at the same path must not resume
    # a model trained on the old IDs, and a run folder moved elsewhere must
    key = stable_hash({**settings, "sid_content": t.content_key})
    loop = LoopConfig(
        epochs=cfg.epochs,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        eval_every=cfg.eval_every,
        patience=cfg.patience,
        min_epochs=cfg.min_epochs,
        max_minutes=cfg.max_minutes,
        amp=cfg.amp,
        schedule=cfg.schedule,
        warmup_steps=cfg.warmup_steps,
        optimizer=cfg.optimizer,
        max_steps=cfg.max_steps,
        seed=cfg.seed,
        log_steps=cfg.log_steps,
    )
    history = train(
        model,
        loop,
        batches=batches,
        make_batch=make_batch,
        evaluate=lambda m: evaluate(m, vsub, data, cfg, device)["all"],
        select=cfg.select,
        device=device,
        checkpoint=out / "checkpoints" / "last.pt",
        run_key=key,
        progress=progress,
        desc=cfg.model,
    )
    # training + validation time summed over every invocation (the loop carries it across
    # resumes)
    t_train = history[-1]["elapsed"] if history else 0.0
    t1 = time.perf_counter()
    res = _finish(cfg, model, data, out, device, progress)
    if cfg.fusion_grid:
        res["fused"] = _fuse(cfg, model, data, out, device, progress)
    else:  # an earlier invocation's fusion no longer describes this run
        (out / "fused_ranks.npz").unlink(missing_ok=True)
    res.update(
        samples={"train": t.n_train, "valid": len(data.valid), "test": len(data.test)},
        history=history,
        epochs_run=len(history),
        stopped=history[-1].get("stopped") if history else None,
        best_epoch=_best_epoch(history, cfg.select),
        train_seconds=t_train,
        eval_seconds=time.perf_counter() - t1,
        parameters=int(sum(p.numel() for p in model.parameters())),
    )
    save_torch(out / "model.pt", {"state": model.state_dict(), "config": dataclasses.asdict(cfg)})
    write_json(out / "metrics.json", res)
    _plot(out, history, cfg.select)
    return res


def _finish(
    cfg: RetrieveConfig,
    model,
    data: RetrievalData,
    out: Path,
    device,
    progress,
    name: str = "ranks",
    valid: tuple | None = None,
) -> dict:
    """Validation and test metrics in fp32; writes ``{name}.npz``. ``valid``: the validation
    (metrics, ranks) when already computed."""
    if valid is None:
        valid = evaluate(model, data.valid, data, cfg, device, progress, ranks=True)
    valid, v_rank = valid
    test, t_rank = evaluate(model, data.test, data, cfg, device, progress, ranks=True)
    masks = data.slices(data.test.target)
    save_npz(
        out / f"{name}.npz",
        slice_names=np.array(list(masks)),
        test_masks=np.stack(list(masks.values())),
        valid_user=data.valid.user,
        valid_target=data.valid.target,
        valid_rank=v_rank,
        test_user=data.test.user,
        test_target=data.test.target,
        test_rank=t_rank,
        ks=np.array(cfg.ks),
    )
    return {
        "dataset": cfg.dataset,
        "model": cfg.model,
        "sids": cfg.sids,
        "protocol": data.protocol.summary(),
        "valid": valid,
        "test": test,
        "seed": cfg.seed,
        "device": device,
    }


def _content(cfg: RetrieveConfig) -> np.ndarray:
    """(N, d) item content: the configured modalities' L2-normalised concatenation."""
    return item_content(cfg.dataset, cfg.data_dir, cfg.modalities, cfg.center)[0]


def _fuse(cfg: RetrieveConfig, model, data: RetrievalData, out: Path, device, progress) -> dict:
    """Content fusion: (w, b) from the grid by ``select`` on the whole validation split (every
    grid point from one pass over the users; ``fusion_tolerance``: fusion.choose_point), then
    test at that point; writes ``fused_ranks.npz``. ``grid`` records each point's validation
    ``select`` per slice."""
    from mmsid.retrieval.fusion import ContentFusion, FusionGrid, choose_point

    fused = ContentFusion(model, _content(cfg), 0.0).to(device)  # one content table
    grid, k, split = cfg.fusion_grid, max(cfg.ks), data.valid
    tops = recommend_all(
        FusionGrid(fused, grid),
        split,
        k * len(grid),
        beam=cfg.beam,
        batch_size=cfg.eval_batch_size,
        device=device,
        progress=progress,
    ).reshape(len(split), len(grid), k)
    slices = data.slices(split.target)
    on_valid = [
        retrieval_metrics(tops[:, g], split.target, ks=cfg.ks, slices=slices)
        for g in range(len(grid))
    ]
    best = choose_point(on_valid, cfg.select, cfg.fusion_tolerance)
    fused.weight, fused.new_item_bias = grid[best]
    valid = (on_valid[best], target_rank(tops[:, best], split.target))
    res = _finish(cfg, fused, data, out, device, progress, "fused_ranks", valid=valid)
    return {
        "weight": fused.weight,
        "new_item_bias": fused.new_item_bias,
        "tolerance": cfg.fusion_tolerance,
        "grid": [
            {"weight": w, "new_item_bias": b, "valid": {n: v[cfg.select] for n, v in m.items()}}
            for (w, b), m in zip(grid, on_valid, strict=True)
        ],
        "valid": res["valid"],
        "test": res["test"],
    }


def _run_untrained(cfg: RetrieveConfig, data: RetrievalData, out: Path, device, t0, progress):
    """Popularity (counts of the training interactions) and content-kNN (item content only:
    it trains on nothing)."""
    proto = data.protocol
    if cfg.model == "popularity":
        model = Popularity(proto.popularity)
        proto.record(out / "trained_on.npz", rows=proto.train_rows, items=proto.train["item"])
    else:
        model = ContentKNN(_content(cfg))
        proto.record(out / "trained_on.npz", rows=np.zeros(0, np.int64), items=np.zeros(0))
    model.to(device)
    t1 = time.perf_counter()
    res = _finish(cfg, model, data, out, device, progress)
    res.update(
        samples={"train": 0, "valid": len(data.valid), "test": len(data.test)},
        history=[],
        epochs_run=0,
        best_epoch=None,
        train_seconds=t1 - t0,
        eval_seconds=time.perf_counter() - t1,
        parameters=0,
    )
    write_json(out / "metrics.json", res)
    return res


def _best_epoch(history: list[dict], select: str) -> int | None:
    rows = [h for h in history if "valid" in h]
    return max(rows, key=lambda h: h["valid"][select])["epoch"] if rows else None


def _plot(out: Path, history: list[dict], select: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mmsid.io import save_png

    fig, ax = plt.subplots(1, 2, figsize=(8, 3))
    ax[0].plot([h["epoch"] for h in history], [h["train_loss"] for h in history], marker="o")
    ax[0].set_title("train loss")
    v = [h for h in history if "valid" in h]
    ax[1].plot([h["epoch"] for h in v], [h["valid"][select] for h in v], marker="o")
    ax[1].set_title(f"validation {select}")
    for a in ax:
        a.set_xlabel("epoch")
    fig.tight_layout()
    save_png(fig, out / "curves.png")
