"""Load on `mmsid serve` (issue 18), loopback only, bounded in requests and time: item -> SID,
recommend (parallel-SID scoring the whole catalogue) and add-item, each as many concurrent
clients; requests per second, p50 / p99 latency, errors.

    python benchmarks/bench_serve.py [--dataset amazon-beauty] [--concurrency 16]

The served run is a real one under ``runs/serve-bench/<dataset>/``: an RQ-KMeans tokenize run
and a parallel-SID retriever trained briefly on its IDs (1 epoch of 4,096 windows: serving cost
depends on the shapes, d 256 / FFN 512 / 2 layers as benchmarks/configs/retrieval.yaml, not on
how long it trained). The server is one uvicorn process (uvloop + httptools) with one torch
thread. Reads and recommendations are driven by wrk (Debian package ``wrk``; without it, an
asyncio + httpx client in this process, whose own cost then caps the figures), writes by the
httpx client; server and client share this machine's cores. Histories
are real test histories of the protocol; item ids are drawn with a seed.
Writes benchmarks/results/serve.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
RUNS = HERE.parent / "runs" / "serve-bench"


def prepare(dataset: str) -> tuple[Path, Path]:
    from mmsid.retrieval.config import RetrieveConfig
    from mmsid.retrieval.parallel import ParallelSIDConfig
    from mmsid.retrieval.run import run_retrieve
    from mmsid.tokenize import TokenizeConfig, run_tokenize

    tok, ret = RUNS / dataset / "tok", RUNS / dataset / "ret"
    if not (tok / "ids.sqlite").exists():
        run_tokenize(TokenizeConfig(dataset=dataset, method="rq-kmeans", out=str(tok)))
    if not (ret / "model.pt").exists():
        run_retrieve(
            RetrieveConfig(
                dataset=dataset,
                model="parallel-sid",
                sids=str(tok / "sids.parquet"),
                out=str(ret),
                epochs=1,
                epoch_samples=4096,
                valid_sample=500,
                parallel=ParallelSIDConfig(d_model=256, d_ff=512, dropout=0.2, temperature=0.07),
            )
        )
    return tok, ret


async def load(url, make, n: int, concurrency: int, limit_s: float, headers=None) -> dict:
    import httpx

    lat: list[float] = []
    status: dict[int, int] = {}
    todo = iter(range(n))
    stop = time.perf_counter() + limit_s

    async def worker(client):
        for i in todo:
            if time.perf_counter() > stop:
                return
            method, path, body = make(i)
            t0 = time.perf_counter()
            r = await client.request(method, url + path, json=body)
            lat.append(time.perf_counter() - t0)
            status[r.status_code] = status.get(r.status_code, 0) + 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30, headers=headers) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    ms = np.asarray(lat) * 1000
    return {
        "requests": len(lat),
        "seconds": wall,
        "req_per_s": len(lat) / wall,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "status": {str(k): v for k, v in sorted(status.items())},
        "errors": int(sum(v for k, v in status.items() if k != 200)),
    }


def wrk_load(
    url,
    requests: list[tuple[str, str, dict | None]],
    concurrency: int,
    seconds: float,
    script: Path,
) -> dict:
    """The same scenario through wrk (a C load generator, one thread): the request list is
    cycled by a generated Lua script. Reads req/s, p50 / p99 and non-2xx counts from its
    report."""
    import json as _json
    import re
    import subprocess as sp

    def lua(v: str) -> str:
        return "[==[" + v + "]==]"

    rows = ",\n".join(
        "{" + ", ".join([lua(m), lua(path), lua(_json.dumps(b)) if b is not None else "nil"]) + "}"
        for m, path, b in requests
    )
    script.write_text(
        "local reqs = {\n" + rows + "\n}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        "local i = 0\n"
        "request = function()\n"
        "  i = i + 1\n"
        "  local r = reqs[(i % #reqs) + 1]\n"
        "  return wrk.format(r[1], r[2], nil, r[3])\n"
        "end\n"
    )
    cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{int(seconds)}s", "--latency", "-s", str(script)]
    out = sp.run([*cmd, url], capture_output=True, text=True, check=True).stdout

    def ms(label: str) -> float:
        m = re.search(rf"{label}\s+([0-9.]+)(us|ms|s)\b", out)
        v = float(m.group(1))
        return v / 1000 if m.group(2) == "us" else v * 1000 if m.group(2) == "s" else v

    n = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "client": "wrk",
        "requests": n,
        "seconds": seconds,
        "req_per_s": float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1)),
        "p50_ms": ms("50%"),
        "p99_ms": ms("99%"),
        "errors": (int(bad.group(1)) if bad else 0)
        + (sum(int(x) for x in sock.groups()) if sock else 0),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="amazon-beauty")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit-s", type=float, default=60.0, help="Per scenario.")
    args = ap.parse_args()
    from mmsid.device import cpu_description
    from mmsid.io import write_json, write_text
    from mmsid.pipeline.runner import git_commit
    from mmsid.protocol import load_protocol
    from mmsid.retrieval.data import build_retrieval

    commit = git_commit()
    if commit is None or commit.endswith("+dirty"):
        sys.exit(f"commit {commit}: run from a clean checkout so the figures can be regenerated")
    tok, ret = prepare(args.dataset)
    test = build_retrieval(load_protocol(args.dataset)).test
    rng = np.random.default_rng(args.seed)
    hist = [h[h >= 0].tolist() for h in test.history]
    hist = [h for h in hist if h]
    with np.load(tok / "inputs.npz") as z:
        mods = dict(zip(z["names"].tolist(), z["dims"].tolist()))

    # serve a fresh copy: the add-item scenario writes to the store
    serving = RUNS / args.dataset / "serving"
    if serving.exists():
        shutil.rmtree(serving)
    shutil.copytree(tok, serving)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MMSID_TOKEN": "bench"}
    server = subprocess.Popen(
        [sys.executable, "-m", "mmsid", "serve", str(serving), "--retriever", str(ret),
         "--port", str(port), "--max-body", str(8 << 20)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        for _ in range(600):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        n_items = httpx.get(url + "/health").json()["items"]
        items = rng.integers(0, n_items, size=20_000)
        users = rng.integers(0, len(hist), size=20_000)
        vecs = rng.normal(size=(2000, sum(mods.values()))).astype(np.float32)

        def new_item(i):
            offs = np.cumsum([0, *mods.values()])
            emb = {n: vecs[i, offs[j] : offs[j + 1]].tolist() for j, n in enumerate(mods)}
            return "POST", "/items", {"items": [{"item": f"bench-{i}", "embeddings": emb}]}

        scenarios = {
            "item_to_sid": (lambda i: ("GET", f"/items/{items[i]}", None), 20_000),
            "recommend_top10": (
                lambda i: ("POST", "/recommend", {"history": [str(x) for x in hist[users[i]]]}),
                3_000,
            ),
        }
        res = {}
        for name, (make, n) in scenarios.items():
            if shutil.which("wrk"):  # the server's limit, not a Python client's
                reqs = [make(i) for i in range(n)]
                script = RUNS / args.dataset / f"{name}.lua"
                res[name] = wrk_load(url, reqs, args.concurrency, min(30, args.limit_s), script)
            else:
                res[name] = asyncio.run(load(url, make, n, args.concurrency, args.limit_s))
                res[name]["client"] = "httpx (asyncio, in this process)"
        # writes need the token; one transaction each, serialised by SQLite
        auth = {"Authorization": "Bearer bench"}
        res["add_item"] = asyncio.run(
            load(url, new_item, 2000, args.concurrency, args.limit_s, headers=auth)
        )
        res["add_item"]["client"] = "httpx (asyncio, in this process)"
    finally:
        server.terminate()
        server.wait(timeout=30)

    out = {
        "command": "python benchmarks/" + " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "commit": commit,
        "seeds": [args.seed],
        "dataset": args.dataset,
        "catalogue_items": n_items,
        "concurrency": args.concurrency,
        "machine": {"cpu": cpu_description(), "platform": platform.platform()},
        "server": "1 uvicorn process, 1 torch thread; clients share the machine",
        "scenarios": res,
    }
    write_json(RESULTS / "serve.json", out)
    lines = [
        "# Serving load",
        "",
        f"`mmsid serve` on {args.dataset} ({n_items:,} items, RQ-KMeans 3 x 256 + collision; "
        "parallel-SID d 256, 2 layers), loopback, "
        f"{args.concurrency} concurrent clients; {out['machine']['cpu']}, cores shared by "
        "server and clients.",
        "",
        f"Command: `{out['command']}` (commit {commit}, seed {args.seed}).",
        "",
        "| scenario | client | requests | req/s | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in res.items():
        lines.append(
            f"| {name} | {r['client']} | {r['requests']:,} | {r['req_per_s']:,.0f} | "
            f"{r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['errors']} |"
        )
    write_text(RESULTS / "serve.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
