"""MMQ's codebooks and gates at the default settings (issue 17): is every expert alive, does each
gate route items over its experts, and what does behavior fine-tuning change beyond its control?

    python benchmarks/bench_mmq_health.py [--datasets ml100k-mm lfm2k-mm amazon-beauty]
        [--seeds 0] [--epochs 100] [--finetune-epochs 10]

For each data set and seed: `mmsid tokenize --method mmq --finetune behavior` at the defaults
(2 shared + 2 specific experts per modality, gate terms 0.1, centred inputs, control on), with
the epochs of benchmarks/configs/tables.yaml; on lfm2k-mm also with ``--no-center`` (the input
the papers use), which is what made centring the default. Per expert: code utilization and
perplexity over the items that have its input, gate mass; per gate: mean normalised entropy
(1 = uniform, 0 = one-hot); the share of SIDs fine-tuning changed, its control's share and
the share on which they differ. Descriptive figures of the tokenizer only (no downstream task,
no test interaction). Run folders go under ``runs/mmq_health/``; writes
benchmarks/results/mmq_health.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mmsid.io import write_json, write_text

HERE = Path(__file__).resolve().parent
RESULTS = Path(os.environ.get("MMSID_RESULTS_DIR") or HERE / "results")
RUNS = HERE.parent / "runs" / "mmq_health"


def cell(dataset: str, seed: int, center: bool, epochs: int, ft_epochs: int) -> dict:
    from mmsid.tokenize import TokenizeConfig, run_tokenize

    out = RUNS / f"{dataset}-seed{seed}{'' if center else '-no-center'}"
    m = run_tokenize(
        TokenizeConfig(
            dataset=dataset,
            method="mmq",
            out=str(out),
            epochs=epochs,
            finetune="behavior",
            finetune_epochs=ft_epochs,
            center=center,
            seed=seed,
            device="cpu",
        ),
        progress=False,
    )
    s1, s2 = m["stage1"], m["stage2"]
    return {
        "dataset": dataset,
        "seed": seed,
        "center": center,
        "sid_length": len(m["utilization"]),
        "collision_rate": m["collision_rate"],
        "experts": [
            {
                "expert": f"{e['group']}/{e['expert']}",
                "utilization": [e["utilization"][0], f["utilization"][0]],
                "perplexity": [e["perplexity"][0], f["perplexity"][0]],
                "gate_mass": [e["gate_mass"], f["gate_mass"]],
            }
            for e, f in zip(s1["experts"], s2["experts"], strict=True)
        ],
        "gate_entropy": {
            g: [v["entropy"], s2["gates"][g]["entropy"]] for g, v in s1["gates"].items()
        },
        "min_utilization": [s1["min_expert_utilization"], s2["min_expert_utilization"]],
        "sid_changed_share": s2["sid_changed_share"],
        "control_sid_changed_share": s2["control"]["sid_changed_share"],
        "sid_differs_from_control_share": s2["sid_differs_from_control_share"],
    }


def report(res: dict) -> str:
    lines = [
        "# MMQ at the default settings: experts, gates, fine-tuning beside its control",
        "",
        f"Command: `{res['command']}` (commit {res['commit']}, seeds {res['seeds']}; "
        f"stage 1 {res['epochs']} epochs, fine-tuning {res['finetune_epochs']} epochs).",
        "",
        "Each cell: utilization / perplexity of the expert's codes (256) over the items that "
        "have its input, after stage 1 → after fine-tuning; gate mass after stage 1. A gate's "
        "entropy: 1 = every item spread evenly over the group's experts, 0 = each item on one.",
        "",
    ]
    for c in res["cells"]:
        tag = "centred (default)" if c["center"] else "not centred (`--no-center`)"
        lines += [
            f"## {c['dataset']}, seed {c['seed']}, {tag}: {c['sid_length']} codes, "
            f"collision rate {c['collision_rate']:.3f}",
            "",
            "| expert | utilization | perplexity | gate mass |",
            "|---|---|---|---|",
        ]
        for e in c["experts"]:
            u, p = e["utilization"], e["perplexity"]
            lines.append(
                f"| {e['expert']} | {u[0]:.2f} → {u[1]:.2f} | {p[0]:.0f} → {p[1]:.0f} | "
                f"{e['gate_mass'][0]:.2f} |"
            )
        ent = ", ".join(f"{g} {v[0]:.2f}" for g, v in c["gate_entropy"].items())
        lines += [
            "",
            f"Gate entropy after stage 1: {ent}. Least-used expert: "
            f"{c['min_utilization'][0]:.2f} → {c['min_utilization'][1]:.2f}.",
            f"Fine-tuning changed {c['sid_changed_share']:.1%} of the fitted items' SIDs, its "
            f"control (behavior weight 0) {c['control_sid_changed_share']:.1%}; the two differ "
            f"on {c['sid_differs_from_control_share']:.1%} of all items.",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=["ml100k-mm", "lfm2k-mm", "amazon-beauty"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--finetune-epochs", type=int, default=10)
    args = ap.parse_args()
    from mmsid.pipeline.runner import git_commit

    commit = git_commit()
    if commit is None or commit.endswith("+dirty"):
        sys.exit(f"commit {commit}: run from a clean checkout so the figures can be regenerated")
    cells = []
    for ds in args.datasets:
        for s in args.seeds:
            cells.append(cell(ds, s, True, args.epochs, args.finetune_epochs))
            if ds == "lfm2k-mm":
                cells.append(cell(ds, s, False, args.epochs, args.finetune_epochs))
    res = {
        "command": "python benchmarks/" + " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "commit": commit,
        "seeds": args.seeds,
        "epochs": args.epochs,
        "finetune_epochs": args.finetune_epochs,
        "cells": cells,
    }
    write_json(RESULTS / "mmq_health.json", res)
    write_text(RESULTS / "mmq_health.md", report(res))
    print(report(res))


if __name__ == "__main__":
    main()
