"""Retrieval table from `mmsid retrieve` run folders, with the published reference rows.

    python benchmarks/summarize_retrieval.py DATASET:LABEL=RUN_DIR ... [--name retrieval]

Writes benchmarks/results/{name}.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mmsid.io import write_json, write_text

RESULTS = Path(__file__).resolve().parent / "results"
# TIGER paper (Rajput et al. 2023), Table: Amazon Beauty, leave-one-out, full ranking
PAPER = {
    "amazon-beauty": {
        "TIGER (paper)": {
            "recall@5": 0.0454,
            "ndcg@5": 0.0321,
            "recall@10": 0.0648,
            "ndcg@10": 0.0384,
        },
        "SASRec (as quoted in TIGER)": {
            "recall@5": 0.0387,
            "ndcg@5": 0.0249,
            "recall@10": 0.0605,
            "ndcg@10": 0.0318,
        },
    }
}
COLS = ("recall@5", "ndcg@5", "recall@10", "ndcg@10", "recall@20", "ndcg@20")


def f(v) -> str:
    return "–" if v is None else f"{v:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", help="DATASET:LABEL=RUN_DIR")
    ap.add_argument("--name", default="retrieval")
    a = ap.parse_args()
    table: dict[str, dict[str, dict]] = {}
    for spec in a.runs:
        head, run = spec.split("=", 1)
        ds, label = head.split(":", 1)
        m = json.loads((Path(run) / "metrics.json").read_text())
        cfg = (Path(run) / "config.yaml").read_text()
        table.setdefault(ds, {})[label] = {
            "test": m["test"],
            "valid_all": m["valid"]["all"],
            "epochs_run": m["epochs_run"],
            "best_epoch": m["best_epoch"],
            "train_minutes": m["train_seconds"] / 60,
            "curve": [(h["epoch"], h.get("valid", {}).get("recall@10")) for h in m["history"]],
            "config": cfg,
        }
    res = {"table": table, "paper": PAPER, "command": "python " + " ".join(sys.argv)}
    write_json(RESULTS / f"{a.name}.json", res)
    lines = ["# Generative retrieval: test metrics (leave-one-out, full catalogue)", ""]
    for ds, rows in table.items():
        lines += [
            f"## {ds}",
            "",
            "| model | " + " | ".join(COLS) + " | long-tail R@10 | "
            "cold R@10 (n) | epochs (best) | train min |",
            "|---|" + "---|" * (len(COLS) + 4),
        ]
        for label, r in rows.items():
            t = r["test"]
            lines.append(
                f"| {label} | "
                + " | ".join(f(t["all"].get(c)) for c in COLS)
                + f" | {f(t['long_tail']['recall@10'])} | {f(t['cold']['recall@10'])} "
                f"({t['cold']['n']}) | {r['epochs_run']} ({r['best_epoch']}) | "
                f"{r['train_minutes']:.0f} |"
            )
        for label, p in PAPER.get(ds, {}).items():
            lines.append(f"| {label} | " + " | ".join(f(p.get(c)) for c in COLS) + " | | | | |")
        lines += ["", "Validation Recall@10 by epoch (model selection):", ""]
        for label, r in rows.items():
            curve = ", ".join(f"{e}: {v:.4f}" for e, v in r["curve"] if v is not None)
            lines.append(f"- {label}: {curve}")
        lines.append("")
    lines += [f"Reproduce the table: `{res['command']}`", ""]
    write_text(RESULTS / f"{a.name}.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
