"""Command line: parse, then call one library function."""

from __future__ import annotations

import json
import sys

import click

from mmsid.errors import MMSIDError


def _fail(e: Exception) -> None:
    click.echo(f"error: {e}", err=True)
    sys.exit(2)


def protocol_options(f):
    """--cold-fraction and --protocol-seed: the evaluation protocol (mmsid.protocol)."""
    f = click.option(
        "--protocol-seed",
        default=0,
        show_default=True,
        help="Seed of the protocol: cold items and ranking negatives (fixed across model seeds).",
    )(f)
    return click.option(
        "--cold-fraction",
        default=0.05,
        show_default=True,
        help="Share of items held out of every training input (the cold slice).",
    )(f)


def _protocol(cold_fraction: float, protocol_seed: int):
    from mmsid.protocol import ProtocolConfig

    return ProtocolConfig(cold_fraction=cold_fraction, seed=protocol_seed)


@click.group()
@click.version_option(package_name="mmsid")
def main() -> None:
    """mmsid: multimodal semantic IDs for recommendation."""


@main.group()
def data() -> None:
    """Inspect data sets."""


@data.command("describe")
@click.argument("dataset")
@click.option(
    "--data-dir", default=None, help="Folder holding the data set (else $MMSID_DATA_DIR)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def data_describe(dataset: str, data_dir: str | None, as_json: bool) -> None:
    """Users, items, interactions, density, sequence lengths, modality coverage."""
    from mmsid.data import load_dataset
    from mmsid.data.describe import describe

    try:
        stats = describe(load_dataset(dataset, data_dir))
    except MMSIDError as e:
        _fail(e)
    if as_json:
        click.echo(json.dumps(stats, indent=2))
        return
    rows = [
        ("users", f"{stats['users']:,}"),
        ("items", f"{stats['items']:,}"),
        ("interactions", f"{stats['interactions']:,}"),
        ("density", f"{stats['density']:.5f}"),
        ("timestamps", "yes" if stats["has_timestamps"] else "order only"),
    ]
    sl = stats["sequence_length"]
    rows.append(
        (
            "sequence length",
            f"min {sl['min']}  median {sl['median']:.0f}  "
            f"mean {sl['mean']:.1f}  p90 {sl['p90']:.0f}  max {sl['max']}",
        )
    )
    for name, m in stats["modalities"].items():
        rows.append(
            (
                f"modality {name}",
                f"{m['kind']}, {m['coverage']:.1%} "
                f"({m['present']:,} present, {m['missing']:,} missing)",
            )
        )
    width = max(len(r[0]) for r in rows)
    click.echo(f"{stats['dataset']}")
    for k, v in rows:
        click.echo(f"  {k:<{width}}  {v}")


@main.command("features")
@click.argument("dataset")
@click.option(
    "--data-dir", default=None, help="Folder holding the data set (else $MMSID_DATA_DIR)."
)
@click.option("--modality", "modalities", multiple=True, help="Modality to embed (repeatable).")
@click.option("--no-normalize", is_flag=True, help="Keep raw norms (default: L2-normalise).")
@click.option("--device", default="auto", show_default=True)
@click.option(
    "--cache-dir", default=None, help="Feature cache (default $MMSID_CACHE_DIR/features)."
)
def features_cmd(
    dataset: str,
    data_dir: str | None,
    modalities: tuple[str, ...],
    no_normalize: bool,
    device: str,
    cache_dir: str | None,
) -> None:
    """Build (or read from cache) content embeddings and print their shapes."""
    from mmsid.data import load_dataset
    from mmsid.device import resolve_device
    from mmsid.features import build_features

    try:
        ds = load_dataset(dataset, data_dir)
        f = build_features(
            ds,
            modalities=list(modalities) or None,
            normalize=not no_normalize,
            device=str(resolve_device(device)),
            cache=cache_dir,
        )
    except MMSIDError as e:
        _fail(e)
    for name, shape in f.shapes().items():
        src = "cache" if f.cached[name] else f.encoders[name]
        click.echo(
            f"{name:<14} {shape[0]} x {shape[1]:<5} present {int(f.masks[name].sum()):>6}"
            f"  {f.seconds[name]:7.2f}s  ({src})"
        )


@main.command("tokenize")
@click.option("--dataset", required=True)
@click.option(
    "--method",
    type=click.Choice(["rq-kmeans", "rq-vae", "psrq", "mmq", "opq", "pq"]),
    default="rq-kmeans",
    show_default=True,
)
@click.option("--levels", default=3, show_default=True, help="Codes per item (opq/pq: m).")
@click.option("--codebook-size", default=256, show_default=True)
@click.option(
    "--modality",
    "modalities",
    multiple=True,
    help="Modality for the input (repeatable; default: the data set's baseline set).",
)
@click.option("--epochs", default=200, show_default=True, help="Training epochs (rq-vae, mmq).")
@click.option(
    "--finetune",
    type=click.Choice(["behavior"]),
    default=None,
    help="MMQ stage 2: behavior-aware fine-tuning on the protocol's training transitions.",
)
@click.option("--finetune-epochs", default=20, show_default=True)
@click.option(
    "--ablation",
    type=click.Choice(["none", "no-orth", "shared-only", "specific-only"]),
    default="none",
    show_default=True,
    help="MMQ ablation.",
)
@click.option("--alpha", default=1.0, show_default=True, help="PSRQ prefix weight (0 = RQ-KMeans).")
@click.option(
    "--collision-cap",
    default=None,
    type=int,
    help="Most items allowed on one SID (default: codebook size).",
)
@click.option(
    "--per-modality",
    is_flag=True,
    help="Also fit one tokenizer per modality; write all sets to sid_sets.parquet.",
)
@click.option(
    "--center",
    is_flag=True,
    help="Center each modality (minus its mean over items, re-normalised) before tokenizing.",
)
@click.option("--seed", default=0, show_default=True)
@protocol_options
@click.option("--device", default="auto", show_default=True)
@click.option("--data-dir", default=None)
@click.option("--out", required=True, help="Run folder.")
def tokenize_cmd(
    dataset: str,
    method: str,
    levels: int,
    codebook_size: int,
    modalities: tuple[str, ...],
    epochs: int,
    finetune: str | None,
    finetune_epochs: int,
    ablation: str,
    alpha: float,
    collision_cap: int | None,
    per_modality: bool,
    center: bool,
    seed: int,
    cold_fraction: float,
    protocol_seed: int,
    device: str,
    data_dir: str | None,
    out: str,
) -> None:
    """Fit a tokenizer on the protocol's warm items and write sids.parquet (every item, cold
    ones from transform), tokenizer.pt, metrics.json and plots."""
    from mmsid.tokenize import TokenizeConfig, run_tokenize

    try:
        cfg = TokenizeConfig(
            dataset=dataset,
            method=method,
            out=out,
            modalities=list(modalities),
            levels=levels,
            codebook_size=codebook_size,
            seed=seed,
            epochs=epochs,
            finetune=finetune,
            finetune_epochs=finetune_epochs,
            ablation=ablation,
            alpha=alpha,
            per_modality=per_modality,
            collision_cap=collision_cap,
            center=center,
            device=device,
            data_dir=data_dir,
        )
        cfg.protocol = _protocol(cold_fraction, protocol_seed)
        m = run_tokenize(cfg)
    except MMSIDError as e:
        _fail(e)
    coh = m["coherence"]
    click.echo(
        f"{dataset} {method}: {m['items']} items, utilization "
        f"{', '.join(f'{u:.2f}' for u in m['utilization'])}, collision rate "
        f"{m['collision_rate']:.3f}, unique after collision level "
        f"{m['unique_after_collision_level']}/{m['items']}"
    )
    levels = ", ".join("-" if c is None else f"{c:.3f}" for c in coh["prefix"])
    click.echo(f"coherence by prefix level: {levels} (random pairs {coh['random']:.3f})")
    click.echo(f"wrote {out}/sids.parquet, tokenizer.pt, metrics.json, code_usage.png")


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
    click.echo(f"wrote {out}/metrics.json, model.pt, curves.png")


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
@click.option("--max-minutes", default=0.0, show_default=True, help="Training budget; 0 = none.")
@click.option("--valid-sample", default=5000, show_default=True, help="0 = all users.")
@click.option(
    "--epoch-samples", default=0, show_default=True, help="Training samples per epoch; 0 = all."
)
@click.option("--beam", default=20, show_default=True, help="TIGER's beam width.")
@click.option(
    "--schedule",
    type=click.Choice(["constant", "cosine"]),
    default="constant",
    show_default=True,
    help="Learning rate schedule (cosine: after --warmup-steps).",
)
@click.option("--warmup-steps", default=0, show_default=True)
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
    max_minutes: float,
    valid_sample: int,
    epoch_samples: int,
    beam: int,
    schedule: str,
    warmup_steps: int,
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
    from mmsid.retrieval.run import RetrieveConfig, run_retrieve

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
            max_minutes=max_minutes,
            valid_sample=valid_sample,
            epoch_samples=epoch_samples,
            beam=beam,
            schedule=schedule,
            warmup_steps=warmup_steps,
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
    for split in ("valid", "test"):
        a = r[split]["all"]
        click.echo(
            f"{split}: Recall@5 {a['recall@5']:.4f}  NDCG@5 {a['ndcg@5']:.4f}  "
            f"Recall@10 {a['recall@10']:.4f}  NDCG@10 {a['ndcg@10']:.4f}"
        )
    click.echo(f"wrote {out}/metrics.json, model.pt, curves.png")


@main.command("run")
@click.option("--dataset", required=True)
@click.option("--config", "config_file", default=None, help="YAML file of settings.")
@click.option("--methods", default=None, help="Comma list of rq-kmeans,rq-vae,psrq,mmq,mmq+ft.")
@click.option("--tasks", default=None, help="Comma list of retrieval,ranking.")
@click.option("--budget", type=click.Choice(["quick", "full"]), default=None)
@click.option("--seeds", default=None, help="Model seeds, comma list: --seeds 0,1,2.")
@click.option("--device", default=None)
@click.option("--data-dir", default=None)
@click.option("--set", "sets", multiple=True, help="Override a setting: KEY.SUB=VALUE.")
@click.option("--resume", is_flag=True, help="Reuse the matching stages of another run here.")
@click.option("--overwrite", is_flag=True, help="Delete what the folder holds and start clean.")
@click.option("--out", required=True, help="Run folder.")
def run_cmd(
    dataset: str,
    config_file: str | None,
    methods: str | None,
    tasks: str | None,
    budget: str | None,
    seeds: str | None,
    device: str | None,
    data_dir: str | None,
    sets: tuple[str, ...],
    resume: bool,
    overwrite: bool,
    out: str,
) -> None:
    """The whole pipeline: features, tokenizers, retrieval and ranking on each, report.md."""
    from mmsid.pipeline import command_line, resolve_config, run

    try:
        cfg = resolve_config(
            dataset,
            out,
            config_file=config_file,
            cli={
                "methods": methods,
                "tasks": tasks,
                "budget": budget,
                "seeds": seeds,
                "device": device,
                "data_dir": data_dir,
            },
            sets=sets,
        )
        r = run(cfg, resume=resume, overwrite=overwrite, command=command_line())
    except MMSIDError as e:
        _fail(e)
    ran = sum(s["status"] == "ran" for s in r["stages"])
    click.echo(
        f"{len(r['stages'])} stages ({ran} ran, {len(r['stages']) - ran} cached) in "
        f"{r['seconds'] / 60:.1f} min; wrote {out}/report.md, results.json"
    )


@main.command("report")
@click.argument("run_dir")
def report_cmd(run_dir: str) -> None:
    """Rewrite RUN_DIR's report.md, results.json and plots from its finished stages, running
    nothing (works while `mmsid run` is still going on it)."""
    from mmsid.pipeline import DONE, refresh

    try:
        r = refresh(run_dir)
    except MMSIDError as e:
        _fail(e)
    n = sum(s["status"] in DONE for s in r["stages"])
    state = "complete" if r["complete"] else "in progress"
    click.echo(f"{n} of {len(r['stages'])} stages done ({state}); wrote {run_dir}/report.md")


if __name__ == "__main__":
    main()
