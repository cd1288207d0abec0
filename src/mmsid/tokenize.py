"""The tokenize stage: data set -> content features -> fitted tokenizer -> SID table + metrics.

Writes a run folder: ``config.yaml``, ``sids.parquet``, ``tokenizer.pt``, ``metrics.json``,
``code_usage.png`` (and ``loss_curve.png`` for trained tokenizers), ``checkpoints/``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmsid.data import load_dataset
from mmsid.errors import ConfigError
from mmsid.features import ItemFeatures, build_features
from mmsid.ids import SIDTable
from mmsid.io import write_json

# Baseline input per data set: the concatenation of these L2-normalised modalities.
# lfm2k-mm: the shipped MiniLM tag features stand for text (same encoder as ours).
DEFAULT_MODALITIES = {
    "ml100k-mm": ["text", "image"],
    "lfm2k-mm": ["text_minilm", "audio_vggish", "audio_whisper"],
    "amazon-beauty": ["text"],
}


@dataclass
class TokenizeConfig:
    dataset: str
    method: str = "rq-kmeans"
    out: str = "runs/tokenize"
    modalities: list[str] = field(default_factory=list)  # empty = DEFAULT_MODALITIES
    levels: int = 3
    codebook_size: int = 256
    seed: int = 0
    epochs: int = 200  # trained tokenizers only
    alpha: float = 1.0  # psrq: weight of the prefix semantic feature
    device: str = "cpu"
    data_dir: str | None = None
    collision_cap: int | None = None  # default: codebook_size
    per_modality: bool = False  # also fit one tokenizer per modality -> sid_sets.parquet


def concat_features(feats: ItemFeatures, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(N, sum d) concatenation of the named modalities (absent rows are zero) and the mask of
    items that have at least one of them."""
    x = np.concatenate([feats.embeddings[n] for n in names], axis=1)
    mask = np.logical_or.reduce([feats.masks[n] for n in names])
    return x, mask


def run_tokenize(cfg: TokenizeConfig, *, progress: bool = True) -> dict:
    from mmsid.device import start_run
    from mmsid.eval.codebook import codebook_report, coherence

    out, device = start_run(cfg)

    t0 = time.perf_counter()
    ds = load_dataset(cfg.dataset, cfg.data_dir)
    names = cfg.modalities or DEFAULT_MODALITIES.get(cfg.dataset, list(ds.modalities))
    feats = build_features(ds, modalities=names, device=device, progress=progress)
    x, mask = concat_features(feats, names)
    t_feat = time.perf_counter() - t0

    t1 = time.perf_counter()
    tok = _fit_tokenizer(cfg, x, device, out / "checkpoints" / "tokenizer.pt", progress)
    t_fit = time.perf_counter() - t1
    codes = tok.transform(x, device=device)
    table = _table(cfg, tok, codes, ds.items["item"].to_numpy())
    table.save(out / "sids.parquet")
    tok.save(out / "tokenizer.pt")
    if cfg.per_modality and len(names) > 1:
        from mmsid.ids import save_sid_sets

        sets = {"joint": table}
        for n in names:
            xm = feats.embeddings[n]
            t_m = _fit_tokenizer(
                cfg, xm, device, out / "checkpoints" / f"tokenizer-{n}.pt", progress
            )
            sets[n] = _table(
                cfg, t_m, t_m.transform(xm, device=device), ds.items["item"].to_numpy()
            )
            t_m.save(out / f"tokenizer-{n}.pt")
        save_sid_sets(out / "sid_sets.parquet", sets)

    metrics = {
        "dataset": cfg.dataset,
        "method": cfg.method,
        "modalities": names,
        "input_dim": int(x.shape[1]),
        "items_with_content": int(mask.sum()),
        **codebook_report(codes, cfg.codebook_size, x, mask),
        "unique_after_collision_level": int(len(np.unique(table.sids, axis=0))),
        "max_collision_index": int(table.collision.max()),
        "coherence_by_modality": {
            n: coherence(feats.embeddings[n], codes, mask=feats.masks[n]) for n in names
        },
        "seconds": {"features": t_feat, "fit": t_fit},
        "config_hash": tok.config_hash(),
    }
    if cfg.per_modality and len(names) > 1:
        metrics["sid_sets"] = ["joint", *names]
    if cfg.method == "rq-vae":
        import torch

        metrics["reconstruction_mse"] = tok.reconstruction_error(torch.as_tensor(x).to(device))
        metrics["history_last"] = tok.history[-1]
    write_json(out / "metrics.json", metrics)
    _plots(out, codes, cfg.codebook_size, tok.history if cfg.method == "rq-vae" else None)
    return metrics


def _fit_tokenizer(
    cfg: TokenizeConfig, x: np.ndarray, device: str, checkpoint: Path, progress: bool
):
    from mmsid.quantizers import tokenizer_for

    common = {"levels": cfg.levels, "codebook_size": cfg.codebook_size, "seed": cfg.seed}
    if cfg.method == "rq-kmeans":
        return tokenizer_for("rq-kmeans", **common).fit(x)
    if cfg.method == "psrq":
        return tokenizer_for("psrq", **common, alpha=cfg.alpha).fit(x)
    if cfg.method == "rq-vae":
        return tokenizer_for("rq-vae", **common, epochs=cfg.epochs).fit(
            x, device=device, checkpoint=checkpoint, progress=progress
        )
    raise ConfigError(f"unknown tokenizer method '{cfg.method}'; choose rq-kmeans, rq-vae or psrq")


def _table(cfg: TokenizeConfig, tok, codes: np.ndarray, item_ids: np.ndarray) -> SIDTable:
    return SIDTable.from_codes(
        codes,
        item_ids,
        config_hash=tok.config_hash(),
        codebook_size=cfg.codebook_size,
        collision_cap=cfg.collision_cap or cfg.codebook_size,
    )


def _plots(out: Path, codes: np.ndarray, K: int, history: list[dict] | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mmsid.io import atomic_path

    L = codes.shape[1]
    fig, axes = plt.subplots(1, L, figsize=(4 * L, 3), squeeze=False)
    for lvl in range(L):
        counts = np.sort(np.bincount(codes[:, lvl], minlength=K))[::-1]
        axes[0, lvl].bar(np.arange(K), counts, width=1.0)
        axes[0, lvl].set_title(f"level {lvl}: {int((counts > 0).sum())}/{K} codes used")
        axes[0, lvl].set_xlabel("code (sorted by use)")
    axes[0, 0].set_ylabel("items")
    fig.tight_layout()
    with atomic_path(out / "code_usage.png") as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    if history:
        fig, ax = plt.subplots(figsize=(5, 3))
        for key in ("reconstruction", "codebook", "commitment"):
            if key in history[0]:
                ax.plot([h["epoch"] for h in history], [h[key] for h in history], label=key)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.legend()
        fig.tight_layout()
        with atomic_path(out / "loss_curve.png") as tmp:
            fig.savefig(tmp, format="png", dpi=80)
        plt.close(fig)
