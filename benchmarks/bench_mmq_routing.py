"""What MMQ's routed experts put in the SID: each expert's code perplexity over the items its
gate routes to it and over the others (issue 17; why MMQ's 6-code SIDs are coarse on
amazon-beauty).

    python benchmarks/bench_mmq_routing.py --fit amazon-beauty mmq-ft:1/title+categories
        [--fit DATASET ID_SPEC ...] [--results mmq_routing]

Each ``--fit`` names a bench_parallel_ids tokenizer (tokenizer seed 0), read from its folder,
or fitted there first when it is missing (bench_parallel_ids.fit_tokenizer: the same fit, so a
later retriever bench over that spec reads it; every spec is checked before anything is
fitted). The bench rebuilds the tokenizer's input from the run's recorded modalities and
centring, checks that the loaded model reproduces the run's SID table for every item, then
reports per expert of each group of 2+ experts: the share of items routed to it (largest gate
weight), and the perplexity (exp of the code-use entropy; codebook K) of its codes over those
items, over the others and over all. With one-hot gates an expert's code for an item routed
elsewhere reaches the decoder with weight ~0, so it carries little content: a perplexity near 1
over the others means that SID position is a constant for half the catalogue. Descriptive
figures of the tokenizer (no downstream task, no test interaction). Writes
benchmarks/results/mmq_routing.{json,md} (``--results STEM``: STEM.{json,md}).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from bench_parallel_ids import fit_tokenizer
from id_specs import parse_ids

from mmsid.io import write_json, write_text

HERE = Path(__file__).resolve().parent
RESULTS = Path(os.environ.get("MMSID_RESULTS_DIR") or HERE / "results")


def inputs_of(dataset: str, run: Path) -> tuple[np.ndarray, list[str]]:
    """(n_items, D) the tokenizer input of a tokenize run, as its tokenize stage built it, and
    its modalities' names."""
    from mmsid.assign import INPUTS, RunInputs
    from mmsid.data import load_dataset
    from mmsid.features import build_features

    rec = RunInputs.load(run / INPUTS)
    feats = build_features(
        load_dataset(dataset), modalities=rec.names, device="cpu", progress=False
    )
    return rec.row({n: (feats.embeddings[n], feats.masks[n]) for n in rec.names}), rec.names


def check_spec(dataset: str, spec: str) -> None:
    """Refuse a spec that is not MMQ's (or does not parse) before anything is fitted."""
    if not parse_ids(spec)[0].startswith("mmq"):
        raise SystemExit(f"--fit {dataset} {spec}: not an MMQ spec (mmq, mmq-ft, their ablations)")


def fit_rows(dataset: str, spec: str) -> dict:
    """The routing diagnostics of ``spec``'s fitted tokenizer, checked against its SID table."""
    from mmsid.ids import SIDTable, table_codes
    from mmsid.quantizers import Tokenizer

    check_spec(dataset, spec)
    run = fit_tokenizer(dataset, spec)
    tok = Tokenizer.load(run / "tokenizer.pt")
    if not hasattr(tok, "diagnostics"):
        raise SystemExit(f"--fit {dataset} {spec}: not an MMQ tokenizer")
    x, names = inputs_of(dataset, run)
    codes, _ = table_codes(SIDTable.load(run / "sids.parquet"), run / "sids.parquet", len(x))
    if not np.array_equal(tok.transform(x), codes):
        raise SystemExit(f"{run}: the loaded tokenizer does not reproduce sids.parquet")
    d = tok.diagnostics(x, names)
    K = tok.cfg.codebook_size
    rows = []
    for e in d["experts"]:
        if "perplexity_routed" not in e:
            continue  # a group of one expert: every item is routed to it
        rows.append(
            {
                "expert": f"{e['group']}/{e['expert']}",
                "routed_share": d["gates"][e["group"]]["routed_share"][e["expert"]],
                "perplexity_routed": e["perplexity_routed"],
                "perplexity_others": e["perplexity_others"],
                "perplexity": e["perplexity"],
            }
        )
    entropy = {g: v["entropy"] for g, v in d["gates"].items()}
    return {
        "dataset": dataset,
        "ids": spec,
        "codebook": K,
        "gate_entropy": entropy,
        "experts": rows,
    }


def levels(v: list[float] | None) -> str:
    return "n/a" if v is None else " / ".join(f"{p:.1f}" for p in v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fit", nargs=2, action="append", required=True, metavar=("DATASET", "IDS"))
    ap.add_argument("--results", default="mmq_routing", help="results file stem")
    a = ap.parse_args()
    from mmsid.pipeline import git_commit

    commit = git_commit()
    torch.set_num_threads(1)
    cmd = "python benchmarks/bench_mmq_routing.py" + "".join(f" --fit {d} {s}" for d, s in a.fit)
    cmd += f" --results {a.results}" if a.results != "mmq_routing" else ""
    for d, s in a.fit:
        check_spec(d, s)
    fits = [fit_rows(d, s) for d, s in a.fit]
    res = {"command": cmd, "commit": commit, "seeds": [0], "fits": fits}
    lines = [
        "# MMQ's routed experts: what each puts in the SID",
        "",
        f"Command: `{cmd}` (commit {commit}, tokenizer seed 0; the bench_parallel_ids "
        "tokenizers, after behavior fine-tuning).",
        "",
        "Per expert of a group of 2+ experts: the share of items its gate routes to it (largest "
        "weight) and the perplexity of its codes (per level) over those items, over the others "
        "and over all items. Near 1 over the others: that SID position is one constant code for "
        "every item routed elsewhere. Under each fit: the mean normalised gate entropy per group "
        "(0: each item on one expert).",
        "",
        "| data set | IDs | expert | routed share | perplexity, routed items | "
        "perplexity, the others | perplexity, all |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in fits:
        for r in f["experts"]:
            lines.append(
                f"| {f['dataset']} | {f['ids']} | {r['expert']} | {r['routed_share']:.2f} | "
                f"{levels(r['perplexity_routed'])} | {levels(r['perplexity_others'])} | "
                f"{levels(r['perplexity'])} |"
            )
        ent = ", ".join(f"{g} {v:.2f}" for g, v in f["gate_entropy"].items())
        lines.append(f"| {f['dataset']} | {f['ids']} | gate entropy: {ent} | | | | |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / f"{a.results}.json", res)
    write_text(RESULTS / f"{a.results}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
