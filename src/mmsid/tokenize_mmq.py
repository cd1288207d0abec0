"""MMQ's part of the tokenize stage: its expert layout from the stage config, behavior
fine-tuning beside its control, and the gate plot (mmsid.tokenize calls these)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmsid.errors import ConfigError

ABLATIONS = ("none", "no-orth", "no-sharpness", "shared-only", "specific-only", "one-expert")


def expert_layout(ablation: str, n_shared: int, n_specific: int, M: int) -> tuple[int, int]:
    """(shared experts, specific experts per modality) that an ablation leaves of a layout."""
    if ablation == "shared-only":  # as many shared experts as the full model has experts
        return n_shared + M * n_specific, 0
    if ablation == "specific-only":
        return 0, n_specific
    if ablation == "one-expert":
        return 1, 1
    return n_shared, n_specific


def mmq_settings(cfg, dims: tuple[int, ...]) -> dict:
    """MMQ config fields from a TokenizeConfig. Default layout: 2 shared experts and 2 specific
    experts per modality (``n_shared`` / ``n_specific``), ``expert_levels`` residual levels
    each, so the SID holds (n_shared + M * n_specific) * expert_levels codes: 6 for text +
    image, 8 for lfm2k-mm's three modalities, 4 for text alone (where shared and specific
    experts read the same text, our reading of MMQ on one modality). ``levels`` does not
    apply to MMQ: its ID length follows from the layout.
    Ablations: ``no-orth`` drops the orthogonality term; ``no-sharpness`` drops the gate
    sharpness term (the balance term stays), so gates stay soft and every expert's code carries
    content for every item (with one-hot gates an expert's code for items routed elsewhere is
    near-constant: benchmarks/results/mmq_routing.md); ``shared-only`` uses as many shared
    experts as the full model has experts (same SID length); ``specific-only`` drops the
    shared experts (shorter SID); ``one-expert`` keeps one shared and one specific expert per
    modality (every gate is 1: nothing is mixed; mmsid's first layout)."""
    if cfg.ablation not in ABLATIONS:
        raise ConfigError(f"unknown MMQ ablation '{cfg.ablation}'; choose one of {ABLATIONS}")
    if cfg.n_shared + cfg.n_specific == 0:
        raise ConfigError("MMQ needs at least one shared or specific expert (n_shared, n_specific)")
    M = len(dims)
    out = {
        "modality_dims": tuple(dims),
        "codebook_size": cfg.codebook_size,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "finetune_epochs": cfg.finetune_epochs,
        "finetune_pairs_per_epoch": cfg.finetune_pairs,
        "lambda_orth": 0.0 if cfg.ablation == "no-orth" else cfg.lambda_orth,
        "shared_levels": cfg.expert_levels,
        "specific_levels": cfg.expert_levels,
        "gate_balance": cfg.gate_balance,
        "gate_sharpness": 0.0 if cfg.ablation == "no-sharpness" else cfg.gate_sharpness,
    }
    out["n_shared"], out["n_specific"] = expert_layout(
        cfg.ablation, cfg.n_shared, cfg.n_specific, M
    )
    if cfg.ablation in ("shared-only", "specific-only"):  # no shared/specific pair left
        out["lambda_orth"] = 0.0
    return out


def finetune_with_control(
    cfg,
    tok,
    x: np.ndarray,
    x_fit: np.ndarray,
    pair_rows: np.ndarray,
    out: Path,
    table,
    device: str,
    progress: bool,
    names: list[str],
) -> dict:
    """Stage 2 on ``tok`` (fitted by stage 1) and, when ``cfg.finetune_control``, on its
    control twin (behavior weight 0, the same epochs, pairs and shuffles). Writes
    sids_stage1.parquet and sids_control.parquet beside the run's sids.parquet; ``table``
    makes a SID table from (tokenizer, codes). Returns the stage-2 metrics: the share of SIDs
    fine-tuning changed, the control's share, and the share on which the two differ (what
    the behavior term changed beyond continued training)."""
    from mmsid.align import changed

    s1 = tok.transform(x, device=device)
    table(tok, s1).save(out / "sids_stage1.parquet")
    twin = tok.control() if cfg.finetune_control else None  # from the stage-1 weights
    done = {}
    for name, t in (("stage2", tok), ("stage2_control", twin)):
        if t is None:
            continue
        report = t.finetune(
            x_fit,
            pair_rows,
            device=device,
            checkpoint=out / "checkpoints" / f"{name}.pt",
            progress=progress,
        )
        report.update(t.diagnostics(x, names))
        done[name] = report, t.transform(x, device=device)
    report, ft = done["stage2"]
    if twin is not None:
        control, ctl = done["stage2_control"]
        table(twin, ctl).save(out / "sids_control.parquet")
        report["control"] = control
        # over every item (cold ones included); the changed shares are over the fitted items
        report["sid_differs_from_control_share"] = changed(ctl, ft)["any_level"]
        report["behavior_beyond_control"] = (
            report["sid_changed_share"] - control["sid_changed_share"]
        )
    return report


def gate_plot(out: Path, extra: dict) -> None:
    """Each group's gate, per expert: mean mass and the share of items routed to it, after
    stage 1 (and stage 2 when run); groups carry the modality names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mmsid.io import save_png

    stages = [s for s in ("stage1", "stage2") if s in extra]
    fig, ax = plt.subplots(1, len(stages), figsize=(4.5 * len(stages), 3.2), squeeze=False)
    for i, st in enumerate(stages):
        labels, mass, routed = [], [], []
        for group, g in extra[st]["gates"].items():
            labels += [f"{group}/expert {e}" for e in range(len(g["mass"]))]
            mass += g["mass"]
            routed += g["routed_share"]
        at = np.arange(len(labels))
        ax[0, i].bar(at - 0.2, mass, width=0.4, label="mean gate weight")
        ax[0, i].bar(at + 0.2, routed, width=0.4, label="share of items routed (argmax)")
        ax[0, i].set_xticks(at, labels, rotation=45, ha="right", fontsize=7)
        ax[0, i].set_ylim(0, 1.05)
        ax[0, i].set_title(f"gates ({st})")
        ax[0, i].legend(fontsize=6, loc="upper right")
    fig.tight_layout()
    save_png(fig, out / "gate_usage.png")
