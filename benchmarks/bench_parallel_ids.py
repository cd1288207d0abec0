"""Which semantic IDs the parallel-SID retriever should read (issue 15): ID type and length at
the default item-level loss, on the same model, settings and seeds. The choice is read on
validation; test figures are reported beside it, with the cost (seconds per epoch).

    python benchmarks/bench_parallel_ids.py [--datasets ml100k-mm] [--ids rq-kmeans:3 opq:8 opq:16]
    python benchmarks/bench_parallel_ids.py --only opq:8   # one ID type's runs; writes nothing
    python benchmarks/bench_parallel_ids.py --datasets amazon-beauty --ids opq:8 opq:16@0.14

``@T`` sets that ID type's logit temperature (default MODEL's 0.07): item logits are the mean
of m code cosines, so their spread, and the temperature that suits it, changes with m.
``~D`` sets the retriever's dropout (default MODEL's 0.2; ``opq:16@0.14~0.5``): the same
SID table, a run folder of its own, so dropout is tuned on validation as SASRec's is
(bench_sasrec_grid).
``/VIEW+VIEW`` sets the tokenizer's input modalities (default: the data set's), e.g.
``--datasets amazon-beauty --ids rq-vae:6/title+categories mmq-ft:1/title+categories``: Beauty
has one real modality, and its two text views give MMQ's shared and specific experts different
inputs (the stand-in MMQ's issue accepts); give every ID type of a comparison the same views.
``,sharpness=W`` / ``,balance=W`` after LEVELS set MMQ's gate-term weights
(``mmq-ft:1,sharpness=0.03/title+categories``; defaults mmsid.tokenize.TokenizeConfig's), each
value its own tokenizer fit and run folders, so the weights are tuned on validation.

Per data set and ID type ``method:levels``: one SID table (tokenizer seed 0, fitted on the
protocol's warm items; cold items get IDs from ``transform``; ``--refit-tokenizers``: model
seed s reads a table fitted with tokenizer seed s, so the seeds' intervals include refitting
the tokenizer, at one tokenizer fit per seed), then per model seed one
parallel-SID retriever with ``parallel.loss=item`` and bench_parallel_loss's model and budget
(width 256, 2 layers, FFN 512, dropout 0.2, temperature 0.07, AdamW 1e-3 constant; early
stopping on validation Recall@10, patience 10, at most 100 epochs), and popularity /
content-kNN on the same protocol. The item loss costs about m gathers per (position, item), so
longer IDs cost more per epoch: seconds per epoch (training + the per-epoch validation) are
reported. Runs live under ``runs/parallel_ids/`` (re-running reuses finished runs and resumes
the others). Mean ± 95% CI over seeds; each ID type is compared with the first one listed (and
``--pair X Y`` compares two others) by a bootstrap over the same users, seeds pooled, on
validation (the decision) and test.
Writes benchmarks/results/parallel_ids.{json,md} (``--results STEM``: STEM.{json,md}).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from bench_parallel_loss import (
    EPOCHS,
    LR,
    MODEL,
    PATIENCE,
    aggregate,
    baseline_rows,
    best_epochs,
    metric_cells,
    on_slice,
    paired_lines,
    retrieve,
    slice_masks,
    tokenize,
)
from id_specs import (
    MMQ_IDS,
    fit_of,
    folder_name,
    parse_ids,
    spec_dropout,
    spec_settings,
    spec_views,
)

from mmsid.io import write_json, write_text

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
RUNS = HERE.parent / "runs" / "parallel_ids"
IDS = ("rq-kmeans:3", "opq:8")


def add_pair_option(ap: argparse.ArgumentParser, help: str) -> None:
    """``--pair X Y`` (repeatable): a paired comparison of two of the bench's --ids beyond its
    own; check_pairs checks them."""
    ap.add_argument("--pair", nargs=2, action="append", default=[], metavar=("X", "Y"), help=help)


def pair_args(pairs: list[list[str]]) -> str:
    """The ``--pair`` options as a results file's command repeats them."""
    return "".join(f" --pair {x} {y}" for x, y in pairs)


def check_pairs(pairs: list[list[str]], ids: list[str]) -> None:
    """Refuse a ``--pair`` that does not name two different ID types of ``ids``, before
    anything trains or is written."""
    for x, y in pairs:
        if x not in ids or y not in ids or x == y:
            raise SystemExit(
                f"--pair {x} {y}: name two different ID types of --ids {' '.join(ids)}"
            )


def tokenizer_dir(dataset: str, spec: str, seed: int = 0) -> Path:
    """The tokenizer folder of ``spec``'s IDs fitted with tokenizer seed ``seed``."""
    fit, levels = fit_of(spec)
    folder = RUNS / dataset / folder_name(fit, levels, spec)
    return folder / ("tokenizer" if seed == 0 else f"tokenizer-seed{seed}")


def fit_tokenizer(dataset: str, spec: str, seed: int = 0) -> Path:
    """``spec``'s tokenizer folder (tokenizer seed ``seed``), fitted unless already finished
    with the same settings (bench_parallel_loss.tokenize)."""
    return tokenize(
        dataset,
        *fit_of(spec),
        tokenizer_dir(dataset, spec, seed),
        seed=seed,
        modalities=spec_views(spec),
        settings=spec_settings(spec),
    )


def tokenizer_seed(seed: int, refit: bool) -> int:
    """The tokenizer seed a model of seed ``seed`` reads: 0 (one SID table for every model seed,
    the default), or with ``refit`` its own, so the spread over seeds also covers refitting the
    tokenizer (MMQ's fits are not bit-reproducible across runs, and one fit can decide a
    comparison)."""
    return seed if refit else 0


def tokenizer_seeds(seeds: list[int], refit: bool) -> list[int]:
    """The tokenizer seed each of ``seeds`` reads (tokenizer_seed), as results files record it."""
    return [tokenizer_seed(s, refit) for s in seeds]


def seed_folder(seed: int, refit: bool) -> str:
    """A model seed's run folder name: ``seed{s}``, or ``seed{s}-tok{t}`` where it reads
    tokenizer seed t > 0 (model seed 0 reads tokenizer seed 0 either way: one run)."""
    t = tokenizer_seed(seed, refit)
    return f"seed{seed}" if t == 0 else f"seed{seed}-tok{t}"


def run_folder(dataset: str, spec: str, seed: int, refit: bool = False) -> Path:
    """The parallel-SID run folder of ``spec``'s IDs and model seed ``seed`` (one per
    temperature and dropout; ``refit``: as tokenizer_seed)."""
    method, levels, temp = parse_ids(spec)
    drop = spec_dropout(spec)
    run = folder_name(method, levels, spec)
    run += "" if temp is None else f"-t{temp:g}"
    run += "" if drop is None else f"-dropout{drop:g}"
    return RUNS / dataset / run / seed_folder(seed, refit)


def runs_for(
    dataset: str, spec: str, seeds: list[int], fusion: dict | None = None, refit: bool = False
):
    """Each seed's parallel-SID metrics on ``spec``'s IDs (``fusion``: with content fusion;
    ``refit``: each seed on its own tokenizer fit, tokenizer_seed). The tokenizer is shared by
    every temperature of one ``METHOD:LEVELS``, and MMQ's by its three ID tables (MMQ_IDS; one
    fit, in the mmq-ft folder)."""
    method, _, temp = parse_ids(spec)
    sids_file = MMQ_IDS.get(method, "sids.parquet")
    out = []
    for s in seeds:
        t = tokenizer_seed(s, refit)
        sids = fit_tokenizer(dataset, spec, t)
        out.append(
            retrieve(
                dataset,
                "parallel-sid",
                s,
                "item",
                sids,
                run_folder(dataset, spec, s, refit),
                fusion,
                temperature=temp,
                dropout=spec_dropout(spec),
                sids_file=sids_file,
            )
        )
    return out


REFIT_HELP = (
    "model seed s reads IDs from a tokenizer fitted with seed s (default: every seed reads "
    "tokenizer seed 0's), so the intervals over seeds include refitting the tokenizer"
)


def tokenizer_note(tseeds: list[int]) -> str:
    """How a results file says which tokenizer fits its runs read."""
    if set(tseeds) == {0}:
        return "tokenizer seed 0, one SID table for every model seed"
    return f"model seed s reads tokenizer seed s: {', '.join(map(str, tseeds))}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=["ml100k-mm"])
    ap.add_argument("--ids", nargs="+", default=list(IDS), help="METHOD:LEVELS, first = base")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    add_pair_option(ap, "also compare X - Y (both among --ids), beyond each type against the first")
    ap.add_argument("--only", help="run this ID type's retrievers; write nothing")
    ap.add_argument("--refit-tokenizers", action="store_true", help=REFIT_HELP)
    ap.add_argument(
        "--results", default="parallel_ids", help="results stem under benchmarks/results/"
    )
    a = ap.parse_args()
    for spec in a.ids + ([a.only] if a.only else []):
        parse_ids(spec)
    check_pairs(a.pair, a.ids)
    for x, y in a.pair:
        if a.ids[0] in (x, y):
            raise SystemExit(
                f"--pair {x} {y}: every type is already compared with the first, {a.ids[0]}; "
                "pair two of the others"
            )
    if a.only:
        for ds in a.datasets:
            runs_for(ds, a.only, a.seeds, refit=a.refit_tokenizers)
        return
    from mmq_experts import expert_table  # they import this module
    from sid_tables import id_table, sid_reports

    from mmsid.pipeline import git_commit

    commit = git_commit()  # before anything is written
    cmd = "python benchmarks/bench_parallel_ids.py --datasets " + " ".join(a.datasets)
    cmd += " --ids " + " ".join(a.ids) + " --seeds " + " ".join(map(str, a.seeds))
    cmd += pair_args(a.pair)
    cmd += " --refit-tokenizers" if a.refit_tokenizers else ""
    if a.results != "parallel_ids":
        cmd += f" --results {a.results}"
    tseeds = tokenizer_seeds(a.seeds, a.refit_tokenizers)
    res: dict = {
        "command": cmd,
        "commit": commit,
        "seeds": a.seeds,
        "tokenizer_seeds": tseeds,
        "retriever": {**MODEL, "loss": "item", "epochs": EPOCHS, "patience": PATIENCE, "lr": LR},
        "datasets": {},
    }
    lines = [
        "# Parallel-SID retriever: which semantic IDs, and how long",
        "",
        "Item-level loss (the default), the same model for every ID type (width 256, 2 layers, "
        "FFN 512, dropout 0.2 unless the ID type says `~D`, temperature 0.07 unless it says "
        "`@T`, AdamW 1e-3; early "
        "stopping on validation "
        f"Recall@10, patience {PATIENCE}, at most {EPOCHS} epochs; `*`: the cap ended that run), "
        "same seeds. Every "
        f"tokenizer is fitted on the protocol's warm items ({tokenizer_note(tseeds)}); cold "
        "items get their IDs from `transform`. Mean ± 95% CI over seeds; s/epoch is "
        "training plus the per-epoch validation, one thread per run with another run on the "
        "machine's second core. The choice is read on validation.",
        "",
        f"Command: `{cmd}` (commit {commit}, seeds {a.seeds}).",
        "",
        "| data set | IDs | split | Recall@10 | NDCG@10 | head R@10 | long-tail R@10 | "
        "cold R@10 (users) | best epochs | s/epoch |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    paired, id_lines, expert_rows, codebooks = [], [], [], set()
    for ds in a.datasets:
        runs = {spec: runs_for(ds, spec, a.seeds, refit=a.refit_tokenizers) for spec in a.ids}
        res["datasets"][ds] = {"protocol": runs[a.ids[0]][0]["protocol"]}
        for spec, ms in runs.items():
            row: dict = {
                "best_epoch": [m["best_epoch"] for m in ms],
                "epochs_run": [m["epochs_run"] for m in ms],
                "seconds_per_epoch": [m["train_seconds"] / max(m["epochs_run"], 1) for m in ms],
            }
            for split in ("valid", "test"):
                row[split] = agg = aggregate(ms, split)
                lines.append(
                    f"| {ds} | {spec} | {split} | {metric_cells(agg)} | {best_epochs(ms)} | "
                    f"{np.mean(row['seconds_per_epoch']):.0f} |"
                )
            res["datasets"][ds][spec] = row
        for model in ("popularity", "content-knn"):
            m = retrieve(ds, model, 0, out=RUNS / ds / model)
            res["datasets"][ds][model] = {s: m[s] for s in ("valid", "test")}
            lines += baseline_rows(ds, model, m, " | |")
        ids, experts, sizes = sid_reports(ds, a.ids, a.results, res["datasets"][ds], tseeds)
        id_lines, expert_rows, codebooks = id_lines + ids, expert_rows + experts, codebooks | sizes
        base = a.ids[0]
        masks = slice_masks(ds, runs[base][0]["targets"]) if len(a.ids) > 1 else {}
        # each type against the first, then the asked pairs; all users, then where semantic
        # IDs should help most
        pairs = [(spec, base, f"{spec}_") for spec in a.ids[1:]]
        pairs += [(x, y, f"{x}_vs_{y}_") for x, y in a.pair]
        for x, y, key in pairs:
            for sl in ("all", "cold", "long_tail"):
                pre, users = on_slice(sl, masks)
                paired += paired_lines(
                    ds, runs[x], runs[y], (x, y), res["datasets"][ds], pre + key, users
                )
    lines += [
        "",
        "Paired comparison with the first ID type, then of each `--pair` (95% bootstrap "
        "interval), over all users, then the users whose target is cold, then long-tail:",
        "",
    ]
    lines += paired
    lines += id_table(id_lines, tseeds)
    if expert_rows:
        lines += expert_table(a.results, expert_rows, codebooks, tseeds[0])
    write_json(RESULTS / f"{a.results}.json", res)
    write_text(RESULTS / f"{a.results}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
