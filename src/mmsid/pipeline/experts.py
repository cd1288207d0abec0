"""MMQ's per-expert report (issue 17), read from a fit's tokenizer ``metrics.json``
(mmsid.tokenize_mmq): per expert its gate mass, the share of items routed to it, the code
utilization and perplexity of its least-used level, after stage 1, after behavior fine-tuning
and after the control (behavior weight 0, same epochs); per gate group the mean normalised gate
entropy; the measured shared-vs-specific |cos|. One contract for the main job's report
(averaged over seeds) and the benches' tables, and one plot."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

STAGES = (("stage1", "stage 1"), ("stage2", "fine-tuned"), ("control", "control"))
NUMBERS = ("gate_mass", "routed_share", "utilization", "perplexity")


def expert_facts(metrics: dict) -> dict:
    """{stage: [{expert, gate_mass, routed_share, utilization, perplexity}]} of one MMQ fit,
    and ``gate_entropy`` {stage: {group: the mean over items of the gate's entropy / log(number
    of experts)}} (1: every item spread evenly over the group's experts; 0: each on one).
    ``utilization`` and ``perplexity`` are the expert's lowest over its levels (the least-used
    codebook; the share of the codebook_size codes in use, and exp(entropy) of code use).
    ``orthogonality`` {stage: mean |cos| between the shared and specific parts, without the
    lambda weight; None where a layout has no shared or no specific part}."""
    stage2 = metrics.get("stage2") or {}
    found = {"stage1": metrics["stage1"], "stage2": stage2, "control": stage2.get("control")}
    out: dict = {"codebook_size": metrics["codebook_size"]}
    for key, _ in STAGES:
        st = found[key]
        if not st:
            continue
        out[key] = [
            {
                "expert": f"{e['group']}/{e['expert']}",
                "gate_mass": st["gates"][e["group"]]["mass"][e["expert"]],
                "routed_share": st["gates"][e["group"]]["routed_share"][e["expert"]],
                "utilization": min(e["utilization"]),
                "perplexity": min(e["perplexity"]),
            }
            for e in st["experts"]
        ]
        out.setdefault("gate_entropy", {})[key] = {g: v["entropy"] for g, v in st["gates"].items()}
        cos = st.get("orthogonality_abs_cos")
        out.setdefault("orthogonality", {})[key] = None if cos is None or math.isnan(cos) else cos
    return out


def mean_facts(facts: list[dict]) -> dict:
    """expert_facts of several fits of one layout (the seeds of a run), averaged: each number
    is the mean over the fits that have that stage; an orthogonality any fit lacks is None."""
    first = facts[0]
    out: dict = {"codebook_size": first["codebook_size"], "seeds": len(facts)}
    for key, _ in STAGES:
        have = [f for f in facts if key in f]
        if not have:
            continue
        out[key] = [
            {"expert": e["expert"]}
            | {n: float(np.mean([f[key][i][n] for f in have])) for n in NUMBERS}
            for i, e in enumerate(have[0][key])
        ]
        ent = [f["gate_entropy"][key] for f in have]
        out.setdefault("gate_entropy", {})[key] = {
            g: float(np.mean([e[g] for e in ent])) for g in ent[0]
        }
        cos = [f["orthogonality"][key] for f in have]
        out.setdefault("orthogonality", {})[key] = (
            None if any(c is None for c in cos) else float(np.mean(cos))
        )
    return out


def _staged(vals: list, fmt: str) -> str:
    """'stage 1 → fine-tuned (control)'; None: n/a."""
    text = ["n/a" if v is None else format(v, fmt) for v in vals]
    return " → ".join(text[:2]) + (f" ({text[2]})" if len(text) > 2 else "")


def expert_cells(f: dict) -> list[list[str]]:
    """Per expert: [expert, gate mass, routed share, utilization, perplexity], each number
    cell stage 1 → fine-tuned (control)."""
    fmts = {"gate_mass": ".2f", "routed_share": ".2f", "utilization": ".2f", "perplexity": ".0f"}
    stages = [s for s, _ in STAGES if s in f]
    return [
        [e["expert"]] + [_staged([f[s][i][n] for s in stages], fmts[n]) for n in NUMBERS]
        for i, e in enumerate(f["stage1"])
    ]


def entropy_text(f: dict) -> str:
    """'gate entropy: shared 0.34 → 0.35, ...' (stage 1 → fine-tuned) per group."""
    ent = f["gate_entropy"]
    groups = ", ".join(
        f"{g} " + " → ".join(f"{ent[s][g]:.2f}" for s, _ in STAGES[:2] if s in ent)
        for g in ent["stage1"]
    )
    return f"gate entropy: {groups}"


def orthogonality_text(f: dict) -> str:
    """'shared vs specific mean abs cos: ...' per stage (n/a: a layout without one part)."""
    o = f["orthogonality"]
    return "shared vs specific mean abs cos: " + _staged([o[s] for s, _ in STAGES if s in o], ".3f")


def experts_plot(title: str, fits: dict[str, dict], path: Path) -> None:
    """One row per fit: gate mass, code utilization and perplexity / codebook size per
    expert, a bar per stage (stage 1, fine-tuned, control); the issue's 50% utilization floor
    dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mmsid.io import save_png

    panels = (
        ("gate_mass", "gate mass"),
        ("utilization", "code utilization (least-used level)"),
        ("perplexity", "perplexity / codebook size"),
    )
    fig, ax = plt.subplots(
        len(fits), 3, figsize=(13, 2.8 * len(fits) + 0.4), squeeze=False, sharey=True
    )
    for r, (fit, f) in enumerate(fits.items()):
        labels = [e["expert"] for e in f["stage1"]]
        at = np.arange(len(labels))
        stages = [(s, name) for s, name in STAGES if s in f]
        width = 0.8 / len(stages)
        for c, (key, name) in enumerate(panels):
            a = ax[r, c]
            for j, (s, label) in enumerate(stages):
                v = np.array([e[key] for e in f[s]], dtype=float)
                if key == "perplexity":
                    v = v / f["codebook_size"]
                a.bar(at + (j - (len(stages) - 1) / 2) * width, v, width=width, label=label)
            a.set_xticks(at, labels, rotation=30, ha="right", fontsize=7)
            a.set_ylim(0, 1.05)
            a.set_title(name, fontsize=8)
            if key == "utilization":
                a.axhline(0.5, color="grey", lw=0.8, ls=":")  # the floor
        ax[r, 0].set_ylabel(fit, fontsize=7)  # the row's fit
    handles, names = ax[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper right", fontsize=7, ncol=len(names))
    fig.suptitle(f"{title}: MMQ experts per fit", fontsize=9, x=0.3)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    save_png(fig, path)
