"""Issue 17's per-expert report of MMQ fits: gate mass, share of items routed, code utilization
and perplexity of every expert, after stage 1, after behavior fine-tuning and after its control
(behavior weight 0, same epochs), read from each fit's tokenizer ``metrics.json``
(mmsid.tokenize_mmq). A table for the results Markdown and one PNG per data set, written by the
bench that reads the fits (bench_retrievers), so the plots come from the same runs and command
as the numbers beside them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from bench_parallel_ids import tokenizer_dir
from id_specs import MMQ_ABLATED, fit_name, fit_of

STAGES = (("stage1", "stage 1"), ("stage2", "fine-tuned"), ("control", "control"))


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


def mmq_fits(dataset: str, specs: list[str], tseed: int = 0) -> dict[str, dict]:
    """mmq_experts.expert_facts of each MMQ fit ``specs`` read (tokenizer seed ``tseed``), named
    by bench_parallel_ids.fit_name (mmq, mmq-ft and mmq-ctl share the mmq-ft fit; each
    ablation, each input and each tokenizer setting is its own)."""
    fits: dict[str, dict] = {}
    for spec in specs:
        fit, _ = fit_of(spec)
        if fit != "mmq-ft" and fit not in MMQ_ABLATED:
            continue
        name = fit_name(spec)
        if name not in fits:
            m = json.loads((tokenizer_dir(dataset, spec, tseed) / "metrics.json").read_text())
            fits[name] = expert_facts(m)
    return fits


def expert_lines(dataset: str, fit: str, f: dict) -> list[str]:
    """Markdown rows ``| data set | fit | expert | gate mass | routed | utilization |
    perplexity |``, each cell stage 1 → fine-tuned (control)."""

    def staged(vals: list, fmt: str) -> str:  # stage 1 → fine-tuned (control); None: n/a
        text = ["n/a" if v is None else format(v, fmt) for v in vals]
        return " → ".join(text[:2]) + (f" ({text[2]})" if len(text) > 2 else "")

    def cell(key: str, fmt: str) -> str:
        return staged([f[s][i][key] for s, _ in STAGES if s in f], fmt)

    rows = []
    for i, e in enumerate(f["stage1"]):
        rows.append(
            f"| {dataset} | {fit} | {e['expert']} | {cell('gate_mass', '.2f')} | "
            f"{cell('routed_share', '.2f')} | {cell('utilization', '.2f')} | "
            f"{cell('perplexity', '.0f')} |"
        )
    ent = f["gate_entropy"]
    groups = ", ".join(
        f"{g} " + " → ".join(f"{ent[s][g]:.2f}" for s, _ in STAGES[:2] if s in ent)
        for g in ent["stage1"]
    )
    rows.append(f"| {dataset} | {fit} | gate entropy: {groups} | | | | |")
    text = staged([f["orthogonality"][s] for s, _ in STAGES if s in f["orthogonality"]], ".3f")
    rows.append(f"| {dataset} | {fit} | shared vs specific mean abs cos: {text} | | | | |")
    return rows


def expert_table(stem: str, rows: list[str], codebooks: set[int], tseed: int = 0) -> list[str]:
    """The experts section of a results Markdown: expert_lines rows under their header
    (``stem``: the results stem its plots are named after; ``tseed``: the fits' tokenizer seed)."""
    return [
        "",
        f"MMQ's experts per fit (tokenizer seed {tseed}; plots: `{stem}_<data set>_experts.png`): "
        "gate mass (mean softmax weight over the group's items), routed share (items whose "
        "largest gate weight is this expert), and the expert's least-used level: code "
        "utilization (share of its codebook in use) and perplexity (exp of the code-use "
        f"entropy; codebook {', '.join(map(str, sorted(codebooks)))}). Each cell: stage 1 → "
        "fine-tuned (control). Under each fit: its gate entropy per group (mean over items, "
        "divided by log of the group's experts; 0: each item on one expert) and the measured "
        "mean abs cosine between the shared and specific parts that the orthogonality term "
        "pushes to 0 (n/a: a layout without one of them).",
        "",
        "| data set | fit | expert | gate mass | routed share | utilization | perplexity |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]


def experts_plot(dataset: str, fits: dict[str, dict], path: Path) -> None:
    """One row per fit: gate mass, code utilization and perplexity / codebook size per
    expert, a bar per stage (stage 1, fine-tuned, control)."""
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
        for c, (key, title) in enumerate(panels):
            a = ax[r, c]
            for j, (s, name) in enumerate(stages):
                v = np.array([e[key] for e in f[s]], dtype=float)
                if key == "perplexity":
                    v = v / f["codebook_size"]
                a.bar(at + (j - (len(stages) - 1) / 2) * width, v, width=width, label=name)
            a.set_xticks(at, labels, rotation=30, ha="right", fontsize=7)
            a.set_ylim(0, 1.05)
            a.set_title(f"{fit}: {title}", fontsize=8)
            if key == "utilization":
                a.axhline(0.5, color="grey", lw=0.8, ls=":")  # the issue's floor
    handles, names = ax[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper right", fontsize=7, ncol=len(names))
    fig.suptitle(f"{dataset}: MMQ experts per fit", fontsize=9, x=0.3)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    save_png(fig, path)
