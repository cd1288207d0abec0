"""Trie-constrained beam search throughput (issue 4): users/s on Amazon Beauty, beam 20,
top-10, TIGER at the paper's size, the batched search against the slow reference (a Python
loop over beams with a catalogue scan) on a subset, and identical outputs checked.

    python benchmarks/bench_beam.py --sids RUN/sids.parquet [--model RUN/model.pt]
        [--threads 2] [--users 2048]

Without --model the weights are random (throughput does not depend on them). Writes
benchmarks/results/beam_search.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mmsid.data import load_dataset
from mmsid.device import bf16_autocast, cpu_description
from mmsid.io import load_torch, write_json, write_text
from mmsid.protocol import build_protocol
from mmsid.retrieval.config import RetrieveConfig
from mmsid.retrieval.data import build_retrieval
from mmsid.retrieval.models import item_sids
from mmsid.retrieval.run import recommend_all
from mmsid.retrieval.tiger import TIGER, TIGERConfig, recommend_reference

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="amazon-beauty")
    ap.add_argument("--sids", required=True)
    ap.add_argument("--model", default=None, help="model.pt of a `mmsid retrieve` run")
    ap.add_argument("--users", type=int, default=2048)
    ap.add_argument("--reference-users", type=int, default=16)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--beam", type=int, default=20)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ds = load_dataset(a.dataset)
    data = build_retrieval(build_protocol(ds))
    sids, vocab = item_sids(RetrieveConfig(dataset=a.dataset, sids=a.sids), ds.n_items)
    torch.manual_seed(0)
    model = TIGER(sids, vocab, TIGERConfig())
    if a.model:
        model.load_state_dict(load_torch(a.model)["state"])
    model.eval()
    test = data.test.take(np.arange(min(a.users, len(data.test))))
    rows = []
    for amp in ("off", "on"):
        for bs in (64, 256, 1024):
            times, out = [], None
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                with bf16_autocast("cpu", amp):
                    out = recommend_all(model, test, a.k, beam=a.beam, batch_size=bs, device="cpu")
                times.append(time.perf_counter() - t0)
            med = float(np.median(times))
            rows.append(
                {
                    "amp": amp,
                    "batch_users": bs,
                    "seconds": med,
                    "users_per_s": len(test) / med,
                    "valid": bool((out >= 0).all()),
                }
            )
            print(rows[-1])
    # the slow reference on a few users, and agreement with the batched search (fp32)
    n_ref = a.reference_users
    sub = test.take(np.arange(n_ref))
    t0 = time.perf_counter()
    ref = [
        [
            i
            for i, _ in recommend_reference(
                model, int(sub.user[u]), torch.from_numpy(sub.history[u]), a.k, a.beam, sids
            )
        ]
        for u in range(n_ref)
    ]
    t_ref = time.perf_counter() - t0
    fast = recommend_all(model, sub, a.k, beam=a.beam, batch_size=n_ref, device="cpu")
    agree = float(np.mean([list(f) == r for f, r in zip(fast.tolist(), ref)]))
    res = {
        "dataset": a.dataset,
        "users": len(test),
        "beam": a.beam,
        "k": a.k,
        "threads": a.threads,
        "weights": a.model or "random init",
        "cpu": cpu_description(),
        "rows": rows,
        "reference": {"users": n_ref, "users_per_s": n_ref / t_ref, "identical_lists_share": agree},
        "command": "python " + " ".join(sys.argv),
    }
    write_json(RESULTS / "beam_search.json", res)
    md = [
        f"# Trie-constrained beam search throughput ({a.dataset}, beam {a.beam}, top-{a.k})",
        "",
        f"{len(test)} test users, TIGER 4+4 layers d 128, {a.threads} CPU threads, "
        f"weights: {res['weights']}.",
        "",
        "| bf16 autocast | users per batch | users/s |",
        "|---|---|---|",
    ]
    md += [f"| {r['amp']} | {r['batch_users']} | {r['users_per_s']:.0f} |" for r in rows]
    md += [
        "",
        f"Slow reference (Python loop over beams, catalogue scan): "
        f"{res['reference']['users_per_s']:.2f} users/s on {n_ref} users; batched search gives "
        f"the identical top-{a.k} list for {agree:.0%} of them.",
        "",
        f"Reproduce: `{res['command']}`",
        "",
    ]
    write_text(RESULTS / "beam_search.md", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
