"""Graph-constrained decoding against exact scoring (issue 15): what RPG's approximate top-k
(mmsid.retrieval.graph, ``--set parallel.decode=graph``) costs in Recall@10 and buys in speed,
on bench_parallel_ids' trained parallel-SID runs (nothing is trained).

    python benchmarks/bench_graph_decode.py --dataset amazon-beauty \
        --ids mmq-ft:1/title+categories --seeds 0 1 2 [--settings 10,100,3 ...] [--threads 2]

For every run and split, every user is decoded from the same log-probabilities exactly (every
catalogue item scored) and by the graph at each setting BEAMS,EDGES,STEPS (RPG's amazon-beauty
setting is 10,100,3; the beam widens to k = 10 where it is narrower). Reported per setting:
Recall@10 (all users, cold and long-tail targets), the share of the exact top ten the graph's
top ten holds (the exact top ten is recomputed here: where the target ties across the cut it
may differ from the evaluation's), the paired
difference graph - exact in per-user hits@10 (bootstrap over users, seeds pooled), decoding
throughput (users/s of the top-k step alone, fp32, ``--threads`` threads, users batched by
history length as the evaluation batches them) and the graph's build time. The encoder pass is
the same for both and is timed once. Writes benchmarks/results/graph_decode.{json,md}
(``--results STEM``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from bench_parallel_ids import run_folder
from bench_sid_ties import load

from mmsid.device import cpu_description
from mmsid.eval.stats import mean_ci, paired_text, paired_users
from mmsid.io import write_json, write_text
from mmsid.pipeline import git_commit
from mmsid.protocol import load_protocol
from mmsid.retrieval.data import build_retrieval

RESULTS = Path(os.environ.get("MMSID_RESULTS_DIR") or Path(__file__).resolve().parent / "results")
K = 10
SPLITS = ("valid", "test")
SLICES = ("all", "cold", "long_tail")


@torch.no_grad()
def decode_split(model, split, batch: int, settings: list[tuple[int, int, int]]) -> dict:
    """Per user (the split's order): the exact top ten and each setting's, whether the target
    ties the exact tenth score (there the top ten may differ from the evaluation's); seconds
    spent in the encoder, in exact top-k and in each setting's top-k; each graph's build time."""
    from mmsid.retrieval.graph import candidate_scores

    n = len(split)
    at_cut = np.zeros(n, bool)
    order = np.argsort((split.history >= 0).sum(1), kind="stable")
    tops = {"exact": np.empty((n, K), np.int64)} | {s: np.empty((n, K), np.int64) for s in settings}
    secs = dict.fromkeys(tops, 0.0) | {"encoder": 0.0}
    graphs, build = {}, {}
    for s in settings:  # each graph once, before the users, timed on its own
        t0 = time.perf_counter()
        graphs[s] = model.build_sid_graph(edges=s[1])
        build[s] = time.perf_counter() - t0
    for s0 in range(0, n, batch):
        idx = order[s0 : s0 + batch]
        t0 = time.perf_counter()
        lp = model.last_log_probs(torch.from_numpy(split.history[idx]))  # (B, m, K)
        secs["encoder"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        ids, vals = model.top_codes(lp, K)
        secs["exact"] += time.perf_counter() - t0
        tops["exact"][idx] = ids.numpy()
        tgt = candidate_scores(lp, model.codes, torch.from_numpy(split.target[idx])[:, None])
        at_cut[idx] = (tgt[:, 0] == vals[:, -1]).numpy()
        for s in settings:
            t0 = time.perf_counter()
            got, _ = model.graph_top_codes(lp, K, graphs[s], beams=s[0], steps=s[2])
            tops[s][idx] = got.numpy()
            secs[s] += time.perf_counter() - t0
    return {"tops": tops, "seconds": secs, "build": build, "at_cut": at_cut}


def cell(m: dict, p: int = 4) -> str:
    """'mean ± CI' (the mean alone from one seed)."""
    return f"{m['mean']:.{p}f}" + ("" if m["ci"] is None else f" ± {m['ci']:.{p}f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="amazon-beauty")
    ap.add_argument("--ids", nargs="+", required=True, help="bench_parallel_ids' ID specs")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument(
        "--settings", nargs="+", default=["10,100,3", "20,100,3", "50,100,3", "20,100,5"]
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--results", default="graph_decode", help="results file stem")
    a = ap.parse_args()
    settings = [tuple(int(v) for v in s.split(",")) for s in a.settings]
    if any(len(s) != 3 or min(s) < 1 for s in settings):
        raise SystemExit(f"--settings {a.settings}: write BEAMS,EDGES,STEPS, each >= 1")
    commit = git_commit()  # before anything is written
    torch.set_num_threads(a.threads)
    data = build_retrieval(load_protocol(a.dataset))
    n_items = data.protocol.n_items
    cmd = "python benchmarks/bench_graph_decode.py " + " ".join(sys.argv[1:])
    out: dict = {"command": cmd, "commit": commit, "seeds": a.seeds, "threads": a.threads}
    out |= {"cpu": cpu_description(), "k": K, "dataset": a.dataset, "ids": {}}
    names = {s: f"graph {s[0]} beams, {s[1]} edges, {s[2]} steps" for s in settings}
    lines = [
        f"# Graph-constrained decoding against exact scoring on {a.dataset}",
        "",
        f"Command: `{cmd}` (commit {commit}, model seeds {a.seeds}; bench_parallel_ids' trained "
        f"runs, nothing trained). {n_items} catalogue items; fp32, {a.threads} threads, "
        f"{out['cpu']}. Mean ± 95% CI over seeds. `overlap`: share of the exact top ten in the "
        "graph's top ten; `users/s`: the top-k step alone (the encoder pass, the same for both, "
        "is its own row); `build s`: the graph, once per trained model.",
        "",
    ]
    for spec in a.ids:
        per_seed = []
        for seed in a.seeds:
            model, _, batch = load(a.dataset, spec, seed, n_items)
            run = {}
            for sp in SPLITS:
                split = getattr(data, sp)
                d = decode_split(model, split, batch, settings)
                hits = {k: (v == split.target[:, None]).any(1) for k, v in d["tops"].items()}
                with np.load(run_folder(a.dataset, spec, seed) / "ranks.npz") as z:
                    rank = z[f"{sp}_rank"]
                run_hits = (rank >= 0) & (rank < K)
                off = (run_hits != hits["exact"]) & ~d["at_cut"]  # ties across the cut may differ
                if off.any():
                    raise SystemExit(
                        f"{spec} seed {seed} {sp}: the exact top ten differs from the run's "
                        f"ranks.npz for {int(off.sum())} user(s): not the run's model or SIDs"
                    )
                masks = {"all": np.ones(len(split), bool), **data.slices(split.target)}
                run[sp] = {
                    "hits": hits,
                    "masks": masks,
                    "overlap": {
                        s: np.mean(
                            [
                                len(set(x) & set(y)) / K
                                for x, y in zip(d["tops"]["exact"], d["tops"][s])
                            ]
                        )
                        for s in settings
                    },
                    "users_per_s": {k: len(split) / v for k, v in d["seconds"].items()},
                    "build": d["build"],
                }
            per_seed.append(run)
            print(
                spec,
                seed,
                {sp: {str(s): round(run[sp]["overlap"][s], 3) for s in settings} for sp in SPLITS},
            )
        rows, res = [], {}
        lines += [
            f"## {spec}",
            "",
            "| decoding | split | R@10 all | cold | long tail | overlap | users/s | build s |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for key in ["exact", *settings]:
            name = "exact" if key == "exact" else names[key]
            res[name] = {}
            for sp in SPLITS:
                c = {
                    sl: mean_ci([r[sp]["hits"][key][r[sp]["masks"][sl]].mean() for r in per_seed])
                    for sl in SLICES
                }
                c["users_per_s"] = mean_ci([r[sp]["users_per_s"][key] for r in per_seed])
                if key != "exact":
                    c["overlap"] = mean_ci([r[sp]["overlap"][key] for r in per_seed])
                    c["build_seconds"] = mean_ci([r[sp]["build"][key] for r in per_seed])
                    h = [
                        np.stack([r[sp]["hits"][x] for r in per_seed]).astype(float)
                        for x in (key, "exact")
                    ]
                    c["paired_vs_exact"] = paired_users(h[0], h[1], names=(name, "exact"))
                    rows.append(
                        f"- {sp} hits@10: {paired_text(c['paired_vs_exact'], h[0].shape[1])}"
                    )
                res[name][sp] = c
                lines.append(
                    f"| {name} | {sp} | {cell(c['all'])} | {cell(c['cold'])} | "
                    f"{cell(c['long_tail'])} | "
                    + (f"{cell(c['overlap'], 3)} | " if "overlap" in c else "1 | ")
                    + f"{cell(c['users_per_s'], 0)} | "
                    + (f"{cell(c['build_seconds'], 1)} |" if "build_seconds" in c else " |")
                )
        enc = mean_ci([r[sp]["users_per_s"]["encoder"] for r in per_seed for sp in SPLITS])
        lines += ["", f"Encoder pass (both): {enc['mean']:.0f} users/s.", "", *rows, ""]
        res["encoder_users_per_s"] = enc
        out["ids"][spec] = res
    write_json(RESULTS / f"{a.results}.json", out)
    write_text(RESULTS / f"{a.results}.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
