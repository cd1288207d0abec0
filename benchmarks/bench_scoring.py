"""Inference throughput (issue 15): users/s for the parallel-SID retriever's exact scoring of
the whole catalogue, against TIGER's trie-constrained beam search, on amazon-beauty's test
users, fp32, a fixed number of CPU threads.

    python benchmarks/bench_scoring.py [--threads 2] [--users 2048]

Weights are random and codes are random (seeded): the cost of exact scoring (one causal pass,
m per-code heads, a gather-sum over N items x m codes) and of beam search depends on the
shapes, not on the values. Exact scoring is checked against the slow per-item reference on a
few users. Writes benchmarks/results/scoring.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mmsid.device import cpu_description
from mmsid.ids import SIDTable
from mmsid.io import write_json, write_text
from mmsid.protocol import load_protocol
from mmsid.retrieval.data import build_retrieval
from mmsid.retrieval.parallel import RPG, ParallelSID, ParallelSIDConfig, score_reference
from mmsid.retrieval.run import recommend_all
from mmsid.retrieval.tiger import TIGER, TIGERConfig

RESULTS = Path(__file__).resolve().parent / "results"


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="amazon-beauty")
    ap.add_argument("--users", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--beam", type=int, default=20)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    data = build_retrieval(load_protocol(a.dataset))
    N = data.protocol.n_items
    test = data.test.take(np.arange(min(a.users, len(data.test))))
    rng = np.random.default_rng(0)
    rows = []
    for m, d in ((8, 256), (16, 256), (32, 256), (32, 448)):
        cfg = ParallelSIDConfig(**RPG) if d == RPG["d_model"] else ParallelSIDConfig(d_model=d)
        model = ParallelSID(rng.integers(256, size=(N, m)), 256, cfg).eval()
        for bs in (64, 256):
            sec = timed(
                lambda: recommend_all(model, test, a.k, beam=0, batch_size=bs, device="cpu"),
                a.repeats,
            )
            rows.append(
                {
                    "model": "parallel-sid exact",
                    "codes": m,
                    "d_model": d,
                    "batch_users": bs,
                    "users_per_s": len(test) / sec,
                }
            )
            print(rows[-1], flush=True)
        # exact scoring equals the slow per-item reference (4 users)
        h = torch.from_numpy(test.history[:4])
        n = (h >= 0).sum(1)
        with torch.no_grad():
            last = model.hidden(h[:, : int(n.max())])[torch.arange(4), n - 1]
            lp = model.log_probs(last)
            err = float((model.score_codes(lp) - score_reference(model, lp)).abs().max())
        rows[-1]["max_abs_diff_vs_reference"] = err
    # TIGER at the paper's size over random unique 3-level SIDs (+ collision level)
    table = SIDTable.from_codes(rng.integers(256, size=(N, 3)), codebook_size=256)
    sids = table.sids
    vocab = [256] * 3 + [int(sids[:, -1].max()) + 1]
    tiger = TIGER(sids, vocab, TIGERConfig()).eval()
    for bs in (64, 256):
        sec = timed(
            lambda: recommend_all(tiger, test, a.k, beam=a.beam, batch_size=bs, device="cpu"),
            a.repeats,
        )
        rows.append(
            {
                "model": f"tiger beam {a.beam}",
                "codes": 4,
                "d_model": 128,
                "batch_users": bs,
                "users_per_s": len(test) / sec,
            }
        )
        print(rows[-1], flush=True)
    res = {
        "dataset": a.dataset,
        "items": N,
        "users": len(test),
        "k": a.k,
        "threads": a.threads,
        "precision": "fp32",
        "weights": "random init (throughput does not depend on them)",
        "cpu": cpu_description(),
        "rows": rows,
        "command": "python benchmarks/" + " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "seeds": [0],
    }
    from mmsid.pipeline.runner import git_commit

    res["commit"] = git_commit()
    write_json(RESULTS / "scoring.json", res)
    md = [
        f"# Inference throughput on {a.dataset}: exact parallel-SID scoring vs TIGER beam search",
        "",
        f"{len(test)} test users, {N} items, top-{a.k}, fp32, {a.threads} CPU threads, "
        "random weights and codes (cost depends on shapes only).",
        "",
        "| model | codes | width | users per batch | users/s |",
        "|---|---|---|---|---|",
    ]
    md += [
        f"| {r['model']} | {r['codes']} | {r['d_model']} | {r['batch_users']} | "
        f"{r['users_per_s']:.0f} |"
        for r in rows
    ]
    errs = [r["max_abs_diff_vs_reference"] for r in rows if "max_abs_diff_vs_reference" in r]
    md += [
        "",
        f"Exact scoring against the slow per-item reference: largest difference {max(errs):.1e}.",
        "",
        f"Command: `{res['command']}` (commit {res['commit']}).",
        "",
    ]
    write_text(RESULTS / "scoring.md", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
