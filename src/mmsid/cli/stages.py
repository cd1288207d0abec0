"""The downstream stages, one at a time: `mmsid rank`, `mmsid retrieve` (`mmsid tokenize` is in
mmsid.cli.tokenize)."""

from __future__ import annotations

import click

from mmsid.cli.base import _fail, _protocol, _trained, main, protocol_options
from mmsid.errors import MMSIDError
from mmsid.training import OPTIMIZERS, SCHEDULES


@main.command("rank")
@click.option("--dataset", required=True)
@click.option(
    "--model",
    type=click.Choice(["popularity", "din", "din-sid", "mcca"]),
    default="din",
    show_default=True,
)
@click.option(
    "--sids",
    "sids",
    multiple=True,
    help="SID table, NAME=PATH or PATH (named 'joint'); repeat for MCCA's sets.",
)
@click.option(
    "--joint",
    default="joint",
    show_default=True,
    help="Name of the modal-joint SID set (MCCA's shared query).",
)
@click.option(
    "--label",
    type=click.Choice(["sampled", "rating"]),
    default="sampled",
    show_default=True,
    help="sampled negatives, or rating >= 4 as click (MovieLens).",
)
@click.option("--neg-ratio", default=1, show_default=True)
@click.option(
    "--negatives",
    type=click.Choice(["popularity", "uniform"]),
    default="popularity",
    show_default=True,
    help="How sampled negatives are drawn (popularity: AUC is not a popularity test).",
)
@click.option("--epochs", default=20, show_default=True, help="At most; early stopping.")
@click.option("--patience", default=2, show_default=True, help="0 = train every epoch.")
@click.option("--seed", default=0, show_default=True)
@protocol_options
@click.option("--device", default="auto", show_default=True)
@click.option("--data-dir", default=None)
@click.option("--out", required=True, help="Run folder.")
def rank_cmd(
    dataset: str,
    model: str,
    sids: tuple[str, ...],
    joint: str,
    label: str,
    neg_ratio: int,
    negatives: str,
    epochs: int,
    patience: int,
    seed: int,
    cold_fraction: float,
    protocol_seed: int,
    device: str,
    data_dir: str | None,
    out: str,
) -> None:
    """Train a CTR model (DIN, DIN + SID, MCCA) or score by popularity; write metrics.json,
    scores.npz, model.pt, curves.png."""
    from mmsid.ranking.run import RankConfig, run_rank

    named = dict(s.split("=", 1) if "=" in s else ("joint", s) for s in sids)
    try:
        cfg = RankConfig(
            dataset=dataset,
            model=model,
            out=out,
            sids=named,
            joint=joint,
            label=label,
            neg_ratio=neg_ratio,
            negatives=negatives,
            epochs=epochs,
            patience=patience,
            seed=seed,
            device=device,
            data_dir=data_dir,
        )
        cfg.protocol = _protocol(cold_fraction, protocol_seed)
        r = run_rank(cfg)
    except MMSIDError as e:
        _fail(e)
    for split in ("valid", "test"):
        a = r[split]["all"]
        c = r[split]["cold"]
        click.echo(
            f"{split}: AUC {a['auc']:.4f}  GAUC {a['gauc']:.4f}  LogLoss "
            f"{a['logloss']:.4f}  cold AUC {c['auc']:.4f} ({c['users']} users)"
        )
    _trained(r, out, cfg.patience)


@main.command("retrieve")
@click.option("--dataset", required=True)
@click.option("--sids", default=None, help="sids.parquet from `mmsid tokenize` (SID models).")
@click.option("--sid-set", default="joint", show_default=True, help="Set of a multi-set file.")
@click.option(
    "--model",
    type=click.Choice(["parallel-sid", "tiger", "sasrec", "popularity", "content-knn"]),
    default="parallel-sid",
    show_default=True,
    help="SID retrievers (parallel-sid, tiger) or baselines (SASRec on item ids, popularity, "
    "content-kNN).",
)
@click.option("--epochs", default=30, show_default=True)
@click.option("--batch-size", default=256, show_default=True)
@click.option("--lr", default=1e-3, show_default=True)
@click.option("--patience", default=5, show_default=True, help="0 = no early stopping.")
@click.option(
    "--min-epochs", default=0, show_default=True, help="Early stopping cannot end a run sooner."
)
@click.option("--max-minutes", default=0.0, show_default=True, help="Training budget; 0 = none.")
@click.option("--valid-sample", default=5000, show_default=True, help="0 = all users.")
@click.option(
    "--epoch-samples", default=0, show_default=True, help="Training samples per epoch; 0 = all."
)
@click.option("--beam", default=20, show_default=True, help="TIGER's beam width.")
@click.option(
    "--schedule",
    type=click.Choice(SCHEDULES),
    default="constant",
    show_default=True,
    help="Learning rate schedule: cosine after a linear --warmup-steps ramp; rsqrt held for "
    "--warmup-steps, then 1/sqrt(step).",
)
@click.option("--warmup-steps", default=0, show_default=True)
@click.option(
    "--optimizer",
    type=click.Choice(OPTIMIZERS),
    default="adamw",
    show_default=True,
    help="adafactor at --lr 0.01 with the constant schedule is TIGER's (T5's) recipe.",
)
@click.option(
    "--max-steps", default=0, show_default=True, help="Optimiser-step budget; 0 = --epochs."
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    help="Model setting, KEY.SUB=VALUE (e.g. parallel.d_model=256, sasrec.dropout=0.5).",
)
@click.option(
    "--amp",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    show_default=True,
    help="bf16 autocast for training; evaluation always runs in fp32.",
)
@click.option("--seed", default=0, show_default=True)
@protocol_options
@click.option("--device", default="auto", show_default=True)
@click.option("--data-dir", default=None)
@click.option("--out", required=True, help="Run folder (re-run to resume).")
def retrieve_cmd(
    dataset: str,
    sids: str | None,
    sid_set: str,
    model: str,
    epochs: int,
    batch_size: int,
    lr: float,
    patience: int,
    min_epochs: int,
    max_minutes: float,
    valid_sample: int,
    epoch_samples: int,
    beam: int,
    schedule: str,
    warmup_steps: int,
    optimizer: str,
    max_steps: int,
    sets: tuple[str, ...],
    amp: str,
    seed: int,
    cold_fraction: float,
    protocol_seed: int,
    device: str,
    data_dir: str | None,
    out: str,
) -> None:
    """Next-item retrieval over the whole catalogue: the parallel-SID model or TIGER over a
    SID table, or a baseline; writes metrics.json (validation and test, per slice), ranks.npz,
    model.pt, curves.png."""
    from mmsid.config import dotted, merge
    from mmsid.retrieval.config import RetrieveConfig
    from mmsid.retrieval.run import run_retrieve

    try:
        cfg = RetrieveConfig(
            dataset=dataset,
            model=model,
            out=out,
            sids=sids,
            sid_set=sid_set,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            patience=patience,
            min_epochs=min_epochs,
            max_minutes=max_minutes,
            valid_sample=valid_sample,
            epoch_samples=epoch_samples,
            beam=beam,
            schedule=schedule,
            warmup_steps=warmup_steps,
            optimizer=optimizer,
            max_steps=max_steps,
            amp=amp,
            seed=seed,
            device=device,
            data_dir=data_dir,
        )
        cfg = merge(cfg, dotted(sets), "--set")
        cfg.protocol = _protocol(cold_fraction, protocol_seed)
        r = run_retrieve(cfg)
    except MMSIDError as e:
        _fail(e)
    rows = [("", r)]
    if r.get("fused"):  # content fusion: mmsid.retrieval.fusion
        f = r["fused"]
        rows.append((f"fused (w={f['weight']:g}, b={f['new_item_bias']:g}) ", f))
    for name, res in rows:
        for split in ("valid", "test"):
            a = res[split]["all"]
            click.echo(
                f"{name}{split}: Recall@5 {a['recall@5']:.4f}  NDCG@5 {a['ndcg@5']:.4f}  "
                f"Recall@10 {a['recall@10']:.4f}  NDCG@10 {a['ndcg@10']:.4f}"
            )
    _trained(r, out, cfg.patience)
