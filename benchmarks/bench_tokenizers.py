"""Tokenizer benchmarks (issue 3): SID assignment throughput of ``ResidualQuantizer.encode`` vs
``faiss.ResidualQuantizer.compute_codes`` on the same codebooks and data, and training time of
RQ-KMeans and RQ-VAE. Peak RSS is measured with each encoder alone in its own process.

    python benchmarks/bench_tokenizers.py            # everything (about 15 min on 2 cores)
    python benchmarks/bench_tokenizers.py --quick    # 100k synthetic + real sets only

Encode throughput: the encoders timed in one process in alternating rounds (job_paired): mmsid's
default CPU path (NumPy's BLAS), its torch path (``MMSID_CPU_ENCODE=torch``) and faiss.
Writes benchmarks/results/tokenizers.json and tokenizers.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = Path(os.environ.get("MMSID_RESULTS_DIR") or HERE / "results")
L, K = 3, 256
THREADS = int(os.environ.get("BENCH_THREADS", os.cpu_count() or 2))
# Seconds of rest before each timed encode. A BLAS's worker threads spin for a while after a call
# (OpenBLAS about 2^28 cycles, ~0.1 s) and take a core from whichever encoder runs next: timed
# back to back, mmsid's torch path measured 0.70-0.82x faiss after the NumPy path had run and
# 0.92-0.93x with this rest (same code, same process; throwaway script, 2026-12-03).
PAUSE_S = 0.3
ENCODERS = ("mmsid", "mmsid-torch", "faiss")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _data(name: str) -> np.ndarray:
    if name.startswith("synthetic"):
        n = {"synthetic-100k": 100_000, "synthetic-1m": 1_000_000}[name]
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, 768), dtype=np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)
    from mmsid.data import load_dataset
    from mmsid.features import build_features
    from mmsid.features.inputs import DEFAULT_MODALITIES, concat_features

    ds = load_dataset(name)
    names = DEFAULT_MODALITIES[name]
    x, _ = concat_features(build_features(ds, modalities=names, progress=False), names)
    return np.ascontiguousarray(x, dtype=np.float32)


def _codebooks(x: np.ndarray):
    """RQ-KMeans codebooks fitted on (a sample of) x, so both encoders see trained codebooks."""
    import torch

    from mmsid.quantizers import RQKMeansTokenizer
    from mmsid.quantizers.rqkmeans import RQKMeansConfig

    sample = x[np.random.default_rng(1).permutation(len(x))[: min(len(x), 65_536)]]
    tok = RQKMeansTokenizer(RQKMeansConfig(levels=L, codebook_size=K, kmeans_iters=10)).fit(sample)
    return tok.module.codebooks.detach().to(torch.float32)


def gemm_rate(d: int, lib: str) -> float:
    """Measured fp32 GEMM rate (GFLOP/s, median over repeats) of ``lib`` (numpy or torch) at
    the shape encode runs: (2048 x d) @ (d x L*K), the one GEMM per chunk."""
    import torch

    a, b = torch.randn(2048, d), torch.randn(d, L * K)
    if lib == "numpy":
        a, b = a.numpy(), b.numpy()
    for _ in range(3):
        a @ b
    dt, _ = _timed(lambda: a @ b, min_total=1.0, max_runs=200)
    return 2 * 2048 * d * L * K / dt / 1e9


def _timed(fn, min_total: float = 1.0, max_runs: int = 50):
    """Median wall time of ``fn()`` over repeats until ``min_total`` seconds have passed (small
    catalogues encode in milliseconds: one run is noise). Returns (seconds, last result)."""
    times, out = [], None
    while sum(times) < min_total and len(times) < max_runs:
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), out


def _encoder(impl: str, x: np.ndarray, C):
    """The greedy residual encoder ``impl`` (mmsid or faiss) over fixed codebooks C (L, K, d),
    warmed up, as a function of no arguments returning (N, L) int64 codes of x."""
    import torch

    n, d = x.shape
    if impl.startswith("mmsid"):
        from mmsid.quantizers import ResidualQuantizer, ResidualQuantizerConfig

        backend = "torch" if impl == "mmsid-torch" else None  # None: the default CPU path
        rq = ResidualQuantizer(
            cfg=ResidualQuantizerConfig(levels=L, codebook_size=K, dim=d, kmeans_init=False)
        )
        rq.codebooks.data = C.clone()
        xt = torch.from_numpy(x)
        tables = rq.lookup_tables()  # like faiss's compute_codebook_tables, outside the timer
        rq.encode(xt[:4096], tables=tables, backend=backend)  # warm-up
        return lambda: rq.encode(xt, tables=tables, backend=backend).numpy()
    import faiss

    faiss.omp_set_num_threads(THREADS)
    f = faiss.ResidualQuantizer(d, L, 8)
    faiss.copy_array_to_vector(C.numpy().reshape(-1), f.codebooks)
    f.is_trained, f.max_beam_size = True, 1  # greedy: the same algorithm as ours
    f.use_beam_LUT = 1  # faiss's faster path (precomputed codebook tables)
    f.compute_codebook_tables()
    f.compute_codes(x[:4096])
    return lambda: f.compute_codes(x)[:, :L].astype(np.int64)


def job_alone(data: str, impl: str, codebooks: str) -> dict:
    """One encoder alone in its process, on the paired job's codebooks: its peak RSS."""
    import torch

    torch.set_num_threads(THREADS)
    x = _data(data)
    _encoder(impl, x, torch.from_numpy(np.load(codebooks)))()
    return {"data": data, "impl": impl, "peak_rss_mb": _peak_rss_mb()}


def job_paired(
    data: str, codebooks: str, min_rounds: int = 5, max_rounds: int = 41, budget_s: float = 10.0
):
    """The encoders in one process, timed in alternating rounds (the order reverses every
    round), so a machine whose speed drifts (a shared VM: two unpaired runs of this benchmark
    gave the same data set ratios 0.88 and 1.34) slows all alike; each timed call follows a
    rest of PAUSE_S. A ratio is the geometric mean of the per-round speed ratios (an mmsid
    path / faiss) with a 95% t interval over rounds. The codebooks are saved to ``codebooks``
    for the lone runs that measure each encoder's peak RSS."""
    import torch

    from mmsid.eval.stats import speed_ratio

    torch.set_num_threads(THREADS)
    x = _data(data)
    C = _codebooks(x)  # (L, K, d)
    np.save(codebooks, C.numpy())
    enc = {impl: _encoder(impl, x, C) for impl in ENCODERS}
    times: dict[str, list[float]] = {impl: [] for impl in ENCODERS}
    codes = {}
    r = 0
    while r < min_rounds or (r < max_rounds and min(map(sum, times.values())) < budget_s):
        for impl in ENCODERS if r % 2 == 0 else ENCODERS[::-1]:
            time.sleep(PAUSE_S)
            t = time.perf_counter()
            codes[impl] = enc[impl]()
            times[impl].append(time.perf_counter() - t)
        r += 1
    ratio, lo, hi = speed_ratio(times["mmsid"], times["faiss"])
    t_ratio, t_lo, t_hi = speed_ratio(times["mmsid-torch"], times["faiss"])
    n, d = x.shape
    flops = 2.0 * n * L * K * d
    med = {impl: float(np.median(ts)) for impl, ts in times.items()}
    return {
        "data": data,
        "items": n,
        "dim": d,
        "rounds": r,
        "seconds": med,
        "items_per_s": {impl: n / t for impl, t in med.items()},
        "ratio_vs_faiss": ratio,
        "ratio_ci95": [lo, hi],
        "torch_path_ratio_vs_faiss": t_ratio,
        "torch_path_ratio_ci95": [t_lo, t_hi],
        "identical_sid_share": float((codes["mmsid"] == codes["faiss"]).all(axis=1).mean()),
        "identical_between_paths": float(
            (codes["mmsid"] == codes["mmsid-torch"]).all(axis=1).mean()
        ),
        "gflop": flops / 1e9,
        "gflop_per_s": flops / med["mmsid"] / 1e9,
        "gemm_gflop_per_s": {lib: gemm_rate(d, lib) for lib in ("numpy", "torch")},
    }


def job_train(data: str, method: str) -> dict:
    import torch

    from mmsid.quantizers import RQKMeansTokenizer, RQVAETokenizer
    from mmsid.quantizers.rqkmeans import RQKMeansConfig
    from mmsid.quantizers.rqvae import RQVAEConfig

    torch.set_num_threads(THREADS)
    x = _data(data)
    if method == "rq-kmeans":
        tok = RQKMeansTokenizer(RQKMeansConfig(levels=L, codebook_size=K))
        t = time.perf_counter()
        tok.fit(x)
        dt, epochs = time.perf_counter() - t, None
    else:
        epochs = 1 if len(x) >= 1_000_000 else 3
        tok = RQVAETokenizer(RQVAEConfig(levels=L, codebook_size=K, epochs=epochs))
        t = time.perf_counter()
        tok.fit(x, progress=False)
        dt = time.perf_counter() - t
    return {
        "data": data,
        "method": method,
        "items": len(x),
        "dim": x.shape[1],
        "seconds": dt,
        "epochs": epochs,
        "seconds_per_epoch": dt / epochs if epochs else None,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _spawn(args: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--job", *args],
        capture_output=True,
        text=True,
        check=True,
        # NumPy's BLAS sizes its thread pool at import: the same thread count as torch and faiss
        env={**os.environ, "TQDM_DISABLE": "1", "OPENBLAS_NUM_THREADS": str(THREADS)},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--job", nargs="+")
    a = ap.parse_args()
    if a.job:
        kind, *args = a.job
        res = {"alone": job_alone, "train": job_train, "paired": job_paired}[kind](*args)
        print(json.dumps(res))
        return
    synth = ["synthetic-100k"] if a.quick else ["synthetic-100k", "synthetic-1m"]
    real = ["ml100k-mm", "lfm2k-mm", "amazon-beauty"]
    enc, train = [], []
    for data in synth + real:
        cb = str(Path(tempfile.gettempdir()) / f"mmsid-bench-{data}-codebooks.npy")
        r = _spawn(["paired", data, cb])
        r["peak_rss_mb"] = {
            impl: _spawn(["alone", data, impl, cb])["peak_rss_mb"] for impl in ("mmsid", "faiss")
        }
        enc.append(r)
        lo, hi = r["ratio_ci95"]
        print(
            f"encode {data}: mmsid {r['items_per_s']['mmsid']:,.0f}/s, faiss "
            f"{r['items_per_s']['faiss']:,.0f}/s, ratio {r['ratio_vs_faiss']:.2f} "
            f"[{lo:.2f}, {hi:.2f}] over {r['rounds']} rounds, identical SIDs: "
            f"{r['identical_sid_share']:.4%}; torch path ratio "
            f"{r['torch_path_ratio_vs_faiss']:.2f}",
            flush=True,
        )
    for data in synth:
        for method in ("rq-kmeans", "rq-vae"):
            r = _spawn(["train", data, method])
            train.append(r)
            print(f"train {data} {method}: {r['seconds']:.1f}s", flush=True)
    from mmsid.device import cpu_description

    cmd = "python benchmarks/bench_tokenizers.py" + (" --quick" if a.quick else "")
    meta = {
        "command": cmd,
        "threads": THREADS,
        "pause_s": PAUSE_S,
        "cpu": cpu_description(),
        "date": time.strftime("%Y-%m-%d"),
    }
    RESULTS.mkdir(exist_ok=True)
    from mmsid.io import write_json, write_text
    from mmsid.pipeline import git_commit

    commit = git_commit()  # once: writing the JSON below dirties the tree

    write_json(
        RESULTS / "tokenizers.json",
        {
            "command": cmd,
            "commit": commit,
            "seeds": [0],
            "meta": meta,
            "encode": enc,
            "train": train,
        },
    )
    lines = [
        "# Tokenizer benchmarks",
        "",
        f"Command: `{cmd}` at commit `{commit}`, seed 0 — {meta['cpu']}, "
        f"{THREADS} threads, {meta['date']}. L={L} levels, K={K}.",
        "",
        "## SID assignment (greedy residual encode, same codebooks, same data)",
        "",
        "mmsid's default CPU path (GEMM and argmins in NumPy, its BLAS), its torch path "
        "(`MMSID_CPU_ENCODE=torch`: torch's BLAS) and faiss run in one process in alternating "
        f"rounds (the order reverses every round), each call after {PAUSE_S} s of rest so that "
        "no encoder pays for the previous one's spinning BLAS threads; items/s is the median "
        "round, a ratio (mmsid / faiss speed) the geometric mean over rounds with its 95% "
        "interval. GEMM GFLOP/s: the bare (2048 x d) x (d x 768) product in each library. Peak "
        "RSS comes from each encoder run alone in its own process on the same codebooks.",
        "",
        "| data | items x dim | mmsid items/s | faiss items/s | ratio [95% CI] | "
        "torch path ratio [95% CI] | rounds | identical SIDs vs faiss / torch path | "
        "mmsid GFLOP/s | "
        "GEMM GFLOP/s numpy / torch | peak RSS mmsid / faiss (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in enc:
        ips, rss, (lo, hi) = r["items_per_s"], r["peak_rss_mb"], r["ratio_ci95"]
        t_lo, t_hi = r["torch_path_ratio_ci95"]
        gemm = r["gemm_gflop_per_s"]
        lines.append(
            f"| {r['data']} | {r['items']:,} x {r['dim']} | {ips['mmsid']:,.0f} | "
            f"{ips['faiss']:,.0f} | {r['ratio_vs_faiss']:.2f} [{lo:.2f}, {hi:.2f}] | "
            f"{r['torch_path_ratio_vs_faiss']:.2f} [{t_lo:.2f}, {t_hi:.2f}] | "
            f"{r['rounds']} | {r['identical_sid_share']:.3%} / "
            f"{r['identical_between_paths']:.3%} | {r['gflop_per_s']:.1f} | "
            f"{gemm['numpy']:.1f} / {gemm['torch']:.1f} | "
            f"{rss['mmsid']:,.0f} / {rss['faiss']:,.0f} |"
        )
    lines += [
        "",
        "## Training time",
        "",
        "| data | method | seconds | epochs | s/epoch | peak RSS (MB) |",
        "|---|---|---|---|---|---|",
    ]
    for r in train:
        lines.append(
            f"| {r['data']} ({r['items']:,} x {r['dim']}) | {r['method']} | "
            f"{r['seconds']:.1f} | {r['epochs'] or '-'} | "
            f"{(r['seconds_per_epoch'] or 0):.1f} | {r['peak_rss_mb']:,.0f} |"
        )
    write_text(RESULTS / "tokenizers.md", "\n".join(lines) + "\n")
    print(f"wrote {RESULTS}/tokenizers.json and tokenizers.md\nreproduce: {cmd}")


if __name__ == "__main__":
    main()
