"""Data-parallel training under torchrun (issue 19): is N processes the same run as one?

    python benchmarks/bench_distributed.py [--dataset ml100k-mm] [--seeds 0 1 2]

Real stages on real data, launched the way users launch them, on this machine's 2 cores:

* ``one``: ``python -m mmsid ...`` (one process, 2 threads);
* ``torchrun``: ``torchrun --standalone --nproc-per-node 2 -m mmsid ...`` (gloo, 1 thread each);
* ``two-nodes``: two ``torchrun --nnodes 2 --nproc-per-node 1 --rdzv-backend c10d
  --rdzv-endpoint 127.0.0.1:PORT`` launches started side by side, acting as two machines.

Part 1, the same global batch: SASRec (``retrieve --model sasrec``, dropout 0) and RQ-VAE
(``tokenize --method rq-vae``) with every step's loss logged (``log_steps``); per-step losses of
each launch against ``one``, max absolute and relative difference, and the final metrics.
Part 2, seed noise: SASRec with its default dropout over three seeds, ``one`` vs ``torchrun``,
test Recall@10 / NDCG@10 mean ± 95% CI and the paired difference over the same test users.

Run folders go under ``runs/distributed/`` (re-running reuses finished ones). Writes
benchmarks/results/distributed.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from mmsid.eval.stats import mean_ci, paired_users, per_user
from mmsid.io import write_json, write_text

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
RUNS = HERE.parent / "runs" / "distributed"
LAUNCHES = ("one", "torchrun", "two-nodes")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(how: str, args: list[str], out: Path) -> float:
    """Run one mmsid command ``how``; returns wall seconds (0 when it had already run)."""
    if (out / "metrics.json").exists():
        return 0.0
    env = {**os.environ, "OMP_NUM_THREADS": "2" if how == "one" else "1"}
    cmd = [*args, "--device", "cpu", "--out", str(out)]
    t0 = time.perf_counter()
    if how == "one":
        procs = [subprocess.Popen([sys.executable, "-m", "mmsid", *cmd], env=env)]
    elif how == "torchrun":
        run = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        procs = [subprocess.Popen([*run, "--nproc-per-node", "2", "-m", "mmsid", *cmd], env=env)]
    else:  # two launches that meet at a c10d rendezvous on 127.0.0.1, as two machines would
        rdzv = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            "2",
            "--nproc-per-node",
            "1",
            "--rdzv-backend",
            "c10d",
            "--rdzv-endpoint",
            f"127.0.0.1:{_port()}",
            "--rdzv-id",
            "bench",
        ]
        procs = [
            subprocess.Popen([*rdzv, "--node-rank", str(r), "-m", "mmsid", *cmd], env=env)
            for r in (0, 1)
        ]
    codes = [p.wait() for p in procs]
    if any(codes):
        sys.exit(f"{how} {' '.join(cmd)}: exit codes {codes}")
    return time.perf_counter() - t0


def steps(metrics: dict) -> np.ndarray:
    return np.concatenate([h["step_losses"] for h in metrics["history"]])


def compare(runs: dict[str, dict]) -> dict:
    """Per-step loss differences against ``one``; for a tokenizer also the first epoch whose
    dead-code restarts differ (from there on the runs follow different trajectories) and the
    largest difference before it."""
    ref = steps(runs["one"])
    out = {}
    for how in LAUNCHES[1:]:
        s = steps(runs[how])
        assert len(s) == len(ref), (how, len(s), len(ref))
        out[how] = {
            "steps": int(len(s)),
            "max_abs_diff": float(np.abs(s - ref).max()),
            "max_rel_diff": float((np.abs(s - ref) / np.abs(ref)).max()),
        }
        ha, hb = runs["one"]["history"], runs[how]["history"]
        if "restarted_codes" in ha[0]:
            split = next(
                (
                    i
                    for i, (a, b) in enumerate(zip(ha, hb))
                    if a["restarted_codes"] != b["restarted_codes"]
                ),
                len(ha),
            )
            same = [
                abs(x - y)
                for a, b in zip(ha[:split], hb[:split])
                for x, y in zip(a["step_losses"], b["step_losses"])
            ]
            out[how]["restarts_first_differ_after_epoch"] = (
                ha[split]["epoch"] if split < len(ha) else None
            )
            out[how]["max_abs_diff_before"] = float(max(same)) if same else None
    return out


def part1(dataset: str, sasrec_epochs: int, rqvae_epochs: int) -> dict:
    sas = [
        "retrieve",
        "--dataset",
        dataset,
        "--model",
        "sasrec",
        "--epochs",
        str(sasrec_epochs),
        "--patience",
        "0",
        "--amp",
        "off",
        "--set",
        "sasrec.dropout=0",
        "--set",
        "log_steps=true",
    ]
    rqv = ["tokenize", "--dataset", dataset, "--method", "rq-vae"]
    rqv += ["--epochs", str(rqvae_epochs), "--log-steps"]
    res: dict = {}
    for name, args in (("sasrec", sas), ("rq-vae", rqv)):
        runs, secs = {}, {}
        for how in LAUNCHES:
            out = RUNS / dataset / "same-batch" / name / how
            secs[how] = launch(how, args, out)
            runs[how] = json.loads((out / "metrics.json").read_text())
        res[name] = {
            "command": "mmsid " + " ".join(args),
            "steps": compare(runs),
            "wall_seconds": secs,
            "final": {how: final(name, m) for how, m in runs.items()},
        }
        if name == "rq-vae":
            res[name]["sids_equal_to_one"] = {
                how: sid_agreement(
                    RUNS / dataset / "same-batch" / name / "one",
                    RUNS / dataset / "same-batch" / name / how,
                )
                for how in LAUNCHES[1:]
            }
    return res


def final(name: str, m: dict) -> dict:
    if name == "sasrec":
        return {k: m["test"]["all"][k] for k in ("recall@10", "ndcg@10")}
    return {
        "reconstruction_mse": m["reconstruction_mse"],
        "utilization": m["utilization"],
        "collision_rate": m["collision_rate"],
    }


def sid_agreement(a: Path, b: Path) -> float:
    from mmsid.ids import SIDTable

    x, y = SIDTable.load(a / "sids.parquet"), SIDTable.load(b / "sids.parquet")
    return float((x.codes == y.codes).all(1).mean())


def part3(dataset: str, seeds: list[int], epochs: int) -> dict:
    """RQ-VAE over seeds, one process vs torchrun: quantization quality."""
    args = ["tokenize", "--dataset", dataset, "--method", "rq-vae", "--epochs", str(epochs)]
    keys = ("reconstruction_mse", "collision_rate", "utilization_min")
    per: dict = {how: [] for how in ("one", "torchrun")}
    for s in seeds:
        for how in per:
            out = RUNS / dataset / "seeds-rq-vae" / f"seed{s}" / how
            launch(how, [*args, "--seed", str(s)], out)
            m = json.loads((out / "metrics.json").read_text())
            m["utilization_min"] = min(m["utilization"])
            per[how].append({k: m[k] for k in keys})
    return {
        "command": "mmsid " + " ".join(args) + " --seed S",
        "seeds": seeds,
        "per_seed": per,
        **{k: {how: mean_ci([r[k] for r in per[how]]) for how in per} for k in keys},
    }


def part2(dataset: str, seeds: list[int], epochs: int) -> dict:
    base = ["retrieve", "--dataset", dataset, "--model", "sasrec", "--epochs", str(epochs)]
    base += ["--patience", "0", "--amp", "off"]
    per: dict = {how: [] for how in ("one", "torchrun")}
    ranks: dict = {how: [] for how in per}
    secs: dict = {how: [] for how in per}
    for s in seeds:
        for how in per:
            out = RUNS / dataset / "seeds" / f"seed{s}" / how
            secs[how].append(launch(how, [*base, "--seed", str(s)], out))
            m = json.loads((out / "metrics.json").read_text())
            per[how].append({k: m["test"]["all"][k] for k in ("recall@10", "ndcg@10")})
            with np.load(out / "ranks.npz") as z:
                ranks[how].append(z["test_rank"])
    return {
        "command": "mmsid " + " ".join(base) + " --seed S",
        "seeds": seeds,
        "per_seed": per,
        "wall_seconds": secs,
        "recall@10": {how: mean_ci([r["recall@10"] for r in per[how]]) for how in per},
        "ndcg@10": {how: mean_ci([r["ndcg@10"] for r in per[how]]) for how in per},
        # the same test users: per-user Recall@10 averaged over seeds, paired bootstrap
        "paired_recall@10": paired_users(
            np.stack([per_user(r, "recall@10") for r in ranks["torchrun"]]),
            np.stack([per_user(r, "recall@10") for r in ranks["one"]]),
            names=("torchrun", "one"),
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="ml100k-mm")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--sasrec-epochs", type=int, default=5)
    ap.add_argument("--rqvae-epochs", type=int, default=30)
    ap.add_argument("--seed-epochs", type=int, default=20)
    args = ap.parse_args()
    from mmsid.pipeline.runner import git_commit

    commit = git_commit()
    if commit is None or commit.endswith("+dirty"):
        sys.exit(f"commit {commit}: run from a clean checkout so the figures can be regenerated")
    import torch

    res = {
        "command": "python benchmarks/" + " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "commit": commit,
        "seeds": args.seeds,
        "dataset": args.dataset,
        "torch": torch.__version__,
        "machine": f"{os.cpu_count()} CPU cores, gloo backend",
        "same_batch": part1(args.dataset, args.sasrec_epochs, args.rqvae_epochs),
        "seed_noise": part2(args.dataset, args.seeds, args.seed_epochs),
        "seed_noise_rq_vae": part3(args.dataset, args.seeds, args.rqvae_epochs),
    }
    write_json(RESULTS / "distributed.json", res)
    write_text(RESULTS / "distributed.md", report(res))
    print(report(res))


def report(res: dict) -> str:
    def ci(c: dict) -> str:
        return f"{c['mean']:.4f} ± {c['ci'] or 0.0:.4f}"

    lines = [
        "# Data-parallel training (torchrun, gloo)",
        "",
        f"Command: `{res['command']}` (commit {res['commit']}, seeds {res['seeds']}, torch "
        f"{res['torch']}, {res['machine']}). Data set: {res['dataset']}.",
        "",
        "Launches: `one` = `python -m mmsid` (1 process, 2 threads); `torchrun` = "
        "`torchrun --standalone --nproc-per-node 2 -m mmsid` (1 thread each); `two-nodes` = "
        "two `torchrun --nnodes 2 --nproc-per-node 1 --rdzv-backend c10d --rdzv-endpoint "
        "127.0.0.1:PORT` launches acting as two machines.",
        "",
        "## The same global batch: per-step losses against one process",
        "",
        "| model | command | launch | steps | max abs diff | max rel diff | final | wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in res["same_batch"].items():
        for how in LAUNCHES:
            d = r["steps"].get(how)
            diff = (
                f"{d['steps']} | {d['max_abs_diff']:.1e} | {d['max_rel_diff']:.1e}"
                if d
                else "reference | | "
            )
            fin = ", ".join(
                f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                for k, v in r["final"][how].items()
            )
            lines.append(
                f"| {name} | `{r['command']}` | {how} | {diff} | {fin} | "
                f"{r['wall_seconds'][how]:.0f} |"
            )
    if "rq-vae" in res["same_batch"]:
        r = res["same_batch"]["rq-vae"]
        lines += ["", "RQ-VAE, step by step:", ""]
        for how in LAUNCHES[1:]:
            d = r["steps"][how]
            at = d["restarts_first_differ_after_epoch"]
            lines.append(
                f"- {how}: "
                + (
                    f"per-step losses within {d['max_abs_diff_before']:.1e} of one process "
                    f"until epoch {at}, whose dead-code restart differs (codes used once or not "
                    "at all flip between near-tied nearest codewords when the sums run in "
                    "another order); from there the two runs follow different trajectories, "
                    f"within {d['max_abs_diff']:.1e} per step by the end. "
                    if at
                    else f"every restart agrees; per-step losses within {d['max_abs_diff']:.1e}. "
                )
                + f"Items whose full SID equals one process's: {r['sids_equal_to_one'][how]:.1%}."
            )
        lines += [
            "",
            "So N processes train one process's run step for step until a dead-code restart "
            "tips a near tie; after that a tokenizer lands on a differently numbered codebook. "
            "The seed comparison below says whether its quality moves.",
        ]
    s = res["seed_noise"]
    p = s["paired_recall@10"]
    lines += [
        "",
        "## Seed noise: SASRec with dropout, one process vs torchrun (2 processes)",
        "",
        f"`{s['command']}`, seeds {s['seeds']}; test metrics, mean ± 95% CI over seeds.",
        "",
        "| launch | Recall@10 | NDCG@10 | wall s per run |",
        "|---|---|---|---|",
    ]
    for how in ("one", "torchrun"):
        w = [x for x in s["wall_seconds"][how] if x]
        lines.append(
            f"| {how} | {ci(s['recall@10'][how])} | {ci(s['ndcg@10'][how])} | "
            f"{np.mean(w) if w else 0:.0f} |"
        )
    lines += [
        "",
        "Paired over the same test users (Recall@10 per user, averaged over seeds; "
        f"bootstrap 95% interval), torchrun minus one: {p['diff']:+.4f} "
        f"[{p['lo']:+.4f}, {p['hi']:+.4f}]"
        + (": within noise." if p["win"] is None else f": {p['win']} ahead."),
    ]
    q = res["seed_noise_rq_vae"]
    lines += [
        "",
        "## Seed noise: RQ-VAE, one process vs torchrun (2 processes)",
        "",
        f"`{q['command']}`, seeds {q['seeds']}; mean ± 95% CI over seeds.",
        "",
        "| launch | reconstruction MSE | collision rate | lowest level utilization |",
        "|---|---|---|---|",
    ]
    for how in ("one", "torchrun"):
        lines.append(
            f"| {how} | {ci(q['reconstruction_mse'][how])} | {ci(q['collision_rate'][how])} | "
            f"{ci(q['utilization_min'][how])} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
