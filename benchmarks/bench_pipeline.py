"""The main job's tables: `mmsid run` on each data set with one committed config, each report
copied under benchmarks/results/, and one cross-data-set summary.

    python benchmarks/bench_pipeline.py --config benchmarks/configs/tables.yaml \
        --datasets ml100k-mm lfm2k-mm amazon-beauty
    python benchmarks/bench_pipeline.py --config benchmarks/configs/tables.yaml --report-only

Each data set runs in ``RUNS/<name>/<dataset>`` (``name`` = the config file's stem), exactly as
``mmsid run --dataset D --config CONFIG --out RUNS/<name>/D`` (start those in the background,
one at a time on a small machine, and use ``--report-only`` to collect). Re-running resumes.
Writes ``benchmarks/results/<name>_<dataset>.{md,json}`` (the run's report and results, with
its command, commit and seeds), its plots as ``<name>_<dataset>_<plot>.png``, and
``<name>.{md,json}``: every data set's summary lines and headline cells. A run made from a
checkout with uncommitted changes (its commit ends in ``+dirty``) is refused.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from mmsid.io import write_json, write_text
from mmsid.pipeline import DONE, git_commit, refresh, resolve_config, run
from mmsid.pipeline.plots import PLOT_FILES
from mmsid.pipeline.report import SLICES, TASK, cell, diff_tables, mmq_lines, summary_line

RESULTS = Path(os.environ.get("MMSID_RESULTS_DIR") or Path(__file__).resolve().parent / "results")
DATASETS = ["ml100k-mm", "lfm2k-mm", "amazon-beauty"]


def collect(name: str, datasets: list[str], runs: Path, allow_dirty: bool) -> dict:
    out: dict[str, dict] = {}
    for ds in datasets:
        folder = runs / name / ds
        if not (folder / "run.json").exists():
            print(f"{ds}: no run in {folder} (start it first)", file=sys.stderr)
            continue
        res = refresh(folder)
        if str(res.get("commit")).endswith("+dirty") and not allow_dirty:
            sys.exit(f"{folder} was run from uncommitted code ({res['commit']}): not published")
        out[ds] = res
        stem = f"{name}_{ds}"
        shutil.copyfile(folder / "report.md", RESULTS / f"{stem}.md")
        write_json(RESULTS / f"{stem}.json", res)
        for plot in PLOT_FILES:
            if (folder / plot).exists():
                shutil.copyfile(folder / plot, RESULTS / f"{stem}_{plot}")
    return out


def summary(name: str, res: dict[str, dict], command: str, commit: str | None) -> str:
    lines = [
        f"# `{name}`: the protocol's tables on every data set",
        "",
        f"Command: `{command}`  ",
        f"Commit of this summary: `{commit}`; each run's own command and commit head its "
        f"report (`{name}_<dataset>.md`).",
        "",
        "| data set | seeds | stages done | state | run commit |",
        "|---|---|---|---|---|",
    ]
    for ds, r in res.items():
        n = sum(s["status"] in DONE for s in r["stages"])
        state = "complete" if r["complete"] else "in progress"
        lines.append(
            f"| {ds} | {r['seeds']} | {n} / {len(r['stages'])} | {state} | `{r.get('commit')}` |"
        )
    for task in ("retrieval", "ranking"):
        main = TASK[task][0]
        lines += ["", f"## {task.capitalize()}: test {main}, mean ± 95% CI over seeds", ""]
        for ds, r in res.items():
            if not r[task]:
                continue
            lines += [f"### {ds}", "", summary_line(task, r), ""]
            lines += ["| model | " + " | ".join(SLICES) + " |", "|---|" + "---|" * len(SLICES)]
            for row, v in r[task].items():
                lines.append(
                    f"| {row} | " + " | ".join(cell(v["test"][s][main]) for s in SLICES) + " |"
                )
            lines += diff_tables(task, r)
            lines += mmq_lines(task, r)
            lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="YAML settings of every run")
    ap.add_argument("--datasets", nargs="+", default=DATASETS)
    ap.add_argument("--runs", default="runs", help="run folders go to RUNS/<name>/<dataset>")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--report-only", action="store_true", help="collect, run nothing")
    ap.add_argument("--allow-dirty", action="store_true", help="for development only")
    a = ap.parse_args()
    commit = git_commit()  # before anything is written: the results below dirty the tree
    name = Path(a.config).stem
    runs = Path(a.runs)
    if not a.report_only:
        for ds in a.datasets:
            out = runs / name / ds
            cfg = resolve_config(ds, str(out), config_file=a.config, cli={"device": a.device})
            cmd = f"mmsid run --dataset {ds} --config {a.config} --device {a.device} --out {out}"
            run(cfg, resume=True, command=cmd)
    res = collect(name, a.datasets, runs, a.allow_dirty)
    command = "python benchmarks/bench_pipeline.py " + " ".join(sys.argv[1:])
    seeds = sorted({s for r in res.values() for s in r["seeds"]})
    write_json(
        RESULTS / f"{name}.json",
        {"command": command, "commit": commit, "seeds": seeds, "runs": res},
    )
    write_text(RESULTS / f"{name}.md", summary(name, res, command, commit))
    print(f"wrote {RESULTS}/{name}.md and {name}_<dataset>.*")


if __name__ == "__main__":
    main()
