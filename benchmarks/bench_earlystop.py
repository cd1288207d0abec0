"""A finished main run with early stopping held off to a minimum epoch (issue 17).

    python benchmarks/bench_earlystop.py --config benchmarks/configs/main.yaml \
        --datasets ml100k-mm --min-epochs 25

Why: a retriever whose patience ran out after few epochs may have stopped on an early, noisy
validation peak rather than at convergence. In the main job on ml100k-mm, RQ-VAE-6's seed-0
parallel-SID model stopped at epoch 18 (best epoch 8, valid R@10 .058) while every other
retriever of that run went on to 29 epochs or more (best .116-.155), and the issue's headline
comparison (MMQ + fine-tuning against RQ-VAE) rests on that row.

How: the rule "early stopping cannot end a run before ``min_epochs`` epochs"
(``LoopConfig.min_epochs``) changes no retriever that patience ended at or after that epoch:
up to its stop, a run's decisions are the same with the rule and without it. So the run under
the rule is the run with only the retrievers it changes re-trained: each resumes from a copy
of its own last checkpoint (``min_epochs`` is a budget setting, outside the resume key) in
``RUNS/earlystop/min<E>/<dataset>/<stage>``, and the run folder itself is left untouched. The
report gives, per data set, what the rule changed (epochs, best epoch, validation and test
R@10, and whether the checkpoint resumed), the soonest stop it leaves as run (how close the
threshold came to another seed), every changed row before and after, and issue 17's
paired comparisons (MMQ + fine-tuning against every other SID row) with the re-trained seeds
swapped in. Writes ``benchmarks/results/earlystop.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from mmsid.config import load_yaml, merge
from mmsid.io import write_json, write_text
from mmsid.pipeline import git_commit
from mmsid.pipeline.paired import SLICES, TASK, compare
from mmsid.pipeline.plan import Stage
from mmsid.pipeline.report import cell, make_row, mmq_lines, patience_stops
from mmsid.retrieval.config import RetrieveConfig
from mmsid.retrieval.run import run_retrieve

RESULTS = Path(os.environ.get("MMSID_RESULTS_DIR") or Path(__file__).resolve().parent / "results")
DATASETS = ["ml100k-mm", "lfm2k-mm", "amazon-beauty"]
MAIN = TASK["retrieval"][0]  # recall@10


def changed_stages(rows: dict, min_epochs: int) -> list[str]:
    """The trained retrievers the rule changes: those whose patience ended them before
    ``min_epochs`` epochs."""
    return [s for s, e in patience_stops(rows) if e < min_epochs]


def nearest_kept(rows: dict, min_epochs: int) -> tuple[str, int] | None:
    """The retriever patience ended soonest among those the rule leaves as run (stopped at or
    after ``min_epochs``): how close the run's shortest kept stop is to the threshold."""
    kept = [(e, s) for s, e in patience_stops(rows) if e >= min_epochs]
    if not kept:
        return None
    epochs, stage = min(kept)  # ties: the first stage name
    return stage, epochs


def retrain(run: Path, stage: str, out: Path, min_epochs: int) -> Path:
    """Re-train one retriever of ``run`` under the rule in ``out``, resumed from a copy of its
    last checkpoint; a re-train of the same stage (its key in ``source.json``) is reused or
    resumed, one of a stage the run has since re-made is an error."""
    src, dst = run / "stages" / stage, out / stage
    key = json.loads((src / "stage.json").read_text())["key"]
    if (dst / "source.json").exists():
        if json.loads((dst / "source.json").read_text())["key"] != key:
            sys.exit(
                f"{dst} re-trained another version of {src} (its stage key changed since); "
                "remove it to re-train this one"
            )
    elif dst.exists():
        sys.exit(f"{dst} exists but has no source.json: not made by this script; move it away")
    if not (dst / "metrics.json").exists():
        ckpt = dst / "checkpoints" / "last.pt"
        if not ckpt.exists():
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            write_json(dst / "source.json", {"stage": str(src), "key": key})
            shutil.copyfile(src / "checkpoints" / "last.pt", ckpt.with_suffix(".tmp"))
            os.replace(ckpt.with_suffix(".tmp"), ckpt)
        spec = load_yaml(src / "config.yaml") | {"out": str(dst), "min_epochs": min_epochs}
        cfg = merge(RetrieveConfig(dataset=spec["dataset"]), spec, str(src / "config.yaml"))
        run_retrieve(cfg, progress=True)
    return dst


def facts(m: dict) -> dict:
    """A retriever's stop, from its metrics.json: epochs run, best epoch, best validation and
    test R@10, and the validation R@10 of every epoch."""
    valid = [h.get("valid", {}).get(MAIN) for h in m["history"]]
    return {
        "epochs": m["epochs_run"],
        "best_epoch": m["best_epoch"],
        "valid": max(v for v in valid if v is not None),
        "test": m["test"]["all"][MAIN],
        "valid_by_epoch": valid,
    }


def swapped(rows: dict, st: Path, new: dict[str, Path]) -> dict:
    """``rows`` with every seed in ``new`` read from its re-trained folder (absolute paths in
    the rows' ``stages``, which compare() joins onto ``st``)."""
    out = {}
    for row, v in rows.items():
        if not any(s in new for s in v["stages"]):
            out[row] = v
            continue
        folders = [Path(os.path.abspath(new.get(s, st / s))) for s in v["stages"]]
        group = [
            Stage(str(f), {"model": v["model"]}, None, seed=seed, method=v["method"])
            for f, seed in zip(folders, v["seeds"], strict=True)
        ]
        metrics = [json.loads((f / "metrics.json").read_text()) for f in folders]
        if "ranks" in v:
            fused = [m["fused"] for m in metrics]
            out[row] = make_row("retrieval", group, fused, metrics, v["ranks"])
        else:
            out[row] = make_row("retrieval", group, metrics, metrics)
    return out


def relative(rows: dict) -> dict:
    """Rows with absolute stage folders written relative to the working directory."""
    return {
        row: {**v, "stages": [os.path.relpath(s) if os.path.isabs(s) else s for s in v["stages"]]}
        for row, v in rows.items()
    }


def one(ds: str, run: Path, out: Path, min_epochs: int) -> tuple[dict, list[str]]:
    res = json.loads((run / "results.json").read_text())
    rows, st = res["retrieval"], run / "stages"
    names = changed_stages(rows, min_epochs)
    new = {s: retrain(run, s, out / ds, min_epochs) for s in names}
    changed = []
    for s, f in new.items():
        b, a = (json.loads((d / "metrics.json").read_text()) for d in (st / s, f))
        # resumed: its first epochs are the stopped run's own rows (timings included), so the
        # rule only added epochs ("stopped" marks a run's last row only)
        hist = [
            [{k: v for k, v in h.items() if k != "stopped"} for h in m["history"]] for m in (b, a)
        ]
        resumed = hist[1][: len(hist[0])] == hist[0]
        changed.append({"stage": s, "before": facts(b), "after": facts(a), "resumed": resumed})
    after_rows = swapped(rows, st, new)
    comp = compare("retrieval", after_rows, st) if new else res["comparisons"].get("retrieval")
    touched = [r for r, v in rows.items() if any(s in new for s in v["stages"])]
    near = nearest_kept(rows, min_epochs)
    record = {
        "run": {k: res.get(k) for k in ("command", "commit", "seeds")},
        "changed": changed,
        "nearest_kept": {"stage": near[0], "epochs": near[1]} if near else None,
        "rows_before": {r: rows[r] for r in touched},
        "rows_after": relative({r: after_rows[r] for r in touched}),
        "mmq_vs_before": (res["comparisons"].get("retrieval") or {}).get("mmq_vs"),
        "mmq_vs_after": (comp or {}).get("mmq_vs"),
    }
    lines = [
        f"## {ds}",
        "",
        f"Run: `{res.get('command')}` (commit {res.get('commit')}, seeds {res.get('seeds')}).",
        "",
    ]
    if near:
        lines += [
            f"The soonest early stop the rule leaves as run: {near[0]} at {near[1]} epochs.",
            "",
        ]
    if not changed:
        return record, lines + [f"No retriever stopped before epoch {min_epochs}: unchanged.", ""]
    lines += [
        f"Retrievers whose patience ended them before epoch {min_epochs}, re-trained under the "
        "rule (epochs run / best epoch / best validation R@10 / test R@10):",
        "",
        "| stage | before | after | resumed from its checkpoint |",
        "|---|---|---|---|",
    ]
    for c in changed:
        b, a = c["before"], c["after"]
        cells = [
            f"{x['epochs']} / {x['best_epoch']} / {x['valid']:.4f} / {x['test']:.4f}"
            for x in (b, a)
        ]
        lines.append(
            f"| {c['stage']} | {cells[0]} | {cells[1]} | {'yes' if c['resumed'] else 'no'} |"
        )
    lines += [
        "",
        f"Rows with a re-trained seed, before → after (test {MAIN}, mean ± 95% CI over seeds; "
        "valid: the validation mean):",
        "",
        "| row | valid | " + " | ".join(SLICES) + " |",
        "|---|---|" + "---|" * len(SLICES),
    ]
    for r in touched:
        b, a = rows[r], after_rows[r]
        valid = f"{b['valid'][MAIN]['mean']:.4f} → {a['valid'][MAIN]['mean']:.4f}"
        cells = [f"{cell(b['test'][sl][MAIN])} → {cell(a['test'][sl][MAIN])}" for sl in SLICES]
        lines.append(f"| {r} | {valid} | " + " | ".join(cells) + " |")
    lines += ["", "Issue 17's paired comparisons with the re-trained seeds swapped in:"]
    lines += mmq_lines("retrieval", {"retrieval": after_rows, "comparisons": {"retrieval": comp}})
    return record, lines + [""]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="benchmarks/configs/main.yaml")
    p.add_argument("--datasets", nargs="+", default=DATASETS)
    p.add_argument("--min-epochs", type=int, default=25)
    p.add_argument("--runs", default="runs")
    a = p.parse_args()
    name = Path(a.config).stem
    out_root = Path(a.runs) / "earlystop" / f"min{a.min_epochs}"
    commit = git_commit()
    command = "python benchmarks/bench_earlystop.py " + " ".join(sys.argv[1:])
    record: dict = {"command": command, "commit": commit, "min_epochs": a.min_epochs}
    lines = [
        f"# Early stopping held off to epoch {a.min_epochs} over `{name}`'s runs",
        "",
        f"Command: `{command}` (commit {commit}). Each run's own command, commit and seeds head "
        "its section; a re-trained retriever keeps its run's seed.",
        "",
        "The rule: early stopping cannot end a retriever before that epoch "
        "(`LoopConfig.min_epochs`). It changes no retriever that patience ended later, so the "
        "runs under the rule are the runs with only the retrievers it changes re-trained, each "
        "resumed from a copy of its own last checkpoint; the run folders are not touched.",
        "",
    ]
    datasets = {}
    for ds in a.datasets:
        run = Path(a.runs) / name / ds
        res = (
            json.loads((run / "results.json").read_text())
            if (run / "results.json").exists()
            else {}
        )
        if not res.get("complete"):
            # a row with seeds still to train would be compared as if it had them all
            sys.exit(
                f"{run}: the run is not finished (no results.json, or stages left); finish it "
                f"with `python benchmarks/bench_pipeline.py --config {a.config} --datasets {ds}`"
            )
        datasets[ds], ds_lines = one(ds, run, out_root, a.min_epochs)
        lines += ds_lines
    record["seeds"] = sorted({s for d in datasets.values() for s in d["run"]["seeds"] or []})
    record["datasets"] = datasets
    write_json(RESULTS / "earlystop.json", record)
    write_text(RESULTS / "earlystop.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
