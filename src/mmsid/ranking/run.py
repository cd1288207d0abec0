"""The rank stage: data set -> protocol -> CTR samples -> model (popularity, DIN, DIN + SID,
MCCA) -> metrics + plots.

Run folder: ``config.yaml``, ``metrics.json`` (validation and test, per slice, with the
protocol's sizes), ``scores.npz`` (every validation/test sample's user, item, label and score:
the paired comparisons read it), ``trained_on.npz`` (the interaction rows and items it trained
on, checked by the protocol's guard), ``model.pt`` (best state), ``checkpoints/last.pt``
(resume), ``curves.png``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmsid.artefacts import sealing
from mmsid.config import check_ranges
from mmsid.errors import ConfigError
from mmsid.ids import load_sid_sets, table_codes
from mmsid.io import save_npz, save_torch, stable_hash, write_json
from mmsid.protocol import ProtocolConfig, load_protocol
from mmsid.ranking.samples import CTRConfig, build_ctr, training_record
from mmsid.ranking.train import TrainConfig, fit, metrics, predict

MODELS = ("popularity", "din", "din-sid", "mcca")


@dataclass
class RankConfig:
    dataset: str
    model: str = "din"
    out: str = "runs/rank"
    sids: dict[str, str] = field(default_factory=dict)  # SID set name -> sids.parquet
    joint: str = "joint"  # which SID set is modal-joint (MCCA's shared query)
    label: str = "sampled"
    neg_ratio: int = 1
    negatives: str = "popularity"  # popularity | uniform (see ranking.samples)
    epochs: int = 20  # with early stopping on validation AUC; 1 + patience 0 = the paper
    patience: int = 2
    batch_size: int = 1024
    lr: float = 1e-3
    seed: int = 0
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    device: str = "cpu"
    data_dir: str | None = None

    def __post_init__(self) -> None:
        check_ranges(
            self,
            neg_ratio=(1, None),
            epochs=(1, None),
            patience=(0, None),
            batch_size=(1, None),
            lr=(1e-12, 10.0),
        )


def load_sets(name: str, path: str | Path, n_items: int) -> dict[str, tuple[np.ndarray, int]]:
    """SID sets of one file: a single table gives {name: ...}; a multi-set file (tokenize
    --per-modality) gives every set it holds, under its own names."""
    sets = load_sid_sets(path)
    if len(sets) == 1:
        return {name: table_codes(next(iter(sets.values())), path, n_items)}
    return {n: table_codes(t, path, n_items) for n, t in sets.items()}


@sealing
def run_rank(cfg: RankConfig, *, progress: bool = True) -> dict:
    import torch

    from mmsid.device import start_run
    from mmsid.ranking.din import DIN
    from mmsid.ranking.mcca import MCCA

    if cfg.model not in MODELS:
        raise ConfigError(f"unknown ranking model '{cfg.model}'; choose one of {MODELS}")
    if cfg.model in ("din-sid", "mcca") and not cfg.sids:
        raise ConfigError(f"model '{cfg.model}' needs --sids NAME=PATH (at least one SID table)")
    out, device = start_run(cfg)
    t0 = time.perf_counter()
    proto = load_protocol(cfg.dataset, cfg.data_dir, cfg.protocol)
    data = build_ctr(
        proto, CTRConfig(neg_ratio=cfg.neg_ratio, negatives=cfg.negatives, label=cfg.label)
    )
    base = {
        "dataset": cfg.dataset,
        "model": cfg.model,
        "protocol": proto.summary(),
        "samples": {s: int(len(getattr(data, s).item)) for s in ("train", "valid", "test")},
        "seed": cfg.seed,
    }
    if cfg.model == "popularity":
        # training counts as the score: no parameters, no training, no probabilities
        scores = {s: proto.popularity[getattr(data, s).item].astype(np.float64) for s in SPLITS}
        rows, items = training_record(data)
        proto.record(out / "trained_on.npz", rows=rows, items=items)
        res = {
            **base,
            "sid_sets": [],
            **{s: metrics(getattr(data, s), scores[s], data, probabilistic=False) for s in SPLITS},
            "history": [],
            "seconds": time.perf_counter() - t0,
            "parameters": 0,
        }
        _save_scores(out, data, scores)
        write_json(out / "metrics.json", res)
        return res
    sids = {
        k: v for name, p in cfg.sids.items() for k, v in load_sets(name, p, proto.n_items).items()
    }
    K = max((k for _, k in sids.values()), default=256)
    codes = {name: c for name, (c, _) in sids.items()}
    torch.manual_seed(cfg.seed)
    if cfg.model == "din":
        model = DIN(proto.n_items)
    elif cfg.model == "din-sid":
        model = DIN(proto.n_items, sids=codes, codebook_size=K)
    else:
        joint = cfg.joint if cfg.joint in codes else next(iter(codes))
        model = MCCA(proto.n_items, codes, joint=joint, codebook_size=K)
    tcfg = TrainConfig(
        epochs=cfg.epochs,
        patience=cfg.patience,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        seed=cfg.seed,
    )
    settings = {
        k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("out", "device", "data_dir")
    }
    settings["sids"] = sorted(cfg.sids)  # names; the content is hashed below, not the paths
    # the SID tables' content, not their paths: a table re-made at the same path must not
    # resume a model trained on the old IDs, and a run folder moved elsewhere must
    key = stable_hash({**settings, "sid_content": stable_hash(codes)})
    rows, items = training_record(data)
    proto.record(out / "trained_on.npz", rows=rows, items=items)
    history = fit(
        model,
        data,
        tcfg,
        device=device,
        checkpoint=out / "checkpoints" / "last.pt",
        run_key=key,
        progress=progress,
    )
    scores = {s: predict(model, getattr(data, s), device=device) for s in SPLITS}
    res = {
        **base,
        "sid_sets": list(codes),
        **{s: metrics(getattr(data, s), scores[s], data) for s in SPLITS},
        "history": history,
        "epochs_run": len(history),
        "stopped": history[-1].get("stopped") if history else None,
        "seconds": time.perf_counter() - t0,
        "parameters": int(sum(p.numel() for p in model.parameters())),
    }
    save_torch(out / "model.pt", {"state": model.state_dict(), "config": dataclasses.asdict(cfg)})
    _save_scores(out, data, scores)
    write_json(out / "metrics.json", res)
    _plot(out, history)
    return res


SPLITS = ("valid", "test")


def _save_scores(out: Path, data, scores: dict[str, np.ndarray]) -> None:
    masks = data.slices(data.test.item)
    arrays = {"slice_names": np.array(list(masks)), "test_masks": np.stack(list(masks.values()))}
    for s in SPLITS:
        sp = getattr(data, s)
        arrays.update({f"{s}_user": sp.user, f"{s}_item": sp.item, f"{s}_label": sp.label})
        arrays[f"{s}_score"] = np.asarray(scores[s], dtype=np.float64)
    save_npz(out / "scores.npz", **arrays)


def _plot(out: Path, history: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mmsid.io import save_png

    fig, ax = plt.subplots(1, 2, figsize=(8, 3))
    ep = [h["epoch"] for h in history]
    ax[0].plot(ep, [h["train_loss"] for h in history], marker="o")
    ax[0].set_title("train BCE")
    ax[1].plot(ep, [h["valid_auc"] for h in history], marker="o", label="AUC")
    ax[1].plot(ep, [h["valid_gauc"] for h in history], marker="o", label="GAUC")
    ax[1].set_title("validation")
    ax[1].legend()
    for a in ax:
        a.set_xlabel("epoch")
    fig.tight_layout()
    save_png(fig, out / "curves.png")
