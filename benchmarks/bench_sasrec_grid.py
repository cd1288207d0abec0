"""SASRec tuned on validation, so the item-id baseline of the retrieval tables gets the care
the semantic-ID models get (bench_parallel_ids chose their ID length and temperature on
validation; SASRec had run at its defaults).

    python benchmarks/bench_sasrec_grid.py [--datasets ml100k-mm] [--grid-seeds 0]
        [--seeds 0 1 2]

Per data set: SASRec at each point of GRID (width x dropout; 2 layers, 1 head, FFN 4 x width,
full softmax over warm items, AdamW 1e-3, early stopping on validation Recall@10 with
bench_parallel_loss's patience, at most SASREC_EPOCHS epochs) with the grid seeds; the point with
the best mean validation Recall@10 is chosen (test never chooses; ties go to the earlier, smaller
point). The chosen point and the defaults then run with every seed, and the table gives both on
validation and test (mean ± 95% CI), with the paired difference (chosen - defaults) over the
same users, seeds pooled. The runs are bench_retrievers' SASRec runs (same folders and fusion
grid), so ``bench_retrievers.py --sasrec FIELD=VALUE ...`` with the printed choice reuses them.
Writes benchmarks/results/sasrec_grid.{json,md} (``--results STEM``: STEM.{json,md}).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from bench_parallel_loss import (
    PATIENCE,
    SASREC_EPOCHS,
    aggregate,
    best_epochs,
    metric_cells,
    paired_lines,
)
from bench_retrievers import fusion, sasrec_name, sasrec_runs

from mmsid.io import write_json, write_text

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DEFAULTS = {"d_model": 64, "dropout": 0.2}  # SASRecConfig's
# each point's SASRecConfig fields beyond its defaults ({} = the defaults): widths up to
# parallel-SID's 256, dropout up to RPG's 0.5
GRID: tuple[dict, ...] = tuple(
    {k: v for k, v in {"d_model": d, "dropout": p}.items() if DEFAULTS[k] != v}
    for d in (64, 128, 256)
    for p in (0.2, 0.5)
)


def choose(grid_runs: list[list[dict]]) -> int:
    """The index of the grid point with the best mean validation Recall@10 over its runs (the
    first such point on a tie)."""
    means = [np.mean([m["valid"]["all"]["recall@10"] for m in ms]) for ms in grid_runs]
    return int(np.argmax(means))


def flag(settings: dict) -> str:
    """bench_retrievers' ``--sasrec`` argument for ``settings`` ('' at the defaults)."""
    return " ".join(f"{k}={v}" for k, v in sorted(settings.items()))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=["ml100k-mm"])
    ap.add_argument("--grid-seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--results", default="sasrec_grid", help="stem under benchmarks/results/")
    a = ap.parse_args()
    from mmsid.pipeline import git_commit

    commit = git_commit()  # before anything is written
    cmd = f"python benchmarks/bench_sasrec_grid.py --datasets {' '.join(a.datasets)}"
    cmd += f" --grid-seeds {' '.join(map(str, a.grid_seeds))}"
    cmd += f" --seeds {' '.join(map(str, a.seeds))}"
    cmd += f" --results {a.results}" if a.results != "sasrec_grid" else ""
    fuse = fusion()
    res: dict = {
        "command": cmd,
        "commit": commit,
        "seeds": a.seeds,
        "grid_seeds": a.grid_seeds,
        "grid": list(GRID),
        "sasrec": {"epochs": SASREC_EPOCHS, "patience": PATIENCE},
        "datasets": {},
    }
    lines = [
        "# SASRec tuned on validation",
        "",
        f"SASRec (2 layers, 1 head, FFN 4 x width, full softmax over warm items, AdamW 1e-3, "
        f"early stopping on validation Recall@10, patience {PATIENCE}, at most {SASREC_EPOCHS} "
        f"epochs) at each width x dropout with grid seeds {a.grid_seeds}; the point with the best "
        "mean validation Recall@10 is chosen (test never chooses), then it and the defaults "
        f"(width 64, dropout 0.2) run with seeds {a.seeds}. Mean ± 95% CI over seeds; paired "
        "differences by a bootstrap over the same users, seeds pooled. `--sasrec` is "
        "bench_retrievers' argument for the chosen point.",
        "",
        f"Command: `{cmd}` (commit {commit}, seeds {a.seeds}, grid seeds {a.grid_seeds}).",
        "",
    ]
    paired: list[str] = []
    for ds in a.datasets:
        grid_runs = [sasrec_runs(ds, a.grid_seeds, fuse, g) for g in GRID]
        best = GRID[choose(grid_runs)]
        out: dict = {"chosen": best, "sasrec_flag": flag(best), "grid": []}
        lines += [
            f"## {ds}: grid (seeds {a.grid_seeds}), chosen `--sasrec {flag(best) or '(defaults)'}`",
            "",
            "| width | dropout | valid R@10 | valid N@10 | best epochs | s/epoch | chosen |",
            "|---|---|---|---|---|---|---|",
        ]
        for g, ms in zip(GRID, grid_runs):
            agg = aggregate(ms, "valid")
            sec = np.mean([m["train_seconds"] / max(m["epochs_run"], 1) for m in ms])
            cfg = {**DEFAULTS, **g}
            out["grid"].append({"settings": g, "valid": agg, "seconds_per_epoch": float(sec)})
            r, n = agg["all/recall@10"], agg["all/ndcg@10"]
            lines.append(
                f"| {cfg['d_model']} | {cfg['dropout']:g} | {r['mean']:.4f} | {n['mean']:.4f} | "
                f"{best_epochs(ms)} | {sec:.1f} | {'yes' if g == best else ''} |"
            )
        runs = {"defaults": sasrec_runs(ds, a.seeds, fuse, {})}
        if best:
            runs[f"chosen ({sasrec_name(best)})"] = sasrec_runs(ds, a.seeds, fuse, best)
        lines += [
            "",
            "| SASRec | split | Recall@10 | NDCG@10 | head R@10 | long-tail R@10 | "
            "cold R@10 (users) | best epochs |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, ms in runs.items():
            out[name] = {split: aggregate(ms, split) for split in ("valid", "test")}
            out[name]["best_epoch"] = [m["best_epoch"] for m in ms]
            for split in ("valid", "test"):
                lines.append(
                    f"| {name} | {split} | {metric_cells(out[name][split])} | {best_epochs(ms)} |"
                )
        lines.append("")
        if best:
            (y, ys), (x, xs) = runs.items()
            paired += paired_lines(ds, xs, ys, (x, y), out, "chosen_vs_defaults_")
        res["datasets"][ds] = out
    if paired:
        lines += ["Paired comparisons (95% bootstrap interval):", "", *paired]
    write_json(RESULTS / f"{a.results}.json", res)
    write_text(RESULTS / f"{a.results}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
