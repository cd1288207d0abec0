"""Stable IDs across retrains (issue 18): a tokenizer fitted on 90% of the catalogue (last
month), then retrained on 100%, naively or with ``--align-to`` (warm start + relabelling,
mmsid.align). Reports the share of the first fit's items whose codes changed, and what the
alignment costs in quantization quality (residual MSE, code use, collisions, coherence).

    python benchmarks/bench_stability.py [--datasets amazon-beauty lfm2k-mm] [--seeds 0 1 2]

Every fit is an ``mmsid tokenize`` run (RQ-KMeans, 3 x 256) under ``runs/stability/`` (re-running
reuses finished ones); seed ``s`` fits last month's tokenizer on its seeded 90% and both
retrains with seed ``s``. Writes benchmarks/results/stability.{json,md}. Retrieval quality of
the aligned IDs is not measured here: relabelling is a bijection per level, so only the warm
start can change which items share codes; its effect shows in the quantization figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from mmsid.align import changed
from mmsid.eval.stats import mean_ci
from mmsid.ids import SIDTable
from mmsid.io import write_json, write_text
from mmsid.tokenize import TokenizeConfig, run_tokenize

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
RUNS = HERE.parent / "runs" / "stability"


def tokenize(dataset: str, name: str, seed: int, **kw) -> Path:
    out = RUNS / dataset / f"seed{seed}" / name
    if not (out / "metrics.json").exists():
        run_tokenize(
            TokenizeConfig(dataset=dataset, method="rq-kmeans", seed=seed, out=str(out), **kw),
            progress=False,
        )
    return out


def quality(run: Path) -> dict:
    m = json.loads((run / "metrics.json").read_text())
    return {
        "utilization_min": min(m["utilization"]),
        "collision_rate": m["collision_rate"],
        "coherence_last_level": m["coherence"]["prefix"][-1],
        "residual_mse_last_level": _residual_mse(run),
    }


def _residual_mse(run: Path) -> float:
    from mmsid.quantizers import Tokenizer

    return float(Tokenizer.load(run / "tokenizer.pt").history[-1]["residual_mse"])


def one(dataset: str, seed: int) -> dict:
    last = tokenize(dataset, "last-month-90pct", seed, fit_fraction=0.9)
    naive = tokenize(dataset, "retrain-naive", seed)
    aligned = tokenize(dataset, "retrain-aligned", seed, align_to=str(last))
    old = SIDTable.load(last / "sids.parquet")
    with np.load(last / "trained_on.npz") as z:
        fitted = np.unique(z["items"])  # the items last month's tokenizer was fitted on
    out = {"fitted_items": int(len(fitted)), "items": int(len(old.item_ids))}
    for name, run in (("naive", naive), ("aligned", aligned)):
        new = SIDTable.load(run / "sids.parquet")
        assert np.array_equal(new.item_ids, old.item_ids)
        out[name] = {
            "changed_fitted": changed(old.codes[fitted], new.codes[fitted]),
            "changed_full_sid_fitted": float((old.sids[fitted] != new.sids[fitted]).any(1).mean()),
            **quality(run),
        }
    a = json.loads((aligned / "metrics.json").read_text())["alignment"]
    out["aligned"]["relabel_only"] = a["changed_without_relabel"]
    return out


def f(c: dict) -> str:
    return f"{c['mean'] * 100:.1f}% ± {(c['ci'] or 0.0) * 100:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=["amazon-beauty", "lfm2k-mm"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = ap.parse_args()
    from mmsid.pipeline.runner import git_commit

    commit = git_commit()
    if commit is None or commit.endswith("+dirty"):
        sys.exit(f"commit {commit}: run from a clean checkout so the figures can be regenerated")
    res: dict = {
        "command": "python benchmarks/" + " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "commit": commit,
        "seeds": args.seeds,
        "tokenizer": "rq-kmeans, 3 levels x 256 codes",
        "datasets": {},
    }
    lines = [
        "# Stable IDs across retrains",
        "",
        "Last month's RQ-KMeans (3 x 256) is fitted on a seeded 90% of the warm items; this",
        "month's on all of them, naively or with `--align-to` (warm start from last month's",
        "codebooks + per-level Hungarian relabelling on the shared items). Figures: share of",
        "last month's *fitted* items whose codes changed, mean ± 95% CI over seeds.",
        "",
        f"Command: `{res['command']}` (commit {commit}, seeds {args.seeds}).",
        "",
        "| data set | retrain | codes changed (any level) | level 1 | level 2 | level 3 "
        "| full SID changed | min code use | collision rate | residual MSE | coherence L3 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for ds in args.datasets:
        runs = [one(ds, s) for s in args.seeds]
        res["datasets"][ds] = {"per_seed": runs}
        for name in ("naive", "aligned"):
            rows = [r[name] for r in runs]
            agg = {
                "changed_any": mean_ci([r["changed_fitted"]["any_level"] for r in rows]),
                "changed_by_level": [
                    mean_ci([r["changed_fitted"]["by_level"][lvl] for r in rows])
                    for lvl in range(3)
                ],
                "changed_full_sid": mean_ci([r["changed_full_sid_fitted"] for r in rows]),
                **{
                    k: mean_ci([r[k] for r in rows])
                    for k in (
                        "utilization_min",
                        "collision_rate",
                        "residual_mse_last_level",
                        "coherence_last_level",
                    )
                },
            }
            res["datasets"][ds][name] = agg

            lines.append(
                f"| {ds} | {name} | {f(agg['changed_any'])} | "
                + " | ".join(f(c) for c in agg["changed_by_level"])
                + f" | {f(agg['changed_full_sid'])} | {agg['utilization_min']['mean']:.3f} | "
                f"{agg['collision_rate']['mean']:.3f} | "
                f"{agg['residual_mse_last_level']['mean']:.4f} | "
                f"{agg['coherence_last_level']['mean']:.3f} |"
            )
        relabel = mean_ci([r["aligned"]["relabel_only"]["any_level"] for r in runs])
        res["datasets"][ds]["aligned_before_relabel"] = relabel
        lines.append(
            f"| {ds} | aligned, warm start only (no relabelling; all shared items) | "
            f"{f(relabel)} | | | | | | | | |"
        )
    lines += [
        "",
        "Quality columns are means over seeds: the lowest per-level code utilization, the share",
        "of items sharing all three codes with another, the mean squared residual after level 3",
        "(lower is better), mean cosine of items sharing all three codes.",
    ]
    write_json(RESULTS / "stability.json", res)
    write_text(RESULTS / "stability.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
