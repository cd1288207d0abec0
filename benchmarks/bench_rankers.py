"""Rankers' training step time at several ID lengths: DIN + SID with the SID embedding's fast
path (mmsid.ranking.layers.SIDEmbedding.forward: each distinct item of the batch embedded once,
then gathered) against its slow reference (forward_reference: L code lookups at every history
position), on real training batches of a data set's CTR samples.

    python benchmarks/bench_rankers.py [--dataset ml100k-mm] [--threads 1] [--lengths 6 12 16 32]

One SID set of random codes (seeded; K = 256) per length: a step's cost depends on the shapes
and on how many distinct items a batch holds (the data set's), not on the codes' values. A step
is forward + backward + Adam on one batch of 1024 samples; the median over ``--steps`` steps
after ``--warmup`` is reported. Both paths start from the same weights, and their logits and
gradients on one batch are compared (equal values; gradients up to float summation order).
Timings compare only on the same CPU (recorded) and thread count. Writes
benchmarks/results/rankers.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mmsid.device import cpu_description
from mmsid.io import write_json, write_text
from mmsid.protocol import load_protocol
from mmsid.ranking.din import DIN
from mmsid.ranking.samples import build_ctr
from mmsid.ranking.train import batch_of

RESULTS = Path(os.environ.get("MMSID_RESULTS_DIR") or Path(__file__).resolve().parent / "results")
BATCH = 1024  # mmsid.ranking.train.TrainConfig's default


def use_reference(model: DIN) -> DIN:
    """``model`` with every SID embedding on its slow per-position reference."""
    for s in model.sid.values():
        s.forward = s.forward_reference  # an instance attribute shadows the class's forward
    return model


def step_seconds(model: DIN, batches: list[dict], warmup: int) -> list[float]:
    """Seconds per training step (forward, backward, Adam), one per batch after ``warmup``."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    out = []
    for i, b in enumerate(batches):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        model.loss(b).backward()
        opt.step()
        if i >= warmup:
            out.append(time.perf_counter() - t0)
    return out


def compare(fast: DIN, ref: DIN, batch: dict) -> tuple[float, float]:
    """Largest |logit| and |gradient| difference between the two paths on one batch."""
    grads = []
    logits = []
    for m in (fast, ref):
        m.zero_grad(set_to_none=True)
        out = m(batch)
        out.sum().backward()
        logits.append(out.detach())
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None]))
    return float((logits[0] - logits[1]).abs().max()), float((grads[0] - grads[1]).abs().max())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="ml100k-mm")
    ap.add_argument("--lengths", nargs="+", type=int, default=[6, 12, 16, 32])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    a = ap.parse_args()
    if a.steps <= a.warmup:
        raise SystemExit(f"--steps ({a.steps}) must exceed --warmup ({a.warmup})")
    torch.set_num_threads(a.threads)
    data = build_ctr(load_protocol(a.dataset))
    N = data.protocol.n_items
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(data.train.item))[: a.steps * BATCH]
    batches = [batch_of(data.train, idx[i : i + BATCH], "cpu") for i in range(0, len(idx), BATCH)]
    distinct = [int(torch.unique(b["history"]).numel()) for b in batches]
    H = int(data.train.history.shape[1])
    rows = []
    for L in a.lengths:
        codes = np.random.default_rng(L).integers(256, size=(N, L))
        torch.manual_seed(0)
        fast = DIN(N, sids={"sid": codes})
        ref = use_reference(copy.deepcopy(fast))
        d_logit, d_grad = compare(fast, ref, batches[0])
        row = {"codes": L, "max_abs_diff_logits": d_logit, "max_abs_diff_grads": d_grad}
        for name, model in (("fast", fast), ("reference", ref)):
            sec = step_seconds(model, batches, a.warmup)
            row[f"{name}_ms_per_step"] = 1e3 * float(np.median(sec))
        row["speedup"] = row["reference_ms_per_step"] / row["fast_ms_per_step"]
        rows.append(row)
        print(row, flush=True)
    from mmsid.pipeline.runner import git_commit

    res = {
        "dataset": a.dataset,
        "items": N,
        "batch_size": BATCH,
        "history_length": H,
        "distinct_items_per_batch_median": float(np.median(distinct)),
        "steps_timed": a.steps - a.warmup,
        "threads": a.threads,
        "precision": "fp32",
        "model": "DIN (dim 64) + one SID set, random codes of 256 (cost depends on shapes only)",
        "cpu": cpu_description(),
        "rows": rows,
        "command": "python benchmarks/" + " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "seeds": [0],
        "commit": git_commit(),
    }
    write_json(RESULTS / "rankers.json", res)
    md = [
        f"# DIN + SID training step on {a.dataset}: SID embedding fast path vs reference",
        "",
        f"Batches of {BATCH} real training samples (histories of {H} items; median "
        f"{res['distinct_items_per_batch_median']:.0f} distinct history items per batch, "
        f"{N} items), one SID set of random codes, forward + backward + Adam, fp32, "
        f"{a.threads} CPU thread(s), median over {res['steps_timed']} steps. CPU: {res['cpu']}.",
        "",
        "| codes | fast ms/step | reference ms/step | speedup | max diff logits | max diff grads |",
        "|---|---|---|---|---|---|",
    ]
    md += [
        f"| {r['codes']} | {r['fast_ms_per_step']:.1f} | {r['reference_ms_per_step']:.1f} | "
        f"{r['speedup']:.2f}x | {r['max_abs_diff_logits']:.1e} | {r['max_abs_diff_grads']:.1e} |"
        for r in rows
    ]
    md += ["", f"Command: `{res['command']}` (commit {res['commit']}).", ""]
    write_text(RESULTS / "rankers.md", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
