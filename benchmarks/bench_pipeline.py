"""The main job's benchmark (issue 7): `mmsid run` on each data set at one budget, its
report copied under benchmarks/results/, and one cross-data-set summary.

    python benchmarks/bench_pipeline.py --budget full --datasets ml100k-mm lfm2k-mm amazon-beauty
    python benchmarks/bench_pipeline.py --budget full --report-only   # from the run folders

Each data set runs in ``RUNS/<budget>/<dataset>`` (default ``runs/``), exactly as
``mmsid run --dataset D --budget B --device DEVICE --out RUNS/B/D`` (run it that way in the
background, one per data set, and use ``--report-only`` here to collect). Re-running resumes:
finished stages are cached and a training stage continues from its last epoch. The reports of
runs still going are copied too; they say so at the top ("In progress: k of N stages done").

Writes ``benchmarks/results/run_<dataset>_<budget>.{md,json,png}`` (the run's report.md,
results.json and metrics_by_method.png) and ``pipeline_<budget>.{md,json}``: test Recall@10 of
every retrieval model and test AUC of every ranking model, per data set, all / long-tail.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from mmsid.io import write_json, write_text
from mmsid.pipeline import DONE, fmt, progress_note, refresh, resolve_config, run

RESULTS = Path(__file__).resolve().parent / "results"
DATASETS = ["ml100k-mm", "lfm2k-mm", "amazon-beauty"]


def collect(budget: str, datasets: list[str], runs: Path) -> dict:
    """Refresh each run folder's report and copy it under benchmarks/results/."""
    out: dict[str, dict] = {}
    for ds in datasets:
        folder = runs / budget / ds
        if not (folder / "run.json").exists():
            print(f"{ds}: no run in {folder} (start it first)", file=sys.stderr)
            continue
        res = refresh(folder)
        out[ds] = res
        stem = RESULTS / f"run_{ds}_{budget}"
        shutil.copyfile(folder / "report.md", stem.with_suffix(".md"))
        write_json(stem.with_suffix(".json"), res)
        if (folder / "metrics_by_method.png").exists():
            shutil.copyfile(folder / "metrics_by_method.png", stem.with_suffix(".png"))
    return out


def summary(budget: str, res: dict[str, dict], command: str) -> str:
    datasets = list(res)
    lines = [
        f"# `mmsid run --budget {budget}`: every method on every data set",
        "",
        f"Command: `{command}`. Per data set the full report is `run_<dataset>_{budget}.md`. "
        "Cells: test value on all targets / on long-tail targets (the 80% least popular "
        "items); – = that stage has not finished yet.",
        "",
        "| data set | stages done | state |",
        "|---|---|---|",
    ]
    for ds, r in res.items():
        n = sum(s["status"] in DONE for s in r["stages"])
        state = "complete" if r["complete"] else "in progress"
        lines.append(f"| {ds} | {n} / {len(r['stages'])} | {state} |")
    for task, metric, key in (
        ("retrieval", "Recall@10", "recall@10"),
        ("ranking", "AUC", "auc"),
    ):
        names: list[str] = []
        for r in res.values():
            names += [n for n in r[task] if n not in names]
        lines += [
            "",
            f"## {task.capitalize()}: test {metric} (all / long tail)",
            "",
            "| model | " + " | ".join(datasets) + " |",
            "|---|" + "---|" * len(datasets),
        ]
        for n in names:
            cells = []
            for ds in datasets:
                t = (res[ds][task].get(n) or {}).get("test") or {}
                a, lt = (t.get(s, {}).get(key) for s in ("all", "long_tail"))
                cells.append("–" if a is None else f"{fmt(a)} / {fmt(lt)}")
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
        if task == "retrieval":
            pending = []
            for ds, r in res.items():
                left = [
                    _progress(s)
                    for s in r["stages"]
                    if s["status"] not in DONE and s["stage"].startswith("retrieval")
                ]
                if left:
                    pending.append(f"{ds}: " + ", ".join(left))
            if pending:
                lines += ["", "Retrieval stages still to finish:", ""] + [f"- {p}" for p in pending]
    return "\n".join(lines) + "\n"


def _progress(stage: dict) -> str:
    return (
        f"{stage['stage'].removeprefix('retrieval-')} ({progress_note(stage) or stage['status']})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", choices=["quick", "full"], default="full")
    ap.add_argument("--datasets", nargs="+", default=DATASETS)
    ap.add_argument("--runs", default="runs", help="run folders go to RUNS/<budget>/<dataset>")
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--report-only", action="store_true", help="collect the run folders, run nothing"
    )
    a = ap.parse_args()
    runs = Path(a.runs)
    if not a.report_only:
        for ds in a.datasets:
            out = runs / a.budget / ds
            cfg = resolve_config(ds, str(out), cli={"budget": a.budget, "device": a.device})
            cmd = f"mmsid run --dataset {ds} --budget {a.budget} --device {a.device} --out {out}"
            run(cfg, command=cmd)
    res = collect(a.budget, a.datasets, runs)
    command = "python benchmarks/bench_pipeline.py " + " ".join(sys.argv[1:])
    write_json(RESULTS / f"pipeline_{a.budget}.json", {"command": command, "runs": res})
    write_text(RESULTS / f"pipeline_{a.budget}.md", summary(a.budget, res, command))
    print(f"wrote {RESULTS}/pipeline_{a.budget}.md and run_<dataset>_{a.budget}.*")
    print(f"reproduce: {command}")


if __name__ == "__main__":
    main()
