"""Issue 17's ranking column: CTR AUC of DIN over each ID type's SID table against DIN over item
ids and popularity, on one protocol, the same samples and seeds. The SID tables are
bench_parallel_ids's (the same tokenizer folders, fitted on warm items with tokenizer seed 0;
``--refit-tokenizers``: ranker seed s reads tokenizer seed s's, as bench_parallel_ids), so an
ID type's retrieval and ranking rows read one table.

    python benchmarks/bench_ranking_ids.py --datasets ml100k-mm --ids rq-vae:6 mmq-ft:1 mmq:1
        [--seeds 0 1 2] [--pair mmq-ft:1 mmq-ctl:1] [--results STEM]
    python benchmarks/bench_ranking_ids.py --datasets ml100k-mm --ids psrq:6 --only   # runs only

``din-sid`` (mmsid.ranking.din): DIN whose item embedding is the item id's plus the sum of its
SID codes' (the paper-style "SID as a feature" reading the pipeline uses), so an ID type's rows
say what its codes add to one ranker. RankConfig's defaults otherwise: one popularity-sampled
negative per positive, batch 1024, Adam 1e-3, early stopping on validation AUC (patience
PATIENCE, at most EPOCHS epochs; ``*`` marks a run the cap ended). Mean ± 95% CI over seeds per
slice (head, long_tail, cold, rare<30: the samples whose item is in it); paired bootstrap of
AUC over the same users (seeds pooled): each ID type against DIN on item ids and against the
first ID type, on validation and test, and on test's cold and rare<30 samples; ``--pair X Y``
adds X against Y. Below the AUC tables: the SID tables' facts (codes, collisions, utilization,
what fine-tuning changed beyond its control) and MMQ's experts per fit (mmq_experts, plotted
to ``STEM_DATASET_experts.png``), as bench_retrievers reports them. Runs live under
``runs/ranking_ids/`` (a finished run is reused, an unfinished one resumed; a folder made
from another SID table is an error).
Writes benchmarks/results/ranking_ids.{json,md} (``--results STEM``: STEM.{json,md}).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from bench_parallel_ids import (
    REFIT_HELP,
    add_pair_option,
    check_pairs,
    fit_tokenizer,
    pair_args,
    seed_folder,
    tokenizer_note,
    tokenizer_seed,
    tokenizer_seeds,
)
from id_specs import MMQ_IDS, folder_name, parse_ids
from mmq_experts import expert_table
from sid_tables import id_table, sid_reports

from mmsid.eval.stats import mean_ci, paired_auc
from mmsid.io import write_json, write_text

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
RUNS = HERE.parent / "runs" / "ranking_ids"
EPOCHS, PATIENCE = 20, 2  # RankConfig's defaults
SLICES = ("all", "head", "long_tail", "cold", "rare<30")
SPLITS = ("valid", "test")


def sid_table(dataset: str, spec: str, seed: int = 0) -> Path:
    """``spec``'s SID table from tokenizer seed ``seed``, fitted here unless bench_parallel_ids
    already fitted it."""
    return fit_tokenizer(dataset, spec, seed) / MMQ_IDS.get(parse_ids(spec)[0], "sids.parquet")


def _made_from(path: str) -> str:
    """A SID table's identity across moved folders: its tokenizer's run, fit and file."""
    p = Path(path)
    return f"{p.parent.parent.name}/{p.parent.name}/{p.name}"


def rank(dataset: str, model: str, seed: int, out: Path, sids: Path | None = None) -> dict:
    """One ranking run's metrics, with its validation/test samples and scores."""
    import yaml

    from mmsid.ranking.run import RankConfig, run_rank

    want = {"sid": str(sids)} if sids else {}
    if (out / "metrics.json").exists():
        made = yaml.safe_load((out / "config.yaml").read_text()).get("sids") or {}
        if sorted(map(_made_from, made.values())) != sorted(map(_made_from, want.values())):
            raise SystemExit(f"{out}: ranked with {made}, not {want}; move it away to remake it")
    else:
        cfg = RankConfig(
            dataset=dataset,
            model=model,
            out=str(out),
            seed=seed,
            sids=want,
            epochs=EPOCHS,
            patience=PATIENCE,
        )
        run_rank(cfg, progress=False)
    m = json.loads((out / "metrics.json").read_text())
    with np.load(out / "scores.npz") as z:
        m["scores"] = {s: {k: z[f"{s}_{k}"] for k in ("user", "label", "score")} for s in SPLITS}
        m["test_masks"] = dict(zip(z["slice_names"].tolist(), z["test_masks"]))
    return m


def ranking_folder(dataset: str, name: str) -> Path:
    """The runs of ``name`` (din, popularity or an ID spec): an ID spec's folder is named as
    bench_parallel_ids names its fit (``mmq-ft-1-sharpness0.01-title+categories``); a retriever's
    temperature or dropout (``@T``, ``~D``) changes nothing here, so it names nothing."""
    if name in ("din", "popularity"):
        return RUNS / dataset / name
    method, levels, _ = parse_ids(name)
    return RUNS / dataset / folder_name(method, levels, name)


def runs_for(dataset: str, name: str, seeds: list[int], refit: bool = False) -> list[dict]:
    """Each seed's run of ``name``: din (item ids), popularity (deterministic: one run) or an
    ID type's din-sid (``refit``: seed s on tokenizer seed s's table, tokenizer_seed)."""
    folder = ranking_folder(dataset, name)
    if name == "popularity":
        return [rank(dataset, "popularity", 0, folder)]
    if name == "din":
        return [rank(dataset, "din", s, folder / f"seed{s}") for s in seeds]
    return [
        rank(
            dataset,
            "din-sid",
            s,
            folder / seed_folder(s, refit),
            sid_table(dataset, name, tokenizer_seed(s, refit)),
        )
        for s in seeds
    ]


def cell(c: dict) -> str:
    """mean ± CI, or n/a where no seed has a finite AUC (a slice without both labels)."""
    if c["mean"] is None:
        return "n/a"
    return f"{c['mean']:.4f}" + (f" ± {c['ci']:.4f}" if c["ci"] is not None else "")


def best_epochs(ms: list[dict]) -> str:
    cells = []
    for m in ms:
        hist = m.get("history") or []
        if not hist:
            continue
        best = max(hist, key=lambda h: h["valid_auc"])["epoch"]
        cells.append(f"{best}{'*' if m.get('stopped') == 'epochs' else ''}")
    return ", ".join(cells)


def paired(ds: str, x: list[dict], y: list[dict], names: tuple[str, str], store: dict) -> list:
    """x - y in AUC, paired over users: valid and test on every sample, then test's cold and
    rare<30 samples."""
    lines = []
    for split, sl in (("valid", "all"), ("test", "all"), ("test", "cold"), ("test", "rare<30")):
        s0 = x[0]["scores"][split]
        for m in x[1:] + y:  # one protocol: the same samples in the same order
            if not np.array_equal(m["scores"][split]["user"], s0["user"]):
                raise SystemExit(f"{ds}: {names} were not scored on the same {split} samples")
        keep = x[0]["test_masks"][sl] if sl != "all" else np.ones(len(s0["user"]), dtype=bool)
        a, b = (np.stack([m["scores"][split]["score"][keep] for m in ms]) for ms in (x, y))
        d = paired_auc(s0["user"][keep], s0["label"][keep], a, b, names=names)
        store[f"paired_{names[0]}_vs_{names[1]}_{split}_{sl}"] = d
        verdict = f"{d['win']} wins" if d["win"] else "within noise"
        lines.append(
            f"- {ds}, {split} AUC ({sl} samples, {int(keep.sum())}): {names[0]} - {names[1]} "
            f"= {d['diff']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]: {verdict}"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=["ml100k-mm"])
    ap.add_argument("--ids", nargs="+", required=True, help="METHOD:LEVELS, first = base")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    add_pair_option(ap, "also compare X with Y (both among --ids)")
    ap.add_argument("--only", action="store_true", help="train the runs; write nothing")
    ap.add_argument("--refit-tokenizers", action="store_true", help=REFIT_HELP)
    ap.add_argument("--results", default="ranking_ids", help="results stem")
    a = ap.parse_args()
    for spec in a.ids:
        parse_ids(spec)
    check_pairs(a.pair, a.ids)
    names = ["popularity", "din", *a.ids]
    if a.only:
        for ds in a.datasets:
            for name in names:
                runs_for(ds, name, a.seeds, a.refit_tokenizers)
        return
    from mmsid.pipeline import git_commit

    commit = git_commit()
    cmd = f"python benchmarks/bench_ranking_ids.py --datasets {' '.join(a.datasets)}"
    cmd += f" --ids {' '.join(a.ids)} --seeds {' '.join(map(str, a.seeds))}"
    cmd += pair_args(a.pair)
    cmd += " --refit-tokenizers" if a.refit_tokenizers else ""
    if a.results != "ranking_ids":
        cmd += f" --results {a.results}"
    tseeds = tokenizer_seeds(a.seeds, a.refit_tokenizers)
    res: dict = {"command": cmd, "commit": commit, "seeds": a.seeds, "datasets": {}}
    res["tokenizer_seeds"] = tseeds
    res["ranker"] = {"model": "din-sid", "epochs": EPOCHS, "patience": PATIENCE}
    lines = [
        "# Ranking: DIN over each ID type's SIDs against DIN over item ids",
        "",
        "din-sid: DIN with the item id's embedding plus its SID codes' (mmsid.ranking.din); one "
        "popularity-sampled negative per positive; early stopping on validation AUC (patience "
        f"{PATIENCE}, at most {EPOCHS} epochs; `*`: the cap ended that run). The SID tables are "
        f"bench_parallel_ids's ({tokenizer_note(tseeds)}, fitted on warm items; cold items "
        "get IDs from "
        "`transform`). AUC, mean ± 95% CI over seeds, by slice (the samples whose item is in "
        "it; n = samples); popularity is deterministic.",
        "",
        f"Command: `{cmd}` (commit {commit}, seeds {a.seeds}).",
        "",
    ]
    pairs, id_rows, expert_rows, codebooks = [], [], [], set()
    for ds in a.datasets:
        runs = {name: runs_for(ds, name, a.seeds, a.refit_tokenizers) for name in names}
        store: dict = {}
        ids, experts, sizes = sid_reports(ds, a.ids, a.results, store, tseeds)
        id_rows += ids
        expert_rows += experts
        codebooks |= sizes
        m0 = runs["din"][0]
        sizes = ", ".join(f"{sl} {m0['test'][sl]['n']}" for sl in SLICES)
        lines += [
            f"## {ds} (test samples: {sizes})",
            "",
            "| ranker | split | AUC all | head | long tail | cold | rare<30 | GAUC | best epochs |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, ms in runs.items():
            row: dict = {}
            label = {"din": "din (item ids)", "popularity": "popularity"}.get(name, f"din + {name}")
            for split in SPLITS:
                row[split] = agg = {sl: mean_ci([m[split][sl]["auc"] for m in ms]) for sl in SLICES}
                agg["gauc"] = mean_ci([m[split]["all"]["gauc"] for m in ms])
                cells = " | ".join(cell(agg[k]) for k in (*SLICES, "gauc"))
                lines.append(f"| {label} | {split} | {cells} | {best_epochs(ms)} |")
            store[name] = row
        lines.append("")
        asked = [(s, "din") for s in a.ids] + [(s, a.ids[0]) for s in a.ids[1:]]
        asked += [tuple(p) for p in a.pair if tuple(p) not in asked]
        pairs += [f"### {ds}", ""]
        for x, y in asked:
            pairs += paired(ds, runs[x], runs[y], (x, y), store)
        pairs.append("")
        res["datasets"][ds] = store
    lines += id_table(id_rows, tseeds)[1:]  # the tables above end with a blank line
    if expert_rows:
        lines += expert_table(a.results, expert_rows, codebooks, tseeds[0])
    lines += [
        "",
        "Paired AUC differences over the same users (95% bootstrap interval):",
        "",
        *pairs,
    ]
    write_json(RESULTS / f"{a.results}.json", res)
    write_text(RESULTS / f"{a.results}.md", "\n".join(lines).rstrip() + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
