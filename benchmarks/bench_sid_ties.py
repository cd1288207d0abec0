"""Items that share a full SID tie in parallel-SID's score: how many of the top ten slots the
ties take, and what Recall@10 would be if each SID took one slot. A diagnostic of why a SID
table with many shared SIDs retrieves worse (issue 17: MMQ's 6 codes on amazon-beauty share
32% of SIDs, RQ-VAE-6's 1%), read from bench_parallel_ids' trained runs; nothing is trained.

    python benchmarks/bench_sid_ties.py --datasets amazon-beauty \
        --ids rq-vae:6/title+categories mmq-ft:1/title+categories --seeds 0 1 2 \
        [--pair mmq-ft:1/title+categories rq-vae:6/title+categories] [--results STEM]

Per ID type, seed and split, over every evaluated user (target t, scores s over the catalogue,
SID group g(i): the items with i's full SID):
- ``R@10``: the evaluation's Recall@10 (the run's ranks.npz); the top ten recomputed from the
  run's model must agree with it for every user except where the target ties across the cut
  (else the bench stops: the wrong model or SID table was loaded);
- ``tie-fair R@10``: the expected Recall@10 if ties were broken at random,
  clip((10 - #{s > s_t}) / #{s = s_t}, 0, 1) per user;
- ``popularity tie-break R@10``: ties broken by each item's training interactions (more first,
  then the lower item id): a re-scoring rule that needs no training, measured, not chosen;
- ``SID R@10``: the target's SID among the ten best distinct SIDs (one slot per SID: what the
  ranking of SIDs achieves before ties split the slots; an upper bound for the items);
- ``distinct SIDs in top 10`` and ``targets sharing their SID``.
The paired lines compare SID R@10 (and R@10) of each ``--pair`` over the same users, seeds
pooled. Writes benchmarks/results/sid_ties.{json,md} (``--results STEM``: STEM.{json,md}).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from bench_parallel_ids import (
    add_pair_option,
    check_pairs,
    pair_args,
    run_folder,
    tokenizer_dir,
)
from id_specs import MMQ_IDS, parse_ids

from mmsid.eval.stats import mean_ci, paired_text, paired_users
from mmsid.ids import SIDTable, table_codes
from mmsid.io import load_torch, write_json, write_text
from mmsid.pipeline import git_commit
from mmsid.protocol import load_protocol
from mmsid.retrieval.data import build_retrieval
from mmsid.retrieval.parallel import ParallelSID, ParallelSIDConfig

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
K = 10
SPLITS = ("valid", "test")


def load(dataset: str, spec: str, seed: int, n_items: int) -> tuple[ParallelSID, np.ndarray, int]:
    """The run's best model over its SID table, (N,) each item's SID group id, and the run's
    evaluation batch size."""
    run = run_folder(dataset, spec, seed)
    if not (run / "model.pt").is_file():
        raise SystemExit(f"{run}: no model.pt; train it with bench_parallel_ids.py --ids {spec}")
    sids = tokenizer_dir(dataset, spec) / MMQ_IDS.get(parse_ids(spec)[0], "sids.parquet")
    codes, K_ = table_codes(SIDTable.load(sids), str(sids), n_items)  # (N, m)
    saved = load_torch(run / "model.pt")
    cfg = saved["config"]
    pcfg = ParallelSIDConfig(**{**cfg["parallel"], "max_history": cfg["protocol"]["max_history"]})
    model = ParallelSID(codes, K_, pcfg)
    model.load_state_dict(saved["state"])
    _, group = np.unique(codes, axis=0, return_inverse=True)
    return model.eval(), group.reshape(-1), cfg["eval_batch_size"]


@torch.no_grad()
def tie_facts(model: ParallelSID, group: np.ndarray, pop: np.ndarray, split, batch: int) -> dict:
    """Per user (arrays, the split's order): hit@10 as evaluated, tie-fair hit, popularity
    tie-break hit (``pop``: (N,) training interactions per item), SID hit, and the distinct
    SIDs in the top ten. Users are batched as the evaluation batches them
    (mmsid.retrieval.run.recommend_all: by history length, ``batch`` at a time), since the
    padded length of a batch moves scores in the last bits and so the order of near-ties."""
    n = len(split)
    hit, fair, by_pop, sid_hit, distinct = (np.zeros(n) for _ in range(5))
    g, pop_t = torch.from_numpy(group), torch.from_numpy(pop)
    item = torch.arange(len(pop))
    first = torch.from_numpy(np.unique(group, return_index=True)[1])  # (G,) one item per SID
    order = np.argsort((split.history >= 0).sum(1), kind="stable")
    for s in range(0, n, batch):
        idx = order[s : s + batch]
        hist = torch.from_numpy(split.history[idx])
        lp = model.last_log_probs(hist)
        sc = model.score_codes(lp)  # (B, N) fp32, scored once
        top = sc.topk(K, dim=1).indices  # as top_codes ranks a one-chunk catalogue
        tgt = torch.from_numpy(split.target[idx])
        st = sc.gather(1, tgt[:, None])  # (B, 1)
        above = (sc > st).sum(1).double()
        equal = (sc == st).sum(1).double()
        hit[idx] = (top == tgt[:, None]).any(1).numpy()
        fair[idx] = ((K - above) / equal).clamp(0, 1).numpy()
        p, pt = pop_t[None], pop_t[tgt][:, None]  # ties: more training interactions first,
        first_in_tie = (p > pt) | ((p == pt) & (item[None] < tgt[:, None]))  # then lower id
        by_pop[idx] = (above + ((sc == st) & first_in_tie).sum(1) < K).numpy()
        sid_hit[idx] = ((sc[:, first] > st).sum(1) < K).numpy()
        distinct[idx] = [len(set(row)) for row in g[top].tolist()]
    return {"hit": hit, "fair": fair, "pop": by_pop, "sid": sid_hit, "distinct": distinct}


def cell(m: dict) -> str:
    """'mean ± CI' (the mean alone from one seed)."""
    return f"{m['mean']:.4f}" + ("" if m["ci"] is None else f" ± {m['ci']:.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["amazon-beauty"])
    ap.add_argument("--ids", nargs="+", required=True, help="bench_parallel_ids' ID specs")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    add_pair_option(ap, "compare SID R@10 and R@10 of X - Y over the same users, seeds pooled")
    ap.add_argument("--results", default="sid_ties", help="results file stem")
    a = ap.parse_args()
    check_pairs(a.pair, a.ids)
    commit = git_commit()
    torch.set_num_threads(1)
    res: dict = {}
    for ds in a.datasets:
        data = build_retrieval(load_protocol(ds))
        n_items = data.protocol.n_items
        pop = np.bincount(np.concatenate(data.train_sequences), minlength=n_items)  # (N,)
        res[ds] = {}
        for spec in a.ids:
            per_seed = []
            for seed in a.seeds:
                model, group, batch = load(ds, spec, seed, n_items)
                metrics = json.loads((run_folder(ds, spec, seed) / "metrics.json").read_text())
                facts = {
                    sp: tie_facts(model, group, pop, getattr(data, sp), batch) for sp in SPLITS
                }
                with np.load(run_folder(ds, spec, seed) / "ranks.npz") as z:
                    ranks = {sp: (z[f"{sp}_target"], z[f"{sp}_rank"]) for sp in SPLITS}
                for sp in SPLITS:
                    target, rank = ranks[sp]
                    run_hit = (rank >= 0) & (rank < K)
                    # the recomputed top ten may differ only where the target ties across the
                    # cut (topk orders ties by its own rules); elsewhere: not the run's model
                    off = run_hit != facts[sp]["hit"].astype(bool)
                    at_cut = (facts[sp]["fair"] > 0) & (facts[sp]["fair"] < 1)
                    want = metrics[sp]["all"]["recall@10"]
                    if (
                        not np.array_equal(target, getattr(data, sp).target)
                        or (off & ~at_cut).any()
                    ):
                        raise SystemExit(
                            f"{ds} {spec} seed {seed} {sp}: recomputed top ten differs from "
                            f"the run's ranks.npz on {int((off & ~at_cut).sum())} user(s) whose "
                            "target does not tie across the cut; the model or SID table is not "
                            "the run's"
                        )
                    facts[sp]["hit"] = run_hit.astype(float)  # the evaluation's own hits
                    assert abs(run_hit.mean() - want) < 1e-9, (run_hit.mean(), want)
                shared = np.bincount(group)[group] > 1  # (N,) the item shares its SID
                facts["shared"] = {sp: shared[getattr(data, sp).target] for sp in SPLITS}
                per_seed.append(facts)
                print(ds, spec, seed, {sp: round(facts[sp]["sid"].mean(), 4) for sp in SPLITS})
            res[ds][spec] = per_seed
    out = {"command": "python benchmarks/bench_sid_ties.py " + " ".join(sys.argv[1:])}
    out |= {"commit": commit, "seeds": a.seeds, "k": K, "datasets": {}}
    lines = [
        "# Ties between items that share a SID: slots taken, and Recall@10 at one slot per SID",
        "",
        f"Command: `{out['command']}` (commit {commit}, model seeds {a.seeds}, tokenizer seed 0; "
        "bench_parallel_ids' trained runs, nothing trained). Mean ± 95% CI over seeds. "
        "`R@10`: as evaluated (each run's ranks.npz); `tie-fair`: ties broken at random "
        "(expected); `popularity tie-break`: ties broken by training interactions, then item "
        "id; `SID R@10`: the target's SID among the ten best distinct "
        "SIDs; `distinct`: distinct SIDs among the top ten items; `shared`: targets whose SID "
        "another item has.",
        "",
        "| data set | IDs | split | R@10 | tie-fair R@10 | popularity tie-break R@10 | SID R@10 "
        "| distinct in top 10 | shared targets |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for ds, by_spec in res.items():
        out["datasets"][ds] = {}
        for spec, seeds in by_spec.items():
            cells = {}
            for sp in SPLITS:
                cells[sp] = {
                    "recall@10": mean_ci([f[sp]["hit"].mean() for f in seeds]),
                    "tie_fair_recall@10": mean_ci([f[sp]["fair"].mean() for f in seeds]),
                    "popularity_tie_break_recall@10": mean_ci([f[sp]["pop"].mean() for f in seeds]),
                    "sid_recall@10": mean_ci([f[sp]["sid"].mean() for f in seeds]),
                    "distinct_in_top10": mean_ci([f[sp]["distinct"].mean() for f in seeds]),
                    "shared_targets": float(seeds[0]["shared"][sp].mean()),
                }
                c = cells[sp]
                lines.append(
                    f"| {ds} | {spec} | {sp} | "
                    + " | ".join(
                        cell(c[k])
                        for k in (
                            "recall@10",
                            "tie_fair_recall@10",
                            "popularity_tie_break_recall@10",
                            "sid_recall@10",
                        )
                    )
                    + f" | {c['distinct_in_top10']['mean']:.2f} | {c['shared_targets']:.3f} |"
                )
            out["datasets"][ds][spec] = cells
    if a.pair:
        lines += ["", "Paired over the same users (95% bootstrap interval, seeds pooled):", ""]
        out["paired"] = []
        for ds, by_spec in res.items():
            for x, y in a.pair:
                for sp in SPLITS:
                    for key, label in (
                        ("fair", "tie-fair R@10"),
                        ("pop", "popularity tie-break R@10"),
                        ("sid", "SID R@10"),
                    ):
                        xs = np.stack([f[sp][key] for f in by_spec[x]])
                        ys = np.stack([f[sp][key] for f in by_spec[y]])
                        d = paired_users(xs, ys, names=(x, y))
                        out["paired"].append({"dataset": ds, "split": sp, "metric": label, **d})
                        lines.append(f"- {ds}, {sp} {label}: {paired_text(d, xs.shape[1])}")
        out["pairs"] = pair_args(a.pair)
    write_json(RESULTS / f"{a.results}.json", out)
    write_text(RESULTS / f"{a.results}.md", "\n".join(lines) + "\n")
    print(f"wrote {RESULTS}/{a.results}.md")


if __name__ == "__main__":
    main()
