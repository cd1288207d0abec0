"""Summarise tokenize run folders into one table (benchmarks/results/tokenize_real.{json,md}).

for ds in ml100k-mm lfm2k-mm amazon-beauty; do for m in rq-kmeans rq-vae; do
  mmsid tokenize --dataset $ds --method $m --out runs/$ds-$m; done; done
python benchmarks/summarize_runs.py runs/*-rq-*
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mmsid.io import write_json, write_text

RESULTS = Path(__file__).resolve().parent / "results"


def _f(v: float | None) -> str:
    return "-" if v is None or v != v else f"{v:.3f}"


def main(run_dirs: list[str]) -> None:
    rows = [json.loads((Path(d) / "metrics.json").read_text()) for d in run_dirs]
    write_json(RESULTS / "tokenize_real.json", rows)
    lines = [
        "# Tokenizers on the real data sets",
        "",
        "Command: `mmsid tokenize --dataset D --method M --out runs/D-M` (L=3, K=256, seed "
        "0, defaults), then `python benchmarks/summarize_runs.py runs/*`. Coherence = mean "
        "cosine of an item's input features to the items sharing its code prefix (prefix) "
        "or its level-l code alone (code); random = random pairs.",
        "",
        "| data set | method | items | unique SIDs after collision level | utilization | "
        "perplexity | collision rate | max items/SID | coherence prefix L1/L2/L3 | "
        "code L2/L3 | random | fit s | recon. MSE |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c = r["coherence"]
        lines.append(
            f"| {r['dataset']} | {r['method']} | {r['items']:,} | "
            f"{r['unique_after_collision_level']:,} | "
            f"{'/'.join(f'{u:.2f}' for u in r['utilization'])} | "
            f"{'/'.join(f'{p:.0f}' for p in r['perplexity'])} | {r['collision_rate']:.3f} | "
            f"{r['max_items_per_sid']} | {'/'.join(_f(v) for v in c['prefix'])} | "
            f"{_f(c['code'][1])}/{_f(c['code'][2])} | {c['random']:.3f} | "
            f"{r['seconds']['fit']:.1f} | {_f(r.get('reconstruction_mse'))} |"
        )
    write_text(RESULTS / "tokenize_real.md", "\n".join(lines) + "\n")
    print(f"wrote {RESULTS}/tokenize_real.md")


if __name__ == "__main__":
    main(sys.argv[1:])
