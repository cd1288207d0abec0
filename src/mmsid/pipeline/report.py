"""Results of a run folder: seeds pooled into mean ± 95% CI per cell, paired comparisons on the
same test users (mmsid.eval.stats), ``results.json``, ``report.md`` and the plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mmsid.eval.stats import mean_ci
from mmsid.pipeline.codebooks import codebook_lines, codebook_row, fmt
from mmsid.pipeline.config import PipelineConfig
from mmsid.pipeline.paired import CONTENT, SLICES, TASK, compare
from mmsid.pipeline.plan import Stage

DONE = ("ran", "cached", "done")
FUSED_RANKS = "fused_ranks.npz"  # a retriever's ranks with content fusion
SLICE_DEFINITIONS = (
    "`head`: target is among the top 20% of warm items by training popularity; `long_tail`: "
    "another warm item; `cold`: a cold item (held out of every training input, its SID from "
    "`transform`); `rare<30`: fewer than 30 training interactions, cold included (the PSRQ "
    'paper\'s "Cold AUC"). `n` = test users (retrieval) or test samples (ranking).'
)


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def make_row(
    task: str,
    group: list[Stage],
    results: list[dict],
    trained: list[dict],
    ranks: str = "ranks.npz",
) -> dict:
    """One row from its seeds' ``results`` (valid/test metrics) and the runs that ``trained``
    its models (seconds, epochs); ``ranks``: the file of its per-user test ranks."""
    main, others, _ = TASK[task]
    cells = {}
    for sl in SLICES:
        per_seed = [(m.get("test") or {}).get(sl) or {} for m in results]
        cells[sl] = {k: mean_ci([p.get(k) for p in per_seed]) for k in (main, *others)}
        cells[sl]["n"] = per_seed[0].get("n")
    row = {
        "stages": [s.name for s in group],
        "seeds": [s.seed for s in group] if group[0].seed is not None else [],
        "deterministic": group[0].name.split("/")[0] == group[0].name,
        # what the row's numbers come from: its model and, for a SID row, the tokenizer
        "model": group[0].config.get("model"),
        "method": group[0].method,
        "test": cells,
        "valid": {
            main: mean_ci([(m.get("valid") or {}).get("all", {}).get(main) for m in results])
        },
        "seconds": float(np.mean([m.get("train_seconds", m.get("seconds", 0.0)) for m in trained])),
        "epochs": [m.get("epochs_run") for m in trained],
        "stopped": [m.get("stopped") for m in trained],
    }
    if ranks != "ranks.npz":
        row["ranks"] = ranks
        row["fusion"] = [{k: m[k] for k in ("weight", "new_item_bias")} for m in results]
    return row


def collect(
    cfg: PipelineConfig, out: Path, stages: list[Stage], records: list[dict], *, paired: bool
) -> dict:
    st = out / "stages"
    done = {r["stage"] for r in records if r["status"] in DONE}
    res: dict[str, Any] = {
        "dataset": cfg.dataset,
        "seeds": list(cfg.seeds),
        "budget": cfg.budget,
        "methods": cfg.methods,
        "tasks": cfg.tasks,
        "stages": records,
        "protocol": None,
        "codebook": {},
        "retrieval": {},
        "ranking": {},
        "comparisons": {},
    }
    by_row: dict[tuple[str, str], list[Stage]] = {}
    codebooks: dict[str, list[dict]] = {}
    for s in stages:
        if s.name not in done:
            continue
        if s.task:
            by_row.setdefault((s.task, s.row), []).append(s)
        elif s.name.split("/")[-1].startswith("tokenize-"):
            codebooks.setdefault(s.row, []).append(_load(st / s.name / "metrics.json"))
    for (task, row), group in by_row.items():
        metrics = [_load(st / s.name / "metrics.json") for s in group]
        res["protocol"] = res["protocol"] or metrics[0].get("protocol")
        res[task][row] = make_row(task, group, metrics, metrics)
        if task == "retrieval" and all(m.get("fused") for m in metrics):
            # content fusion (mmsid.retrieval.fusion): the same models, scored with content
            fused = [m["fused"] for m in metrics]
            res[task][f"{row} + content"] = make_row(task, group, fused, metrics, FUSED_RANKS)
    for row, ms in codebooks.items():
        res["codebook"][row] = codebook_row(ms)
    if paired:
        for task in ("retrieval", "ranking"):
            if res[task]:
                res["comparisons"][task] = compare(task, res[task], st)
    return res


# ---- report.md ----------------------------------------------------------------------------


def cell(c: dict) -> str:
    if not c or c.get("mean") is None:
        return "–"
    return fmt(c["mean"]) + (f" ± {c['ci']:.4f}" if c.get("ci") is not None else "")


def diff_cell(d: dict) -> str:
    if not d or d.get("diff") is None:
        return "–"
    mark = " **win**" if d["win"] == d["a"] else " **loss**" if d["win"] == d["b"] else ""
    return f"{d['diff']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]{mark}"


def diff_tables(task: str, res: dict) -> list[str]:
    """The paired-difference tables by slice: every row minus the item-id reference, and (in
    retrieval) every trained row minus content-kNN, the content-only baseline."""
    main, _, ref = TASK[task]
    comp = res["comparisons"].get(task) or {}
    lines: list[str] = []
    for key, other in (("vs_reference", ref), ("vs_content", CONTENT)):
        if not comp.get(key):
            continue
        lines += [
            "",
            f"{main} minus {other}'s, paired bootstrap over the same test users "
            "(95% interval; **win**/**loss** only where it excludes 0):",
            "",
            "| model | " + " | ".join(SLICES) + " |",
            "|---|" + "---|" * len(SLICES),
        ]
        for name, d in comp[key].items():
            lines.append(f"| {name} | " + " | ".join(diff_cell(d[sl]) for sl in SLICES) + " |")
    return lines


def mmq_lines(task: str, res: dict) -> list[str]:
    """Each MMQ + fine-tuning row minus every other SID row of its model (``mmq_pairs``):
    the paired test differences by slice, the difference relative to the other row's test
    mean, and the difference of the validation means (unpaired)."""
    main = TASK[task][0]
    rows = res[task]
    lines: list[str] = []
    for a, vs in ((res["comparisons"].get(task) or {}).get("mmq_vs") or {}).items():
        lines += [
            "",
            f"{a}: {main} minus each other SID row's of the same model, paired over the same "
            "test users (95% interval; **win**/**loss** only where it excludes 0); `rel.`: the "
            "difference on all users over the other row's mean; `valid`: the difference of the "
            "validation means:",
            "",
            "| minus | " + " | ".join(SLICES) + " | rel. | valid |",
            "|---|" + "---|" * (len(SLICES) + 2),
        ]
        for b, d in vs.items():
            base = rows[b]["test"]["all"][main]["mean"]
            diff = d["all"]["diff"]
            rel = f"{diff / base:+.1%}" if diff is not None and base else "–"
            va, vb = (rows[r]["valid"][main]["mean"] for r in (a, b))
            valid = f"{va - vb:+.4f}" if va is not None and vb is not None else "–"
            cells = " | ".join(diff_cell(d[sl]) for sl in SLICES)
            lines.append(f"| {b} | {cells} | {rel} | {valid} |")
    return lines


def progress_note(stage: dict) -> str:
    """'epoch 7/30, best valid recall@10 0.0577' for a started training stage, else ''."""
    p = stage.get("progress")
    return (
        f"epoch {p['epoch']}/{p['epochs']}, best valid {p['select']} {fmt(p['best'])}" if p else ""
    )


def summary_line(task: str, res: dict) -> str:
    comp = res["comparisons"].get(task)
    if not comp or "best" not in comp:
        return (
            "Paired comparisons are computed at the end of the run (or by `mmsid report RUN` "
            "over the stages finished so far)."
        )
    main = comp["metric"]
    best = comp["best"]
    c = res[task][best]["test"]["all"][main]
    wins = [r for r, d in comp["best_vs"].items() if d["win"] == best]
    ties = [r for r, d in comp["best_vs"].items() if d["win"] is None]
    return (
        f"**Best on all test users: {best}**, {main} {cell(c)}. It beats, with the paired "
        f"interval excluding 0: {', '.join(wins) or 'nothing'}; within noise of: "
        f"{', '.join(ties) or 'nothing'}."
    )


PLOT_NOTES = {
    "retrieval_vs_item_ids.png": "what SIDs buy over item ids, per slice",
    "ranking_vs_item_ids.png": "what SIDs buy over item ids, per slice",
}


def report(res: dict, plots: list[str] | tuple[str, ...] = ()) -> str:
    """report.md from ``collect``'s results; ``plots``: the plot files that exist (a report
    written mid-run links none it does not have)."""
    seeds = res["seeds"]
    p = res.get("protocol") or {}
    lines = [
        f"# mmsid run: {res['dataset']} ({res['budget']} budget, seeds {seeds})",
        "",
        f"Command: `{res['command']}`  ",
        f"Commit: `{res.get('commit')}`; config hash `{res['config_hash']}`.",
        "",
    ]
    if res["budget"] == "quick":
        lines += [
            "**Quick budget: a smoke test.** Every trained model gets 3 passes over the "
            "training data; nothing below ranks methods. Use `--budget full --seeds 0,1,2`.",
            "",
        ]
    if not res.get("complete", True):
        n_done = sum(r["status"] in DONE for r in res["stages"])
        lines += [
            f"**In progress: {n_done} of {len(res['stages'])} stages done.** Re-running the "
            "command continues the rest (Stages).",
            "",
        ]
    if p:
        lines += [
            "## Protocol",
            "",
            f"Leave-one-out by time (test = each user's last item, validation = the one before; "
            f"ranking uses the same positives), {p['cold_items']} of {p['items']} items cold "
            f"(seed {p['config']['seed']}), {p['test_users']} test users; test slices: "
            + ", ".join(f"{k} {v}" for k, v in p["test_slices"].items())
            + ".",
            "",
        ]
        if p.get("order_free"):
            lines += [
                f'**{res["dataset"]} has no time order**: its "next item" is an arbitrary '
                "held-out item of the user; read the next-item tables as held-out-item "
                "prediction.",
                "",
            ]
        lines += [SLICE_DEFINITIONS, ""]
    for task, title in (("retrieval", "Retrieval (test)"), ("ranking", "Ranking (CTR, test)")):
        if not res[task]:
            continue
        main, others, _ = TASK[task]
        lines += [f"## {title}", "", summary_line(task, res), ""]
        first = next(iter(res[task].values()))["test"]
        head = [f"{sl} (n={first[sl].get('n')})" for sl in SLICES]
        lines += [
            f"{main}, mean ± 95% CI over seeds, by slice:",
            "",
            "| model | seeds | " + " | ".join(head) + " | " + " | ".join(others[:2]) + " (all) |",
            "|---|---|" + "---|" * (len(SLICES) + 2),
        ]
        for name, r in res[task].items():
            t = r["test"]
            n = "det." if r["deterministic"] else str(len(r["seeds"]))
            lines.append(
                f"| {name} | {n} | "
                + " | ".join(cell(t[sl][main]) for sl in SLICES)
                + " | "
                + " | ".join(cell(t["all"][o]) for o in others[:2])
                + " |"
            )
        fused = {name: r["fusion"] for name, r in res[task].items() if r.get("fusion")}
        if fused:
            lines += [
                "",
                "`+ content`: the same trained models scored with content fusion "
                "(mmsid.retrieval.fusion): the model's score + w x cosine(content of the last "
                "item, item content) + b for items the model never trained on, (w, b) chosen "
                "per seed by validation "
                f"{main} on all users. Chosen (w, b): "
                + "; ".join(
                    f"{name} " + ", ".join(f"({f['weight']:g}, {f['new_item_bias']:g})" for f in fs)
                    for name, fs in fused.items()
                )
                + ".",
            ]
        cut = [name for name, r in res[task].items() if "max_minutes" in (r.get("stopped") or [])]
        if cut:
            lines += [
                "",
                f"**Cut by the time limit** (max_minutes; not trained to convergence): "
                f"{', '.join(cut)}.",
            ]
        lines += early_stop_lines(res[task])
        lines += diff_tables(task, res)
        lines += mmq_lines(task, res)
        lines.append("")
    lines += codebook_lines(res) + _stage_lines(res)
    lines += [
        "Statistics: a cell is the mean over model seeds ± the half-width of a 95% t interval "
        "(det. = deterministic baseline, no seed spread). A difference is a paired bootstrap "
        "over test users (2,000 replicates retrieval, 1,000 ranking) of the seed-averaged "
        "metrics; it counts as a win only where its 95% interval excludes 0. "
        "Evaluation runs in fp32.",
        "",
        (
            "Plots: "
            + ", ".join(
                f"`{f}`" + (f" ({PLOT_NOTES[f]})" if f in PLOT_NOTES else "") for f in plots
            )
            + "."
            if plots
            else "Plots: drawn when every stage is done."
        ),
        "",
    ]
    return "\n".join(lines)


def trained_seeds(rows: dict) -> list[tuple[str, int, str]]:
    """(stage, epochs run, why it stopped) of every trained seed of a task's rows; a fused
    row's models are its plain row's, so it adds none."""
    return [
        (stage, epochs, why)
        for r in rows.values()
        if "ranks" not in r
        for stage, epochs, why in zip(r["stages"], r.get("epochs") or [], r.get("stopped") or [])
        if epochs
    ]


def patience_stops(rows: dict) -> list[tuple[str, int]]:
    """(stage, epochs run) of the trained seeds that early stopping ended (not a cap or a
    time limit)."""
    return [(s, e) for s, e, why in trained_seeds(rows) if why == "early_stopping"]


EARLY = 0.5  # a seed patience ended before this share of the task's median epochs is flagged


def early_stop_lines(rows: dict) -> list[str]:
    """The trained seeds that early stopping ended at under EARLY x the median epochs of the
    task's trained seeds: an early, noisy validation peak may have stopped them before they
    converged (on ml100k-mm, RQ-VAE-6's seed-0 retriever stopped at 18 epochs against 29-67
    for every other; held off to 25 it trained to 54 and doubled its test R@10). A flag to
    check, not a verdict: benchmarks/bench_earlystop.py re-trains them under a minimum epoch
    (LoopConfig.min_epochs), which changes no seed that stopped later."""
    runs = trained_seeds(rows)
    if len(runs) < 3:
        return []
    median = float(np.median([e for _, e, _ in runs]))
    early = [(s, e) for s, e in patience_stops(rows) if e < EARLY * median]
    if not early:
        return []
    return [
        "",
        f"**Stopped early, well before the rest** (patience ended them at under {EARLY:g} x "
        f"the median {median:g} epochs of this task's trained models; an early validation "
        "peak may have stopped them before they converged, `benchmarks/bench_earlystop.py` "
        "re-trains them under a minimum epoch): "
        + ", ".join(f"{s} ({e} epochs)" for s, e in early)
        + ".",
    ]


def _stage_lines(res: dict) -> list[str]:
    lines = ["## Stages", "", "| stage | status | seconds | progress |", "|---|---|---|---|"]
    for r in res["stages"]:
        lines.append(f"| {r['stage']} | {r['status']} | {r['seconds']:.1f} | {progress_note(r)} |")
    return lines + [""]
