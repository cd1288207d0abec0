"""`mmsid tokenize`: fit a tokenizer on the protocol's warm items and write every item's SID."""

from __future__ import annotations

import click

from mmsid.cli.base import _fail, _protocol, main, protocol_options
from mmsid.errors import MMSIDError
from mmsid.tokenize import PSRQ_ALPHA, TokenizeConfig
from mmsid.tokenize_mmq import ABLATIONS


@main.command("tokenize")
@click.option("--dataset", required=True)
@click.option(
    "--method",
    type=click.Choice(["rq-kmeans", "rq-vae", "psrq", "mmq", "opq", "pq"]),
    default="rq-kmeans",
    show_default=True,
)
@click.option(
    "--levels",
    default=3,
    show_default=True,
    help="Codes per item (opq/pq: m; mmq: see --expert-levels).",
)
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
    type=click.Choice(list(ABLATIONS)),
    default="none",
    show_default=True,
    help="MMQ ablation.",
)
@click.option("--shared-experts", default=2, show_default=True, help="MMQ: shared experts.")
@click.option(
    "--specific-experts", default=2, show_default=True, help="MMQ: specific experts per modality."
)
@click.option(
    "--expert-levels",
    default=1,
    show_default=True,
    help="MMQ: residual levels per expert (the SID has experts x levels codes).",
)
@click.option(
    "--gate-balance",
    default=TokenizeConfig.gate_balance,
    show_default=True,
    help="MMQ: weight of each group's load-balance term (keeps every expert in use).",
)
@click.option(
    "--gate-sharpness",
    default=TokenizeConfig.gate_sharpness,
    show_default=True,
    help="MMQ: weight of the mean gate entropy (pushes each item onto one expert; 0: soft "
    "gates). With one-hot gates an expert's code for items routed elsewhere is near-constant "
    "(benchmarks/results/mmq_routing.md).",
)
@click.option(
    "--control/--no-control",
    default=True,
    show_default=True,
    help="MMQ --finetune: also fine-tune a control with behavior weight 0.",
)
@click.option(
    "--alpha",
    default=PSRQ_ALPHA,
    show_default=True,
    help="PSRQ prefix weight (0 = RQ-KMeans, 1 = the paper).",
)
@click.option(
    "--pca-dim",
    default=0,
    show_default=True,
    help="opq/pq: quantize the input's top N principal axes (RPG's tokenizer; 0: off).",
)
@click.option(
    "--pca-whiten/--no-pca-whiten",
    default=True,
    show_default=True,
    help="opq/pq with --pca-dim: scale each principal axis to unit variance.",
)
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
    "--center/--no-center",
    default=True,
    show_default=True,
    help="Center each modality (minus its mean over items, re-normalised) before tokenizing.",
)
@click.option("--seed", default=0, show_default=True)
@protocol_options
@click.option("--device", default="auto", show_default=True)
@click.option("--data-dir", default=None)
@click.option("--out", required=True, help="Run folder.")
@click.option(
    "--fit-fraction",
    default=1.0,
    show_default=True,
    help="Fit on this seeded share of the warm items (the rest get IDs from transform).",
)
@click.option(
    "--align-to",
    default=None,
    help="A previous tokenize run: keep its code numbers where the geometry allows.",
)
@click.option(
    "--log-steps",
    is_flag=True,
    help="Keep every training step's loss in metrics.json (rq-vae, mmq).",
)
def tokenize_cmd(
    log_steps: bool,
    fit_fraction: float,
    align_to: str | None,
    dataset: str,
    method: str,
    levels: int,
    codebook_size: int,
    modalities: tuple[str, ...],
    epochs: int,
    finetune: str | None,
    finetune_epochs: int,
    ablation: str,
    shared_experts: int,
    specific_experts: int,
    expert_levels: int,
    gate_balance: float,
    gate_sharpness: float,
    control: bool,
    alpha: float,
    pca_dim: int,
    pca_whiten: bool,
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
    from mmsid.tokenize import run_tokenize

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
            n_shared=shared_experts,
            n_specific=specific_experts,
            expert_levels=expert_levels,
            gate_balance=gate_balance,
            gate_sharpness=gate_sharpness,
            finetune_control=control,
            alpha=alpha,
            pca_dim=pca_dim,
            pca_whiten=pca_whiten,
            per_modality=per_modality,
            collision_cap=collision_cap,
            center=center,
            fit_fraction=fit_fraction,
            align_to=align_to,
            log_steps=log_steps,
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
    if "alignment" in m:
        a = m["alignment"]
        click.echo(
            f"aligned to {align_to}: codes changed on {a['changed']['any_level']:.1%} of "
            f"{a['shared_items']} shared items ({a['changed_without_relabel']['any_level']:.1%} "
            "without relabelling)"
        )
    for st in ("stage1", "stage2"):
        if "gates" in m.get(st, {}):
            d = m[st]
            gates = "; ".join(
                f"{g} mass {'/'.join(f'{w:.2f}' for w in v['mass'])} entropy {v['entropy']:.2f}"
                for g, v in d["gates"].items()
            )
            click.echo(
                f"mmq {st}: least-used expert's code utilization "
                f"{d['min_expert_utilization']:.2f}; gates: {gates}"
            )
    if "control" in m.get("stage2", {}):
        s2 = m["stage2"]
        click.echo(
            f"fine-tuning changed {s2['sid_changed_share']:.1%} of the fitted items' SIDs, its "
            f"control (behavior weight 0) {s2['control']['sid_changed_share']:.1%}; they differ "
            f"on {s2['sid_differs_from_control_share']:.1%} of all items"
        )
    click.echo(f"wrote {out}/sids.parquet, tokenizer.pt, metrics.json, code_usage.png")
