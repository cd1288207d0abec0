"""Issue 15's retrieval table: parallel-SID over semantic IDs against SASRec over item ids, each
alone and with content fusion (mmsid.retrieval.fusion), beside content-kNN and popularity, on
the same protocol, seeds and users. What semantic IDs buy on head, long-tail and cold items.

    python benchmarks/bench_retrievers.py [--datasets amazon-beauty] [--ids opq:8 opq:16@0.14]
        [--seeds 0 1 2] [--new-item-tolerance T] [--pair X Y] [--sasrec FIELD=VALUE ...]
        [--results STEM]
    python benchmarks/bench_retrievers.py --only sasrec   # one retriever's runs; writes nothing

parallel-SID: bench_parallel_ids's runs (same folders: a finished one is re-evaluated with the
fusion grid, not retrained). SASRec: its defaults (width 64, 2 layers, 1 head, dropout 0.2, full
softmax over warm items; ``--sasrec FIELD=VALUE ...`` sets others, e.g. bench_sasrec_grid's choice
on validation, in run folders of their own), AdamW 1e-3, early stopping on validation Recall@10 with
the same patience, at most bench_parallel_loss.SASREC_EPOCHS epochs. Fusion: after training, the
model's score + w * cos(content of the last item, item content) + b for the items it never trained
on (the cold ones), (w, b) from mmsid.retrieval.fusion's WEIGHT_GRID x NEW_ITEM_BIAS_GRID by
validation Recall@10 on the whole validation split (so the fused validation figures are where the
point was chosen; test never chooses). ``--new-item-tolerance T``: instead, among the points within
T x the best overall validation Recall@10, the best for cold targets on validation
(mmsid.retrieval.fusion.choose_point); the fused results are then remade in the same run folders
(training is shared), so each command remakes what it reports. Mean ± 95% CI over seeds; paired
bootstrap over the same users, seeds pooled, on all users and on the issue's two slices (cold:
against content-kNN; long tail: against SASRec). The validation trade-off of b (overall against cold
Recall@10) is tabled for the fused models.
Several ``--ids`` give a row pair each (alone, + content) and are compared with the first one.
``--pair X Y`` (two of the ``--ids``, repeatable) adds X against Y on all users, cold targets
and long-tail targets, alone and + content (e.g. MMQ + fine-tuning against its control).
Each MMQ fit among the ``--ids`` (mmq-ft and its ablations) gets mmq_experts's per-expert table
and plot (gate mass, routing, utilization, perplexity after stage 1, fine-tuning, control).
Writes benchmarks/results/retrievers.{json,md} (``--results STEM``: STEM.{json,md}, and
STEM_DATASET_experts.png per data set with an MMQ fit).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from bench_parallel_ids import (
    REFIT_HELP,
    add_pair_option,
    check_pairs,
    pair_args,
    runs_for,
    tokenizer_note,
    tokenizer_seeds,
)
from bench_parallel_ids import RUNS as ID_RUNS
from bench_parallel_loss import (
    EPOCHS,
    PATIENCE,
    SASREC_EPOCHS,
    aggregate,
    baseline_rows,
    best_epochs,
    metric_cells,
    on_slice,
    paired_lines,
    retrieve,
    slice_masks,
)
from id_specs import parse_ids
from mmq_experts import expert_table
from sid_tables import id_table, sid_reports

from mmsid.io import write_json, write_text
from mmsid.retrieval.fusion import NEW_ITEM_BIAS_GRID, WEIGHT_GRID

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
RUNS = HERE.parent / "runs" / "retrievers"


def fusion(tolerance: float = 0.0) -> dict:
    """RetrieveConfig's fusion settings: each grid plus 0 (the model alone), and how the
    point is chosen."""
    return {
        "fusion_weights": WEIGHT_GRID,
        "fusion_new_item_bias": NEW_ITEM_BIAS_GRID,
        "fusion_tolerance": tolerance,
    }


def parse_sasrec(items: list[str]) -> dict:
    """``["d_model=128", "dropout=0.5"]`` -> SASRecConfig fields that differ from its
    defaults, typed and range-checked as ``--set sasrec.FIELD=VALUE`` is (mmsid.config.merge;
    an unknown field or a bad value is an error)."""
    from dataclasses import fields

    from mmsid.config import dotted, merge
    from mmsid.errors import ConfigError
    from mmsid.retrieval.sasrec import SASRecConfig

    default = SASRecConfig()
    try:
        cfg = merge(default, dotted(items), "--sasrec")
    except ConfigError as e:
        raise SystemExit(f"--sasrec {' '.join(items)}: {e}")
    changed = (f.name for f in fields(cfg) if getattr(cfg, f.name) != getattr(default, f.name))
    return {k: getattr(cfg, k) for k in sorted(changed)}


def sasrec_name(settings: dict) -> str:
    """The run folder (and row label) of SASRec at ``settings``: ``sasrec`` at its defaults,
    e.g. ``sasrec-d_model128-dropout0.5``."""
    cells = (f"{k}{v}" if isinstance(v, str) else f"{k}{v:g}" for k, v in sorted(settings.items()))
    return "-".join(["sasrec", *cells])


def sasrec_runs(
    dataset: str, seeds: list[int], fuse: dict, settings: dict | None = None
) -> list[dict]:
    """SASRec's runs at ``settings`` (SASRecConfig fields beyond its defaults), one per seed."""
    settings = settings or {}
    out = RUNS / dataset / sasrec_name(settings)
    return [
        retrieve(dataset, "sasrec", s, out=out / f"seed{s}", fusion=fuse, sasrec=settings)
        for s in seeds
    ]


def bias_tradeoff(fused: list[dict]) -> list[tuple[float, tuple[float, float]]]:
    """Per b of the grid: (overall, cold) validation Recall@10 at each run's chosen w, mean
    over runs."""
    rows: dict[float, list[tuple[float, float]]] = {}
    for f in fused:
        for g in f["grid"]:
            if g["weight"] == f["weight"]:
                v = g["valid"]
                rows.setdefault(g["new_item_bias"], []).append((v["all"], v["cold"]))
    return [(b, tuple(float(x) for x in np.mean(v, axis=0))) for b, v in sorted(rows.items())]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=["amazon-beauty"])
    ap.add_argument(
        "--ids", nargs="+", default=["opq:8"], help="parallel-SID IDs, METHOD:LEVELS[@T] each"
    )
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--only", choices=("sasrec", "parallel-sid"), help="run these; write nothing")
    ap.add_argument("--refit-tokenizers", action="store_true", help=REFIT_HELP)
    ap.add_argument(
        "--new-item-tolerance",
        type=float,
        default=0.0,
        help="fusion: best cold point within this share of the best overall (0 = the best)",
    )
    add_pair_option(ap, "also compare --ids X with --ids Y (all, cold and long-tail users)")
    ap.add_argument(
        "--sasrec",
        nargs="+",
        default=[],
        metavar="FIELD=VALUE",
        help="SASRec's settings beyond its defaults (e.g. bench_sasrec_grid's choice)",
    )
    ap.add_argument(
        "--results", default="retrievers", help="results stem under benchmarks/results/"
    )
    a = ap.parse_args()
    sas_cfg = parse_sasrec(a.sasrec)
    for spec in a.ids:
        parse_ids(spec)
    check_pairs(a.pair, a.ids)
    if not 0.0 <= a.new_item_tolerance <= 1.0:
        raise SystemExit(f"--new-item-tolerance {a.new_item_tolerance}: a share in [0, 1]")
    tol, fuse = a.new_item_tolerance, fusion(a.new_item_tolerance)
    if a.only:
        for ds in a.datasets:
            if a.only == "sasrec":
                sasrec_runs(ds, a.seeds, fuse, sas_cfg)
            else:
                for spec in a.ids:
                    runs_for(ds, spec, a.seeds, fuse, a.refit_tokenizers)
        return
    from mmsid.pipeline import git_commit

    commit = git_commit()  # before anything is written
    cmd = f"python benchmarks/bench_retrievers.py --datasets {' '.join(a.datasets)}"
    cmd += f" --ids {' '.join(a.ids)} --seeds {' '.join(map(str, a.seeds))}"
    if tol:
        cmd += f" --new-item-tolerance {tol:g}"
    cmd += pair_args(a.pair)
    cmd += " --refit-tokenizers" if a.refit_tokenizers else ""
    cmd += f" --sasrec {' '.join(f'{k}={v}' for k, v in sas_cfg.items())}" if sas_cfg else ""
    if a.results != "retrievers":
        cmd += f" --results {a.results}"
    sid_names = [f"parallel-sid ({spec})" for spec in a.ids]
    tseeds = tokenizer_seeds(a.seeds, a.refit_tokenizers)
    res: dict = {
        "command": cmd,
        "commit": commit,
        "seeds": a.seeds,
        "tokenizer_seeds": tseeds,
        "fusion_grid": {"weight": [0.0, *WEIGHT_GRID], "new_item_bias": [0.0, *NEW_ITEM_BIAS_GRID]},
        "fusion_tolerance": tol,
        "sasrec": {"epochs": SASREC_EPOCHS, "patience": PATIENCE, "settings": sas_cfg},
        "parallel_runs": str(ID_RUNS.relative_to(HERE.parent)),
        "pairs": a.pair,
        "datasets": {},
    }
    lines = [
        "# Retrievers: semantic IDs (parallel-SID) vs item ids (SASRec), alone and with content",
        "",
        f"parallel-SID on {', '.join(a.ids)} IDs with bench_parallel_ids's model and budget "
        f"(at most {EPOCHS} epochs, patience {PATIENCE}; `@T`: that ID type's logit "
        f"temperature, else 0.07; {tokenizer_note(tseeds)}); SASRec "
        + (f"with {sas_cfg}, else its" if sas_cfg else "with its")
        + f" defaults, early stopping on validation Recall@10 (patience {PATIENCE}, at most "
        f"{SASREC_EPOCHS} epochs). '+ content': after training, the model's score plus w x "
        "cosine(content of "
        "the user's last item, item content) plus b for the items the model never trained on "
        "(the cold ones), (w, b) chosen per run from w in "
        f"{{0, {', '.join(map(str, WEIGHT_GRID))}}} and b in "
        f"{{0, {', '.join(map(str, NEW_ITEM_BIAS_GRID))}}} "
        + (
            f"as the point with the best cold-target Recall@10 on the whole validation split "
            f"among those within {tol:.0%} of the best overall validation Recall@10 (the fused "
            "validation rows are where the point was chosen; test never chooses)"
            if tol
            else "by overall Recall@10 on the whole validation split (the fused validation rows "
            "are where the point was chosen; neither test nor the cold slice chooses)"
        )
        + ". Mean ± 95% CI over seeds; s/epoch is training plus the per-epoch validation; "
        "best epochs: `*` where the epoch cap, not patience, ended the run.",
        "",
        f"Command: `{cmd}` (commit {commit}, seeds {a.seeds}).",
        "",
        "| data set | retriever | split | Recall@10 | NDCG@10 | head R@10 | long-tail R@10 | "
        "cold R@10 (users) | w; b | best epochs | s/epoch |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    paired, tradeoff, id_lines, expert_rows, codebooks = [], [], [], [], set()
    for ds in a.datasets:
        sas = sasrec_runs(ds, a.seeds, fuse, sas_cfg)
        res["datasets"][ds] = {}
        trained = {  # each row's results and the runs that trained its model
            "sasrec (item ids)": (sas, sas),
            "sasrec + content": ([m["fused"] for m in sas], sas),
        }
        for spec, name in zip(a.ids, sid_names):
            sid = runs_for(ds, spec, a.seeds, fuse, a.refit_tokenizers)
            trained[name] = (sid, sid)
            trained[f"{name} + content"] = ([m["fused"] for m in sid], sid)
        ids, experts, sizes = sid_reports(ds, a.ids, a.results, res["datasets"][ds], tseeds)
        id_lines += ids
        expert_rows += experts
        codebooks |= sizes
        runs = {name: ms for name, (ms, _) in trained.items()}
        res["datasets"][ds]["protocol"] = sas[0]["protocol"]
        for name, (ms, base) in trained.items():
            row: dict = {
                "best_epoch": [m["best_epoch"] for m in base],
                "epochs_run": [m["epochs_run"] for m in base],
                "seconds_per_epoch": [m["train_seconds"] / max(m["epochs_run"], 1) for m in base],
            }
            if "weight" in ms[0]:
                row["weight"] = [m["weight"] for m in ms]
                row["new_item_bias"] = [m["new_item_bias"] for m in ms]
            for split in ("valid", "test"):
                row[split] = agg = aggregate(ms, split)
                w = ", ".join(
                    f"{x:g}; {b:g}"
                    for x, b in zip(row.get("weight", []), row.get("new_item_bias", []))
                )
                lines.append(
                    f"| {ds} | {name} | {split} | {metric_cells(agg)} | {w} | "
                    f"{best_epochs(base)} | {np.mean(row['seconds_per_epoch']):.0f} |"
                )
            res["datasets"][ds][name] = row
        baselines = {}
        for model in ("popularity", "content-knn"):
            baselines[model] = m = retrieve(ds, model, 0, out=ID_RUNS / ds / model)
            res["datasets"][ds][model] = {s: m[s] for s in ("valid", "test")}
            lines += baseline_rows(ds, model, m, " | | |")
        names = list(runs)  # SASRec, its fused row, then per ID type: alone, fused
        for name in names[1::2]:  # the fused rows
            res["datasets"][ds][name]["tradeoff"] = t = bias_tradeoff(runs[name])
            tradeoff += [f"| {ds} | {name} | {b:g} | {v[0]:.4f} | {v[1]:.4f} |" for b, v in t]
        paired += [""] if paired else []
        for x, y in comparisons(names, asked=a.pair):
            paired += paired_lines(
                ds, runs[x], runs[y], (x, y), res["datasets"][ds], f"{x}_vs_{y}_"
            )
        # the slice lines: cold against content-kNN, long tail against SASRec
        masks = slice_masks(ds, runs[names[0]][0]["targets"])
        knn = [baselines["content-knn"]]
        for x, y, sl in [(n, "content-knn", "cold") for n in names[1:]] + [
            (n, names[0], "long_tail") for n in names[1:]
        ]:
            ys = knn if y == "content-knn" else runs[y]
            pre, users = on_slice(sl, masks)
            paired += paired_lines(
                ds, runs[x], ys, (x, y), res["datasets"][ds], f"{pre}{x}_vs_{y}_", users
            )
        for x, y, sl in asked_pairs(a.pair):
            pre, users = on_slice(sl, masks)
            paired += paired_lines(
                ds, runs[x], runs[y], (x, y), res["datasets"][ds], f"{pre}{x}_vs_{y}_", users
            )
    lines += id_table(id_lines, tseeds)
    if expert_rows:
        lines += expert_table(a.results, expert_rows, codebooks, tseeds[0])
    lines += ["", "Paired comparisons (95% bootstrap interval):", "", *paired]
    lines += [
        "",
        "The new-item prior b on validation, at each run's chosen w (mean over seeds): overall "
        "against cold Recall@10. "
        + (
            f"The chosen b has the best cold column among those within {tol:.0%} of the best "
            "overall; the rest shows what another b would trade."
            if tol
            else "The chosen b is the overall column's best; the rest shows what a larger b "
            "would trade."
        ),
        "",
        "| data set | retriever | b | valid R@10 | valid cold R@10 |",
        "|---|---|---|---|---|",
        *tradeoff,
    ]
    write_json(RESULTS / f"{a.results}.json", res)
    write_text(RESULTS / f"{a.results}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def asked_pairs(pairs: list[list[str]]) -> list[tuple[str, str, str]]:
    """(x row, y row, slice) of each ``--pair X Y``: alone and + content, on all users, cold
    targets and long-tail targets."""
    out = []
    for x, y in pairs:
        for tail in ("", " + content"):
            rx, ry = f"parallel-sid ({x}){tail}", f"parallel-sid ({y}){tail}"
            out += [(rx, ry, sl) for sl in ("all", "cold", "long_tail")]
    return out


def comparisons(names: list[str], asked: list[list[str]] = ()) -> list[tuple[str, str]]:
    """The paired (x, y) of the table's rows ``names`` = [SASRec, SASRec + content, then per ID
    type: alone, + content]: each ID type against item ids, what content adds to each model,
    both fused, and each further ID type against the first, alone and fused. A comparison that
    an ``asked`` ``--pair`` makes on all users, in either order, is left to that pair's lines
    (printed once, in the order asked)."""
    sas, sas_f, sids = names[0], names[1], names[2:]
    first, first_f = sids[:2]
    pairs = [(first, sas), (sas_f, sas), (first_f, first), (first_f, sas_f)]
    for sid, sid_f in zip(sids[2::2], sids[3::2]):
        pairs += [(sid, sas), (sid_f, sid), (sid_f, sas_f), (sid, first), (sid_f, first_f)]
    taken = {(x, y) for x, y, sl in asked_pairs(asked) if sl == "all"}
    return [(x, y) for x, y in pairs if (x, y) not in taken and (y, x) not in taken]


if __name__ == "__main__":
    main()
