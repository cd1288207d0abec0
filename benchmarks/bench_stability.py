"""Stable IDs across retrains (issue 18): a tokenizer fitted on 90% of the catalogue (last
month), then retrained on 100%, naively or with ``--align-to`` (warm start + relabelling,
mmsid.align). Reports the share of the first fit's items whose codes changed, and what the
alignment costs in quantization quality (residual MSE, code use, collisions, coherence).

    python benchmarks/bench_stability.py [--cells amazon-beauty:rq-kmeans lfm2k-mm:rq-vae ...]
    python benchmarks/bench_stability.py --retrieval [--datasets amazon-beauty] [--seeds 0 1 2]

Every fit is an ``mmsid tokenize`` run (3 levels x 256 codes; RQ-VAE and MMQ 100 epochs) under
``runs/stability/`` (re-running reuses finished ones); seed ``s`` fits last month's tokenizer
on its seeded 90% and both retrains with seed ``s``. The default cells: RQ-KMeans on
amazon-beauty and lfm2k-mm, RQ-VAE, MMQ and OPQ on lfm2k-mm (the trained tokenizers on the
smaller set, for CPU time). Writes benchmarks/results/stability.{json,md}.

``--retrieval``: what the alignment costs in retrieval quality. For each seed, one
parallel-SID retriever on the naive retrain's RQ-KMeans IDs and one on the aligned retrain's
(same seed, same settings, a CPU-sized model: width 128, 2 layers, early stopping on
validation Recall@10, at most 30 epochs); test Recall/NDCG@10 as mean ± 95% CI over
seeds, and a paired bootstrap over the same test users (seeds pooled); content-kNN and
popularity on the same protocol for reference (the cold column: test users whose next item is
one of the protocol's cold items, which got their IDs from ``transform`` after the fit).
Writes benchmarks/results/alignment_cost.{json,md}.
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


DEFAULT_CELLS = [
    "amazon-beauty:rq-kmeans",
    "lfm2k-mm:rq-kmeans",
    "lfm2k-mm:rq-vae",
    "lfm2k-mm:mmq",
    "lfm2k-mm:opq",
]
EPOCHS = 100  # RQ-VAE and MMQ


def tokenize(dataset: str, method: str, name: str, seed: int, **kw) -> Path:
    folder = RUNS / dataset if method == "rq-kmeans" else RUNS / f"{dataset}-{method}"
    out = folder / f"seed{seed}" / name
    if not (out / "metrics.json").exists():
        run_tokenize(
            TokenizeConfig(
                dataset=dataset, method=method, seed=seed, out=str(out), epochs=EPOCHS, **kw
            ),
            progress=False,
        )
    return out


def quality(run: Path) -> dict:
    m = json.loads((run / "metrics.json").read_text())
    return {
        "utilization_min": min(m["utilization"]),
        "collision_rate": m["collision_rate"],
        "coherence_last_level": m["coherence"]["prefix"][-1],
        "reconstruction": _reconstruction(run),
    }


def _reconstruction(run: Path) -> float:
    """The tokenizer's own fit error: RQ-KMeans the residual MSE after the last level, OPQ
    the squared reconstruction error, RQ-VAE and MMQ the last epoch's reconstruction loss."""
    from mmsid.quantizers import Tokenizer

    h = Tokenizer.load(run / "tokenizer.pt").history[-1]
    for key in ("residual_mse", "reconstruction_sq_error", "reconstruction"):
        if key in h:
            return float(h[key])
    raise KeyError(f"{run}: no reconstruction figure in {sorted(h)}")


def one(dataset: str, method: str, seed: int) -> dict:
    last = tokenize(dataset, method, "last-month-90pct", seed, fit_fraction=0.9)
    naive = tokenize(dataset, method, "retrain-naive", seed)
    aligned = tokenize(dataset, method, "retrain-aligned", seed, align_to=str(last))
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
    out["aligned"]["warm_start"] = a["warm_start"]
    return out


def num(c: dict, digits: int) -> str:
    """A mean over seeds, or "n/a" where no seed has the figure (coherence of full SIDs when
    no two items share one)."""
    return "n/a" if c["mean"] is None else f"{c['mean']:.{digits}f}"


def f(c: dict) -> str:
    return f"{c['mean'] * 100:.1f}% ± {(c['ci'] or 0.0) * 100:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", nargs="+", default=DEFAULT_CELLS, help="DATASET:METHOD ...")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--retrieval", action="store_true", help="the retrieval cost instead")
    ap.add_argument("--datasets", nargs="+", default=["amazon-beauty"], help="with --retrieval")
    args = ap.parse_args()
    from mmsid.pipeline.runner import git_commit

    commit = git_commit()
    if commit is None or commit.endswith("+dirty"):
        sys.exit(f"commit {commit}: run from a clean checkout so the figures can be regenerated")
    command = "python benchmarks/" + " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
    if args.retrieval:
        retrieval_cost(args.datasets, args.seeds, command, commit)
        return
    res: dict = {
        "command": command,
        "commit": commit,
        "seeds": args.seeds,
        "tokenizers": f"3 levels x 256 codes; rq-vae and mmq {EPOCHS} epochs",
        "cells": {},
    }
    lines = [
        "# Stable IDs across retrains",
        "",
        "Last month's tokenizer (3 x 256) is fitted on a seeded 90% of the warm items; this",
        "month's on all of them, naively or with `--align-to` (warm start from last month's fit:",
        "RQ-KMeans and OPQ from its codebooks (and rotation), RQ-VAE and MMQ from its weights;",
        "then per-level Hungarian relabelling on the shared items). Figures: share of last",
        "month's *fitted* items whose codes changed, mean ± 95% CI over seeds.",
        "",
        f"Command: `{command}` (commit {commit}, seeds {args.seeds}).",
        "",
        "| data set | tokenizer | retrain | codes changed (any level) | level 1 | level 2 "
        "| level 3 | full SID changed | min code use | collision rate | fit error | coherence L3 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in args.cells:
        ds, method = cell.split(":")
        runs = [one(ds, method, s) for s in args.seeds]
        res["cells"][cell] = {"per_seed": runs}
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
                        "reconstruction",
                        "coherence_last_level",
                    )
                },
            }
            res["cells"][cell][name] = agg
            lines.append(
                f"| {ds} | {method} | {name} | {f(agg['changed_any'])} | "
                + " | ".join(f(c) for c in agg["changed_by_level"])
                + f" | {f(agg['changed_full_sid'])} | {num(agg['utilization_min'], 3)} | "
                f"{num(agg['collision_rate'], 3)} | {num(agg['reconstruction'], 4)} | "
                f"{num(agg['coherence_last_level'], 3)} |"
            )
        relabel = mean_ci([r["aligned"]["relabel_only"]["any_level"] for r in runs])
        res["cells"][cell]["aligned_before_relabel"] = relabel
        lines.append(
            f"| {ds} | {method} | aligned, warm start only (no relabelling; all shared items) | "
            f"{f(relabel)} | | | | | | | | |"
        )
    lines += [
        "",
        "Quality columns are means over seeds: the lowest per-level code utilization, the share",
        "of items sharing all three codes with another, the tokenizer's own fit error (RQ-KMeans:",
        "residual MSE after level 3; OPQ: squared reconstruction error; RQ-VAE and MMQ: the last",
        "epoch's reconstruction loss; lower is better, comparable within a tokenizer only), mean",
        "cosine of items sharing all three codes (n/a: no two items share all three).",
    ]
    write_json(RESULTS / "stability.json", res)
    write_text(RESULTS / "stability.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


EPOCHS_RETRIEVAL = 30  # at most; early stopping on validation Recall@10 (no time limit:
# a run is reproducible from its seed)
RETRIEVER = {"d_model": 128, "n_heads": 4, "n_layers": 2, "d_ff": 256}
RETRIEVER.update(dropout=0.2, temperature=0.07, loss="code")  # as alignment_cost.md was run


def retrieve(dataset: str, tok_run: Path, seed: int) -> Path:
    from mmsid.retrieval.config import RetrieveConfig
    from mmsid.retrieval.parallel import ParallelSIDConfig
    from mmsid.retrieval.run import run_retrieve

    out = tok_run.parent / f"retrieve-{tok_run.name}"
    if not (out / "metrics.json").exists():
        run_retrieve(
            RetrieveConfig(
                dataset=dataset,
                model="parallel-sid",
                sids=str(tok_run / "sids.parquet"),
                out=str(out),
                epochs=EPOCHS_RETRIEVAL,
                patience=5,
                seed=seed,
                parallel=ParallelSIDConfig(**RETRIEVER),
            ),
            progress=False,
        )
    return out


def baseline(dataset: str, model: str) -> dict:
    """A deterministic reference on the same protocol: popularity, or content-kNN (the cold
    items' only other way in: nearest warm items by content)."""
    from mmsid.retrieval.config import RetrieveConfig
    from mmsid.retrieval.run import run_retrieve

    out = RUNS / dataset / f"retrieve-{model}"
    if not (out / "metrics.json").exists():
        run_retrieve(RetrieveConfig(dataset=dataset, model=model, out=str(out)), progress=False)
    return json.loads((out / "metrics.json").read_text())["test"]


def retrieval_cost(datasets: list[str], seeds: list[int], command: str, commit: str) -> None:
    from mmsid.eval.stats import paired_text, paired_users, per_user

    res: dict = {"command": command, "commit": commit, "seeds": seeds, "datasets": {}}
    res["retriever"] = {"model": "parallel-sid", **RETRIEVER}
    res["retriever"].update(epochs=EPOCHS_RETRIEVAL, patience=5)
    lines = [
        "# What aligned IDs cost in retrieval quality",
        "",
        "Per seed: RQ-KMeans (3 x 256) retrained on the whole catalogue naively or with",
        "`--align-to` last month's 90% fit (as in `stability.md`), then one parallel-SID",
        "retriever on each run's IDs with the same seed and settings (width 128, 2 layers, FFN",
        "256, dropout 0.2, temperature 0.07; early stopping on validation Recall@10, patience 5,",
        f"at most {EPOCHS_RETRIEVAL} epochs). Test figures, mean ± 95% CI over seeds; the paired",
        "difference (aligned - naive) is a bootstrap over the same test users, seeds pooled.",
        "Cold items: test users whose next item is one of the protocol's cold items (in no",
        "training input; its SID from `transform`, as an item added after the fit).",
        "",
        f"Command: `{command}` (commit {commit}, seeds {seeds}).",
        "",
        "| data set | IDs | Recall@10 | NDCG@10 | cold items: Recall@10 | epochs run (per seed) |",
        "|---|---|---|---|---|---|",
    ]
    paired_lines = []
    for ds in datasets:
        per: dict = {"naive": [], "aligned": []}
        for seed in seeds:
            last = tokenize(ds, "rq-kmeans", "last-month-90pct", seed, fit_fraction=0.9)
            runs = {
                "naive": tokenize(ds, "rq-kmeans", "retrain-naive", seed),
                "aligned": tokenize(ds, "rq-kmeans", "retrain-aligned", seed, align_to=str(last)),
            }
            for name, tok_run in runs.items():
                r = retrieve(ds, tok_run, seed)
                m = json.loads((r / "metrics.json").read_text())
                with np.load(r / "ranks.npz") as z:
                    rank = z["test_rank"]
                per[name].append(
                    {
                        "recall@10": m["test"]["all"]["recall@10"],
                        "ndcg@10": m["test"]["all"]["ndcg@10"],
                        "cold_recall@10": m["test"]["cold"]["recall@10"],
                        "cold_users": m["test"]["cold"]["n"],
                        "epochs_run": m["epochs_run"],
                        "stopped": m.get("stopped"),
                        "rank": rank,
                    }
                )
        res["datasets"][ds] = {}
        for name, rows in per.items():
            agg = {
                k: mean_ci([r[k] for r in rows]) for k in ("recall@10", "ndcg@10", "cold_recall@10")
            }
            agg["cold_users"] = rows[0]["cold_users"]
            agg["epochs_run"] = [r["epochs_run"] for r in rows]
            agg["stopped"] = [r["stopped"] for r in rows]
            res["datasets"][ds][name] = agg
            lines.append(
                f"| {ds} | {name} | {g(agg['recall@10'])} | {g(agg['ndcg@10'])} | "
                f"{g(agg['cold_recall@10'])} ({agg['cold_users']} users) | "
                f"{', '.join(map(str, agg['epochs_run']))} |"
            )
        for model in ("content-knn", "popularity"):
            t = baseline(ds, model)
            res["datasets"][ds][model] = t
            lines.append(
                f"| {ds} | {model} (deterministic, for reference) | {t['all']['recall@10']:.4f} | "
                f"{t['all']['ndcg@10']:.4f} | {t['cold']['recall@10']:.4f} | |"
            )
        for metric in ("recall@10", "ndcg@10"):
            a = np.stack([per_user(r["rank"], metric) for r in per["aligned"]])
            b = np.stack([per_user(r["rank"], metric) for r in per["naive"]])
            d = paired_users(a, b, names=("aligned", "naive"))
            res["datasets"][ds][f"paired_{metric}"] = d
            paired_lines.append(f"- {ds}, {metric}: {paired_text(d, a.shape[1], 'test users')}")
    lines += ["", "Paired comparison (95% bootstrap interval):", "", *paired_lines]
    write_json(RESULTS / "alignment_cost.json", res)
    write_text(RESULTS / "alignment_cost.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def g(c: dict) -> str:
    return f"{c['mean']:.4f} ± {(c['ci'] or 0.0):.4f}"


if __name__ == "__main__":
    main()
