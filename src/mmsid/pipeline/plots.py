"""The run's plots, one question each: each method a point with its interval, the axis fitted
to the values, the legend clear of the data."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmsid.pipeline.experts import experts_plot
from mmsid.pipeline.report import SLICES, TASK

# every file plots() writes into a run folder (the runner's --overwrite removes these)
PLOT_FILES = (
    "retrieval_recall10.png",
    "ranking_auc.png",
    "retrieval_vs_item_ids.png",
    "ranking_vs_item_ids.png",
    "coherence_by_level.png",
    "mmq_experts.png",
)


def plots(out: Path, res: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mmsid.io import save_png

    for task, fname in (("retrieval", "retrieval_recall10.png"), ("ranking", "ranking_auc.png")):
        if not res[task]:
            continue
        main = TASK[task][0]
        names = list(res[task])
        c = [res[task][n]["test"]["all"][main] for n in names]
        mean = np.array([np.nan if x["mean"] is None else x["mean"] for x in c])
        err = np.array([x["ci"] or 0.0 for x in c])
        fig, ax = plt.subplots(figsize=(6, 0.4 * len(names) + 1.2))
        ax.errorbar(mean, np.arange(len(names)), xerr=err, fmt="o", capsize=3)
        ax.set_yticks(np.arange(len(names)), names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(f"test {main}, all users (mean ± 95% CI over seeds)")
        ax.set_title(f"{res['dataset']}: {task}", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        save_png(fig, out / fname)
        comp = (res["comparisons"].get(task) or {}).get("vs_reference")
        if comp:
            _diff_plot(out / f"{task}_vs_item_ids.png", res, task, comp)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    rand = None
    for m, c in res["codebook"].items():
        if c.get("coherence_by_level"):
            ax.plot(
                range(1, len(c["coherence_by_level"]) + 1),
                c["coherence_by_level"],
                marker="o",
                label=m,
            )
            rand = c.get("coherence_random") if rand is None else rand
    if rand is not None:
        ax.axhline(rand, color="grey", ls="--", label="random pairs")
    ax.set_xlabel("SID prefix length")
    ax.set_ylabel("coherence (mean cos)")
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    save_png(fig, out / "coherence_by_level.png")
    fits = {m: c["experts"] for m, c in res["codebook"].items() if c.get("experts")}
    if fits:  # MMQ's experts per tokenizer row (mmsid.pipeline.experts), seeds averaged
        experts_plot(res["dataset"], fits, out / "mmq_experts.png")


def _diff_plot(path: Path, res: dict, task: str, comp: dict) -> None:
    """One question: what does each model buy over the item-id model, per slice?"""
    import matplotlib.pyplot as plt

    from mmsid.io import save_png

    main, _, ref = TASK[task]
    names = list(comp)
    fig, axes = plt.subplots(
        1, len(SLICES), figsize=(3 * len(SLICES), 0.4 * len(names) + 1.4), sharey=True
    )
    for ax, sl in zip(axes, SLICES):
        for i, n in enumerate(names):
            d = comp[n][sl]
            if d.get("diff") is None:
                continue
            color = "tab:green" if d["win"] == n else "tab:red" if d["win"] == ref else "grey"
            ax.errorbar(
                d["diff"],
                i,
                xerr=[[d["diff"] - d["lo"]], [d["hi"] - d["diff"]]],
                fmt="o",
                color=color,
                capsize=3,
            )
        ax.axvline(0, color="black", lw=0.8)
        ax.set_title(f"{sl}", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_yticks(np.arange(len(names)), names, fontsize=7)
    axes[0].invert_yaxis()
    fig.suptitle(
        f"{res['dataset']}: {main} minus {ref} (paired 95% interval; "
        "green better, red worse, grey within noise)",
        fontsize=9,
    )
    fig.tight_layout()
    save_png(fig, path)
