"""Catalogues beyond one machine's comfort (issue 19): tokenizers that read features a chunk
at a time (1M x 768 float32 and 10M x 768 float16 .npy files), and exact full-catalogue
scoring of the parallel-SID retriever over a million items.

    python benchmarks/bench_scale.py [--items 1000000] [--threads 2] \\
        [--tokenizers 1000000:float32 10000000:float16]

Tokenizers: synthetic unit-norm Gaussian rows written to ``runs/scale/`` (kept for re-runs; a
10M x 768 float16 file is 15 GB), then per method in its own process: ``fit(path)`` (RQ-KMeans
3 x 256: k-means on a seeded sample of 256 rows per code, residual MSE over every row;
RQ-VAE: one epoch, every batch read from the file) and ``transform(path)``; for RQ-KMeans also
faiss's ``ResidualQuantizer.compute_codes`` on the same codebooks, timed against
``transform(chunk)`` chunk by chunk in alternating order, with the SIDs compared. Peak RSS
is the process's ``ru_maxrss``.

Each configuration runs in its own process, so its peak RSS is its own. Codes and weights are
random and seeded (the cost of exact scoring depends on shapes, not values): one causal pass
per user, m per-code heads, then a gather-sum over N items x m codes kept as a running top-k
per item chunk (``ParallelSID.top_codes``: memory users x chunk, never users x N). The chunked
top-k is checked against ``topk`` over all N scores on the first batch. Writes
benchmarks/results/scale.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from bench_tokenizers import PAUSE_S

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DATA = HERE.parent / "runs" / "scale"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def scoring(items: int, m: int, batch: int, users: int, threads: int, chunk: int) -> dict:
    """One configuration, in this process: users/s of exact top-10 over ``items`` items."""
    import torch

    from mmsid.retrieval.parallel import ParallelSID, ParallelSIDConfig

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    codes = rng.integers(256, size=(items, m), dtype=np.int64)
    cfg = ParallelSIDConfig(d_model=256, d_ff=512, dropout=0.0, temperature=0.07, score_chunk=chunk)
    net = ParallelSID(codes, 256, cfg).eval()
    hist = torch.from_numpy(rng.integers(items, size=(users, cfg.max_history)))
    with torch.no_grad():  # exactness on the first batch: chunked top-k = top-k of all scores
        lp = net.last_log_probs(hist[:batch])
        ids, vals = net.top_codes(lp, 10)
        full = net.score_codes(lp).topk(10, dim=1)
        max_diff = float((vals - full.values).abs().max())
        same_items = float((ids == full.indices).float().mean())
    del lp, full
    rss_before = _peak_rss_mb()
    t0 = time.perf_counter()
    with torch.no_grad():
        for s in range(0, users, batch):
            net.recommend({"history": hist[s : s + batch]}, 10)
    sec = time.perf_counter() - t0
    return {
        "items": items,
        "codes": m,
        "users": users,
        "batch": batch,
        "chunk": chunk,
        "threads": threads,
        "users_per_s": users / sec,
        "seconds": sec,
        "topk_max_abs_diff_vs_all_scores": max_diff,
        "topk_same_items_share": same_items,
        # the check above builds the full (batch, N) matrix once; the timed loop never does
        "peak_rss_mb_after_check": rss_before,
        "peak_rss_mb": _peak_rss_mb(),
    }


def features(items: int, dtype: str) -> Path:
    """A synthetic (items, 768) .npy of unit-norm Gaussian rows, written a chunk at a time."""
    from mmsid.quantizers.rows import write_npy

    path = DATA / f"synthetic-{items}x768-{dtype}.npy"
    if not path.exists():
        rng = np.random.default_rng(0)

        def chunks():
            for s in range(0, items, 262_144):
                x = rng.standard_normal((min(262_144, items - s), 768), dtype=np.float32)
                yield x / np.linalg.norm(x, axis=1, keepdims=True)

        write_npy(path, (items, 768), dtype, chunks())
    return path


def tokenizer(path: str, method: str, threads: int) -> dict:
    """One streamed fit + transform, in this process."""
    import torch

    from mmsid.quantizers import tokenizer_for
    from mmsid.quantizers.rows import Rows

    torch.set_num_threads(threads)
    rows = Rows(path)
    kw = {"levels": 3, "codebook_size": 256, "seed": 0}
    tok = tokenizer_for(method, **kw, **({"epochs": 1} if method == "rq-vae" else {}))
    t0 = time.perf_counter()
    tok.fit(rows, **({"progress": False} if method == "rq-vae" else {}))
    t_fit = time.perf_counter() - t0
    rss_fit = _peak_rss_mb()
    t0 = time.perf_counter()
    codes = tok.transform(rows)
    t_assign = time.perf_counter() - t0
    out = {
        "method": method,
        "items": len(rows),
        "dim": rows.dim,
        "storage": str(rows.dtype),
        "fit_seconds": t_fit,
        "assign_seconds": t_assign,
        "assign_items_per_s": len(rows) / t_assign,
        "peak_rss_mb_fit": rss_fit,
        "peak_rss_mb": _peak_rss_mb(),
        "history_last": tok.history[-1],
    }
    if method == "rq-kmeans":  # faiss's encoder on the same codebooks, over the same chunks
        import faiss

        faiss.omp_set_num_threads(threads)
        f = faiss.ResidualQuantizer(rows.dim, 3, 8)
        C = tok.module.codebooks.detach().numpy()
        faiss.copy_array_to_vector(C.reshape(-1), f.codebooks)
        f.is_trained, f.max_beam_size = True, 1  # greedy: the same algorithm as ours
        f.use_beam_LUT = 1
        f.compute_codebook_tables()
        # Paired: each chunk is read once (untimed), then encoded by both, the first to run
        # swapping every chunk, so a machine whose speed drifts slows both alike
        from mmsid.eval.stats import speed_ratio

        same, t_ours, t_theirs = 0, [], []
        for i, (s, chunk) in enumerate(rows.chunks()):
            for impl in ("ours", "faiss") if i % 2 == 0 else ("faiss", "ours"):
                time.sleep(PAUSE_S)  # let the other encoder's BLAS threads go idle first
                t0 = time.perf_counter()
                if impl == "ours":
                    ours = tok.transform(chunk)
                    t_ours.append(time.perf_counter() - t0)
                else:
                    theirs = f.compute_codes(chunk)[:, :3].astype(np.int64)
                    t_theirs.append(time.perf_counter() - t0)
            assert np.array_equal(ours, codes[s : s + len(chunk)]), "transform(chunk) != (path)"
            same += int((theirs == ours).all(1).sum())
        ratio, lo, hi = speed_ratio(t_ours, t_theirs)
        out["paired_items_per_s"] = len(rows) / sum(t_ours)
        out["faiss_assign_items_per_s"] = len(rows) / sum(t_theirs)
        out["ratio_vs_faiss"], out["ratio_ci95"] = ratio, [lo, hi]
        out["identical_sids_vs_faiss"] = same / len(rows)
        out["peak_rss_mb"] = _peak_rss_mb()
    return out


def child(spec: dict) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokenizers", nargs="*", default=["1000000:float32", "10000000:float16"])
    ap.add_argument("--child", default=None)
    args = ap.parse_args()
    if args.child:
        spec = json.loads(args.child)
        fn = tokenizer if spec.pop("kind", "scoring") == "tokenizer" else scoring
        print(json.dumps(fn(**spec)))
        return
    from mmsid.device import cpu_description
    from mmsid.io import write_json, write_text
    from mmsid.pipeline.runner import git_commit

    commit = git_commit()
    if commit is None or commit.endswith("+dirty"):
        sys.exit(f"commit {commit}: run from a clean checkout so the figures can be regenerated")
    toks = []
    for spec in args.tokenizers:
        items, dtype = spec.split(":")
        path = features(int(items), dtype)
        for method in ("rq-kmeans", "rq-vae"):
            toks.append(
                child(dict(kind="tokenizer", path=str(path), method=method, threads=args.threads))
            )
            print(toks[-1], flush=True)
    rows = []
    for m in (8, 16, 32):
        for batch in (64, 256):
            spec = dict(
                items=args.items,
                m=m,
                batch=batch,
                users=args.users,
                threads=args.threads,
                chunk=65536,
            )
            rows.append(child(spec))
            print(rows[-1], flush=True)
    res = {
        "command": "python benchmarks/" + " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "commit": commit,
        "seeds": [0],
        "machine": cpu_description(),
        "pause_s": PAUSE_S,
        "tokenizers": toks,
        "scoring": rows,
    }
    write_json(RESULTS / "scale.json", res)
    write_text(RESULTS / "scale.md", report(res))
    print(report(res))


def report(res: dict) -> str:
    r0 = res["scoring"][0]
    lines = [
        "# Scale: tokenizers a chunk at a time, exact scoring of a million items",
        "",
        f"Command: `{res['command']}` (commit {res['commit']}, seed 0; {res['machine']}, "
        f"{r0['threads']} threads).",
        "",
        "## Tokenizers reading a .npy a chunk at a time (3 x 256 codes)",
        "",
        "Synthetic unit-norm rows. RQ-KMeans: k-means per level on a seeded sample of 65,536 "
        "rows, residual MSE over every row; RQ-VAE: one epoch, batches of 1,024 read from the "
        "file. Assignment: `transform(path)`, chunks of 32,768 rows. Against faiss's greedy "
        "residual encoder on the same codebooks: each chunk read once, then `transform(chunk)` "
        "and faiss's encoder in turn (the first to run swaps every chunk; each call after "
        f"{res['pause_s']} s of rest); the ratio (our "
        "speed / faiss's) is the geometric mean over chunks with its 95% interval.",
        "",
        "| items x dim | storage | method | fit s | assign s | items/s | paired: ours / faiss "
        "items/s | ratio [95% CI] | identical SIDs | peak RSS fit / all (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in res["tokenizers"]:
        paired = "- | - | -"
        if "ratio_vs_faiss" in t:
            lo, hi = t["ratio_ci95"]
            paired = (
                f"{t['paired_items_per_s']:,.0f} / {t['faiss_assign_items_per_s']:,.0f} | "
                f"{t['ratio_vs_faiss']:.2f} [{lo:.2f}, {hi:.2f}] | "
                f"{t['identical_sids_vs_faiss']:.4%}"
            )
        lines.append(
            f"| {t['items']:,} x {t['dim']} | {t['storage']} | {t['method']} | "
            f"{t['fit_seconds']:.0f} | {t['assign_seconds']:.0f} | "
            f"{t['assign_items_per_s']:,.0f} | {paired} | "
            f"{t['peak_rss_mb_fit']:,.0f} / {t['peak_rss_mb']:,.0f} |"
        )
    lines += [
        "",
        "## Exact full-catalogue scoring (parallel-SID)",
        "",
        f"fp32. {r0['items']:,} items with random codes of 256, width "
        f"256, {r0['users']} users with 20-item histories, top-10 over every item, item chunks "
        f"of {r0['chunk']:,} with a running top-k.",
        "",
        "| codes | users per batch | users/s | items scored/s | peak RSS (MB) "
        "| top-k = all-scores top-k |",
        "|---|---|---|---|---|---|",
    ]
    for r in res["scoring"]:
        lines.append(
            f"| {r['codes']} | {r['batch']} | {r['users_per_s']:.1f} | "
            f"{r['users_per_s'] * r['items'] / 1e6:.0f} M | {r['peak_rss_mb']:,.0f} | "
            f"{r['topk_same_items_share']:.0%} "
            f"(max diff {r['topk_max_abs_diff_vs_all_scores']:.1e}) |"
        )
    lines += [
        "",
        "Peak RSS includes the one-off exactness check, which builds the full users x items "
        "score matrix for one batch; the timed loop keeps users x chunk.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
