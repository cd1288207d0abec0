"""The tokenize stage: data set -> content features -> fitted tokenizer -> SID table + metrics.

Tokenizers are fitted on the protocol's warm items only (mmsid.protocol): cold items get their
IDs afterwards from ``transform``, as a new item would in production. MMQ's behaviour
fine-tuning reads the protocol's training transitions only. ``trained_on.npz`` records both
(the items whose content was fitted, the interaction rows of the behaviour pairs).

Writes a run folder: ``config.yaml``, ``sids.parquet``, ``tokenizer.pt``, ``metrics.json``,
``inputs.npz`` and ``ids.sqlite`` (what new items need for their IDs: mmsid.assign),
``code_usage.png`` (and ``loss_curve.png`` for trained tokenizers), ``checkpoints/``; MMQ adds
``gate_usage.png`` and, with behavior fine-tuning, ``sids_stage1.parquet`` (the IDs before it)
and ``sids_control.parquet`` (fine-tuned with behavior weight 0: mmsid.tokenize_mmq).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmsid import distributed
from mmsid.artefacts import sealing
from mmsid.config import check_ranges
from mmsid.data import load_dataset
from mmsid.errors import ConfigError, DataError
from mmsid.features import build_features
from mmsid.features.inputs import DEFAULT_MODALITIES, center_means, concat_features
from mmsid.ids import SIDTable
from mmsid.io import write_json
from mmsid.protocol import ProtocolConfig, load_protocol
from mmsid.tokenize_mmq import finetune_with_control, gate_plot, mmq_settings

# PSRQ's prefix weight for every entry point (mmsid tokenize, mmsid run, the benchmarks). The
# paper's 1.0 makes deep levels mostly repeat the prefix, so many items share a SID (README,
# semantic_drift.md; ml100k-mm's 3-level fit then breaks the collision cap); 0.25 keeps deep
# levels discriminative. PSRQConfig keeps the paper's 1.0 as the algorithm's own default.
PSRQ_ALPHA = 0.25


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
    alpha: float = PSRQ_ALPHA  # psrq: weight of the prefix semantic feature
    # opq / pq: quantize the top pca_dim principal axes of the input (0: the input as is),
    # each scaled to unit variance when pca_whiten (RPG's tokenizer; quantizers.opq)
    pca_dim: int = 0
    pca_whiten: bool = True
    device: str = "cpu"
    data_dir: str | None = None
    collision_cap: int | None = None  # default: codebook_size
    per_modality: bool = False  # also fit one tokenizer per modality -> sid_sets.parquet
    # MMQ only
    finetune: str | None = None  # "behavior": stage 2 on training-split transitions
    ablation: str = "none"  # tokenize_mmq.ABLATIONS
    finetune_epochs: int = 20
    finetune_pairs: int = 20000  # behavior pairs per stage-2 epoch (0 = all)
    lambda_orth: float = 0.1
    n_shared: int = 2  # experts over all modalities
    n_specific: int = 2  # experts per modality
    expert_levels: int = 1  # residual levels of each expert's quantizer (ID length)
    gate_balance: float = 0.1  # MMQConfig.gate_balance
    gate_sharpness: float = 0.1
    finetune_control: bool = True  # stage 2 again with behavior weight 0 (sids_control.parquet)
    # subtract each modality's mean over the fitted items that have it, then L2-normalise
    # again. On by default: lfm2k-mm's audio embeddings point almost the same way (random-pair
    # cosine ~0.97), which left MMQ's two audio_vggish experts using 38% of their codes after
    # stage 1 and 2-3% after fine-tuning; centred, every expert uses >= 98% on the three data
    # sets (benchmarks/results/mmq_health.md). Every tokenizer reads the same input, so the
    # baselines are centred too. The papers feed the encoders' output as is: --no-center.
    center: bool = True
    # fit on this seeded share of the warm items (the rest get IDs from transform, as new
    # items would): e.g. 0.9 to simulate the catalogue of an earlier month
    fit_fraction: float = 1.0
    # stable IDs across retrains (mmsid.align): a previous tokenize run of this data set;
    # RQ-KMeans, RQ-VAE, MMQ and (O)PQ warm-start from its fit (codebooks, weights,
    # rotation), every method relabels its codes to agree with the previous run's on the
    # items both hold
    align_to: str | None = None
    log_steps: bool = False  # rq-vae / mmq: keep every step's loss in the history
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)

    def __post_init__(self) -> None:
        check_ranges(
            self,
            levels=(1, None),
            codebook_size=(2, None),
            epochs=(1, None),
            alpha=(0.0, None),
            pca_dim=(0, None),
            finetune_epochs=(1, None),
            finetune_pairs=(0, None),
            lambda_orth=(0.0, None),
            n_shared=(0, None),
            n_specific=(0, None),
            expert_levels=(1, None),
            gate_balance=(0.0, None),
            gate_sharpness=(0.0, None),
            fit_fraction=(1e-6, 1.0),
        )
        if self.collision_cap is not None:
            check_ranges(self, collision_cap=(1, None))
        if self.pca_dim and self.method not in ("opq", "pq"):
            raise ConfigError(
                f"pca_dim {self.pca_dim}: only opq and pq project their input first; "
                f"drop it for {self.method}"
            )


# methods whose fit can start from a previous fit (--align-to); the others only relabel
WARM_STARTS = ("rq-kmeans", "rq-vae", "mmq", "opq", "pq")


@sealing
def run_tokenize(cfg: TokenizeConfig, *, progress: bool = True) -> dict:
    from mmsid.assign import INPUTS, RunInputs, seed_store
    from mmsid.device import start_run
    from mmsid.eval.codebook import codebook_report, coherence
    from mmsid.features import item_content_hashes

    previous = _previous_run(cfg) if cfg.align_to else None  # checked before writing
    out, device = start_run(cfg)

    t0 = time.perf_counter()
    ds = load_dataset(cfg.dataset, cfg.data_dir)
    proto = load_protocol(cfg.dataset, cfg.data_dir, cfg.protocol)
    warm = proto.warm_items  # the items whose content the tokenizer may fit on
    if cfg.fit_fraction < 1.0:
        rng = np.random.default_rng(cfg.seed)
        warm = np.sort(rng.choice(warm, max(1, round(cfg.fit_fraction * len(warm))), replace=False))
    names = cfg.modalities or DEFAULT_MODALITIES.get(cfg.dataset, list(ds.modalities))
    if cfg.method == "mmq" and len(names) == 1:
        warnings.warn(
            f"MMQ reads one modality ('{names[0]}'), so its shared and specific experts see the "
            "same input; give it two or more modalities or views (tokenize --modality A "
            "--modality B, run --set tokenizer.modalities=A,B; on amazon-beauty: title and "
            "categories)",
            stacklevel=2,
        )
    feats = build_features(ds, modalities=names, device=device, progress=progress)
    means = center_means(feats, names, warm) if cfg.center else {}
    x, mask = concat_features(feats, names, means=means)
    t_feat = time.perf_counter() - t0

    t1 = time.perf_counter()
    dims = tuple(int(feats.embeddings[n].shape[1]) for n in names)
    if cfg.finetune and cfg.method != "mmq":
        raise ConfigError("--finetune applies to --method mmq only")
    if cfg.finetune not in (None, "behavior"):
        raise ConfigError(f"unknown fine-tuning '{cfg.finetune}'; the one available is 'behavior'")
    pair_rows = np.zeros((0, 2), np.int64)
    if cfg.finetune == "behavior":
        pairs, pair_rows = proto.transitions()
    proto.record(
        out / "trained_on.npz",
        rows=pair_rows,
        items=np.concatenate([warm, pairs.ravel()]) if cfg.finetune else warm,
    )
    x_fit = x[warm]
    warm_start = previous[0] if previous and cfg.method in WARM_STARTS else None
    tok = _fit_tokenizer(
        cfg, x_fit, device, out / "checkpoints" / "tokenizer.pt", progress, dims, warm_start
    )
    extra: dict = {"fitted_items": int(len(warm)), "cold_items": int(len(proto.cold_items))}
    if cfg.method == "mmq":
        extra["stage1"] = tok.diagnostics(x, names)
        if cfg.finetune == "behavior":
            warm_row = np.full(proto.n_items, -1, dtype=np.int64)
            warm_row[warm] = np.arange(len(warm))
            # item ids -> rows of x_fit (every pair item is warm); writes the stage-1 and the
            # control's IDs too, so one run gives every row of the comparison
            extra["stage2"] = finetune_with_control(
                cfg,
                tok,
                x,
                x_fit,
                warm_row[pairs],
                out,
                lambda t, c: _table(cfg, t, c, ds.items["item"].to_numpy()),
                device,
                progress,
                names,
            )
    if previous is not None:
        extra["alignment"] = _align(tok, previous, x, ds.items["item"].to_numpy(), device)
        extra["alignment"]["warm_start"] = warm_start is not None
    t_fit = time.perf_counter() - t1
    codes = tok.transform(x, device=device)
    table = _table(cfg, tok, codes, ds.items["item"].to_numpy())
    table.save(out / "sids.parquet")
    tok.save(out / "tokenizer.pt")
    # what new items need to get IDs from this run without retraining (mmsid.assign)
    RunInputs(
        names,
        [ds.modalities[n].kind for n in names],
        list(dims),
        [feats.encoders[n] for n in names],
        means,
    ).save(out / INPUTS)
    if distributed.context().main:  # one writer (the store is SQLite, not an atomic file)
        seed_store(
            out,
            table.item_ids,
            codes,
            item_content_hashes([ds.modalities[n] for n in names]),
            codebook_size=cfg.codebook_size,
            cap=cfg.collision_cap or cfg.codebook_size,
            note=f"mmsid tokenize --method {cfg.method} --seed {cfg.seed}",
            previous=cfg.align_to,  # the store keeps the previous versions: old -> new by item
        )
    if cfg.per_modality:
        from mmsid.ids import save_sid_sets

        # with one modality its specific set would be the joint set (same input, same seed),
        # so the file holds "joint" only; consumers (MCCA) read whatever sets it has
        sets = {"joint": table}
        offsets = np.cumsum([0, *dims])
        for i, n in enumerate(names if len(names) > 1 else []):
            xm = x[:, offsets[i] : offsets[i + 1]]  # this modality's block (centered if asked)
            t_m = _fit_tokenizer(
                cfg, xm[warm], device, out / "checkpoints" / f"tokenizer-{n}.pt", progress
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
    if cfg.per_modality:
        metrics["sid_sets"] = ["joint", *names] if len(names) > 1 else ["joint"]
    metrics.update(extra)
    if cfg.method == "rq-vae":
        import torch

        metrics["reconstruction_mse"] = tok.reconstruction_error(torch.as_tensor(x).to(device))
        metrics["history_last"] = tok.history[-1]
    if cfg.log_steps and cfg.method in ("rq-vae", "mmq"):
        metrics["history"] = tok.history  # every epoch, with its steps' losses
    write_json(out / "metrics.json", metrics)
    _plots(out, codes, cfg.codebook_size, tok.history if cfg.method in ("rq-vae", "mmq") else None)
    if cfg.method == "mmq":
        gate_plot(out, extra)
    return metrics


METHODS = ("rq-kmeans", "rq-vae", "psrq", "mmq", "opq", "pq")


def _previous_run(cfg: TokenizeConfig):
    """(tokenizer, SID table) of ``cfg.align_to``, checked to be comparable."""
    from mmsid.quantizers import Tokenizer

    prev = Path(cfg.align_to)
    for f in ("tokenizer.pt", "sids.parquet"):
        if not (prev / f).is_file():
            raise ConfigError(f"--align-to {prev}: no {f}; give a folder `mmsid tokenize` wrote")
    tok, table = Tokenizer.load(prev / "tokenizer.pt"), SIDTable.load(prev / "sids.parquet")
    levels = cfg.levels  # MMQ: the SID length its expert layout gives (on the same modalities)
    if cfg.method == "mmq" and tok.method == "mmq":
        from mmsid.quantizers import tokenizer_for

        levels = tokenizer_for("mmq", **mmq_settings(cfg, tuple(tok.cfg.modality_dims))).levels
    if tok.method != cfg.method or (tok.levels, tok.codebook_size) != (
        levels,
        cfg.codebook_size,
    ):
        raise ConfigError(
            f"--align-to {prev}: a {tok.method} tokenizer of {tok.levels} x {tok.codebook_size} "
            f"codes; aligning needs the same method and shape ({cfg.method}, {levels} x "
            f"{cfg.codebook_size})"
        )
    return tok, table


def _align(tok, previous, x: np.ndarray, item_ids: np.ndarray, device: str) -> dict:
    """Relabel ``tok``'s codes to agree with the previous run's on the shared items."""
    from mmsid.align import changed, match_codes, relabel

    _, table = previous
    rows = {v: i for i, v in enumerate(item_ids.tolist())}
    shared = [(rows[i], j) for j, i in enumerate(table.item_ids.tolist()) if i in rows]
    if not shared:
        raise DataError("--align-to: the previous run holds none of this catalogue's items")
    mine, theirs = (np.asarray(c) for c in zip(*shared))
    old = table.codes[theirs]
    raw = tok.transform(x[mine], device=device)
    tok.code_map = match_codes(old, raw, tok.codebook_size)
    return {
        "shared_items": len(shared),
        "changed_without_relabel": changed(old, raw),
        "changed": changed(old, relabel(raw, tok.code_map)),
    }


def _fit_tokenizer(
    cfg: TokenizeConfig,
    x: np.ndarray,
    device: str,
    checkpoint: Path,
    progress: bool,
    dims: tuple[int, ...] = (),
    warm_start=None,
):
    from mmsid.quantizers import tokenizer_for

    common = {"levels": cfg.levels, "codebook_size": cfg.codebook_size, "seed": cfg.seed}
    if cfg.method == "rq-kmeans":
        return tokenizer_for("rq-kmeans", **common).fit(x, warm_start=warm_start)
    if cfg.method == "psrq":
        return tokenizer_for("psrq", **common, alpha=cfg.alpha).fit(x)
    trained = {"device": device, "checkpoint": checkpoint, "progress": progress}
    if cfg.method == "rq-vae":
        return tokenizer_for("rq-vae", **common, epochs=cfg.epochs, log_steps=cfg.log_steps).fit(
            x, **trained, warm_start=warm_start
        )
    if cfg.method == "mmq":
        return tokenizer_for("mmq", **mmq_settings(cfg, dims), log_steps=cfg.log_steps).fit(
            x, **trained, warm_start=warm_start
        )
    if cfg.method in ("opq", "pq"):  # levels = m parallel codes
        rotate = cfg.method == "opq"
        pca = {"pca_dim": cfg.pca_dim, "pca_whiten": cfg.pca_whiten}
        return tokenizer_for("opq", **common, rotate=rotate, **pca).fit(x, warm_start=warm_start)
    raise ConfigError(
        f"unknown tokenizer method '{cfg.method}'; choose one of {', '.join(METHODS)}"
    )


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

    from mmsid.io import save_png

    L = codes.shape[1]
    if L > 6:  # long IDs (opq): one panel, the codes used at each position
        fig, ax = plt.subplots(figsize=(min(12, 2 + 0.3 * L), 3))
        ax.bar(np.arange(L), [len(np.unique(codes[:, lvl])) for lvl in range(L)])
        ax.axhline(K, color="gray", lw=0.8)
        ax.set(xlabel="code position", ylabel=f"codes used (of {K})")
    else:
        fig, axes = plt.subplots(1, L, figsize=(4 * L, 3), squeeze=False)
        for lvl in range(L):
            counts = np.sort(np.bincount(codes[:, lvl], minlength=K))[::-1]
            axes[0, lvl].bar(np.arange(K), counts, width=1.0)
            axes[0, lvl].set_title(f"level {lvl}: {int((counts > 0).sum())}/{K} codes used")
            axes[0, lvl].set_xlabel("code (sorted by use)")
        axes[0, 0].set_ylabel("items")
    fig.tight_layout()
    save_png(fig, out / "code_usage.png")
    if history:
        fig, ax = plt.subplots(figsize=(5, 3))
        keys = ("reconstruction", "codebook", "commitment", "orthogonality", "behavior")
        for key in keys:
            pts = [(i + 1, h[key]) for i, h in enumerate(history) if h.get(key, 0) > 0]
            if pts:
                ax.plot(*zip(*pts), label=key)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.legend()
        fig.tight_layout()
        save_png(fig, out / "loss_curve.png")
