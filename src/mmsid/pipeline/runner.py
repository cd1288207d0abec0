"""Running a plan: the folder guard (mmsid.pipeline.folder), cached and resumed stages, a report
after every stage.

Each stage leaves a record: ``stage.json`` (its key, status, seconds) and ``files.json`` (the
SHA-256 of every file it wrote, mmsid.artefacts). A stage whose record is ``done`` under the
current key, whose files still match and whose inputs are reused too, is skipped; one
interrupted mid-way resumes from its own checkpoint (tokenizers, retrieval and ranking all
checkpoint).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

from mmsid import artefacts
from mmsid.artefacts import RECORD
from mmsid.config import load_yaml, merge
from mmsid.errors import ConfigError
from mmsid.io import clean_temp, write_json, write_text
from mmsid.pipeline.config import PipelineConfig, run_hash
from mmsid.pipeline.folder import check_before_writing, check_lock, clear_run, locked, marker_info
from mmsid.pipeline.plan import Stage, plan, stage_keys
from mmsid.pipeline.plots import PLOT_FILES

DONE = ("ran", "cached", "done")  # stage statuses whose outputs are final


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def run(
    cfg: PipelineConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    command: str | None = None,
) -> dict:
    """Run (or continue) the pipeline; returns the results object also written to
    ``results.json``. A folder holding a run with a different config is refused unless
    ``resume`` (keep what matches) or ``overwrite`` (start clean). ``results.json`` and
    ``report.md`` are rewritten after every stage that runs, so a long run can be read while
    it goes (``mmsid report RUN`` refreshes them from another shell). Under torchrun rank 0
    does all of that and the other ranks run the same stages beside it (mmsid.distributed)."""
    from mmsid import distributed

    distributed.init(cfg.device)  # under torchrun the training stages are data-parallel
    if not distributed.context().main:
        return _follow(cfg, progress)
    sent: list = []  # whether the other ranks have been told which stages to run
    try:
        return _run(cfg, resume, overwrite, progress, command, sent)
    except BaseException:
        if not sent:  # a refused folder: the other ranks stop waiting for the plan
            distributed.broadcast(None)
        raise


def _follow(cfg: PipelineConfig, progress: bool) -> dict:
    """A rank other than 0 under torchrun: run the stages rank 0 decides to run, in its order
    (every stage is run by every rank; only rank 0 writes, checks the folder and reports)."""
    from mmsid import distributed

    todo = distributed.broadcast(None)
    if todo is None:
        raise ConfigError("rank 0 stopped before running any stage; see its error")
    stages = {st.name: st for st in plan(cfg)}
    for name in todo:
        st = stages[name]
        st.run(Path(cfg.out) / "stages" / name, progress=False)
    return {}


def _run(cfg, resume, overwrite, progress, command, sent: list) -> dict:
    import yaml
    from tqdm.auto import tqdm

    from mmsid import distributed

    out = Path(cfg.out)
    h = run_hash(cfg)
    command = command or "mmsid.run(config)"
    marker = out / "run.json"
    check_before_writing(cfg, out)
    check_lock(out)  # before --overwrite can touch a folder another run is working in
    if marker.exists():
        prev = marker_info(marker).get("config_hash")
        if prev != h and overwrite:
            clear_run(out)
        elif prev != h and not resume:
            raise ConfigError(
                f"{out} holds another run (config {prev}, this one {h}); pass --resume "
                "to reuse its matching stages, --overwrite to start clean, or pick another --out"
            )
    elif out.exists() and any(out.iterdir()):
        raise ConfigError(
            f"{out} exists, is not empty and is not an mmsid run folder; choose another --out "
            "(--overwrite only ever deletes what an mmsid run wrote)"
        )
    out.mkdir(parents=True, exist_ok=True)
    with locked(out):
        clean_temp(out)  # temporary files of a run that was killed mid-write
        write_text(out / "config.yaml", yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
        write_json(marker, {"config_hash": h, "command": command, "commit": git_commit()})
        stages = plan(cfg)
        keys = stage_keys(stages)
        records: dict[str, dict] = {}  # this invocation's finished stages
        prior = {st.name: _load(out / "stages" / st.name / "stage.json") for st in stages}
        done = _reusable(out, stages, prior, keys)
        # torchrun: the other ranks run the same stages (each trains data-parallel)
        distributed.broadcast([st.name for st in stages if st.name not in done])
        sent.append(True)
        t0 = time.perf_counter()
        # the bar's own ETA counts stages, which differ in cost by 1000x; the postfix gives
        # one from the measured time of each kind of stage (see remaining_seconds)
        bar = tqdm(
            stages,
            desc="mmsid run",
            unit="stage",
            disable=not progress,
            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} stages [{elapsed}{postfix}]",
        )
        for i, st in enumerate(bar):
            timed = {**{n: r.get("seconds") for n, r in prior.items()}, **_seconds(records)}
            todo = [s for s in stages[i:] if s.name not in done]
            bar.set_postfix_str(f"{st.name}; {eta_text(*remaining_seconds(todo, timed))}")
            key = keys[st.name]
            folder = out / "stages" / st.name
            rec_path = folder / "stage.json"
            if st.name in done:
                records[st.name] = {
                    "stage": st.name,
                    "key": key,
                    "status": "cached",
                    "seconds": prior[st.name].get("seconds", 0.0),
                }
                continue
            folder.mkdir(parents=True, exist_ok=True)
            artefacts.reopen(folder)  # files damaged since a finished run are not resumed from
            write_json(rec_path, {"key": key, "status": "running"})
            t = time.perf_counter()
            st.run(folder, progress=progress)  # the stage's own bars, below the run's
            sec = time.perf_counter() - t
            if artefacts.record(folder) is None:  # stages that are not `mmsid <stage>` runs
                artefacts.seal(folder)
            write_json(rec_path, {"key": key, "status": "done", "seconds": sec, "files": RECORD})
            records[st.name] = {"stage": st.name, "key": key, "status": "ran", "seconds": sec}
            if len(records) < len(stages):  # the report so far (the last one is written below)
                snapshot(cfg, out, stages, records, command, time.perf_counter() - t0, final=False)
        return snapshot(cfg, out, stages, records, command, time.perf_counter() - t0, final=True)


def _seconds(records: dict[str, dict]) -> dict[str, float]:
    return {n: r["seconds"] for n, r in records.items() if r["status"] == "ran"}


def remaining_seconds(todo: list[Stage], timed: dict[str, float | None]) -> tuple[float, int]:
    """Estimated seconds for the stages ``todo``: each costs what the stages of its kind (its
    name without the seed folder: ``tokenize-rq-vae`` of every seed) took on average, from
    ``timed`` (stage name -> seconds; this run's and the folder's earlier records). Returns
    (seconds of the stages that have a measured kind, number of stages that have none)."""
    by_kind: dict[str, list[float]] = {}
    for name, sec in timed.items():
        if sec:
            by_kind.setdefault(name.split("/")[-1], []).append(float(sec))
    total, untimed = 0.0, 0
    for st in todo:
        seen = by_kind.get(st.name.split("/")[-1])
        if seen:
            total += sum(seen) / len(seen)
        else:
            untimed += 1
    return total, untimed


def eta_text(seconds: float, untimed: int) -> str:
    """ "left ~12 min" / "left ~12 min + 3 stages not yet timed"."""
    text = f"left ~{seconds / 60:.0f} min" if seconds >= 60 else f"left ~{seconds:.0f} s"
    rest = f"{untimed} stage{'s' * (untimed > 1)} not yet timed"
    if not untimed:
        return text
    return f"{text} + {rest}" if seconds else rest


def _reusable(out: Path, stages: list[Stage], prior: dict, keys: dict) -> set[str]:
    """Stages finished under their current key whose files still match their SHA-256 record
    (mmsid.artefacts), and whose inputs are reusable too: a stage whose file was damaged runs
    again, and so does every stage that read it."""
    done: set[str] = set()
    for st in stages:  # inputs come before their consumers
        rec = prior[st.name]
        if rec.get("status") != "done" or rec.get("key") != keys[st.name]:
            continue
        if any(i not in done for i in st.inputs):
            print(f"mmsid: {st.name}: an input stage runs again; so does this one", file=sys.stderr)
            continue
        problems = artefacts.check(out / "stages" / st.name)
        if problems is None:
            problems = [f"{RECORD}: missing or unreadable, so its files cannot be checked"]
        if problems:
            for line in problems:
                print(f"mmsid: {st.name}/{line}; the stage runs again", file=sys.stderr)
            continue
        done.add(st.name)
    return done


def snapshot(
    cfg: PipelineConfig,
    out: Path,
    stages: list[Stage],
    records: dict[str, dict],
    command: str,
    seconds: float | None,
    *,
    final: bool = True,
    paired: bool | None = None,
) -> dict:
    """Collect what the run folder holds now and write ``results.json``, ``report.md`` and
    (``final``) the plots. Stages this invocation did not reach are read from their records on
    disk: ``done``, ``started`` (running elsewhere, or interrupted: re-running continues it) or
    ``pending``; a started training stage shows its last epoch from
    ``checkpoints/progress.json``. Paired comparisons (``paired``) are computed once every
    stage is done, or when asked (``mmsid report``: over the stages finished so far)."""
    from mmsid.pipeline.plots import plots
    from mmsid.pipeline.report import collect, report

    keys = stage_keys(stages)
    rows = []
    for st in stages:
        if st.name in records:
            rows.append(records[st.name])
            continue
        folder = out / "stages" / st.name
        rec = _load(folder / "stage.json")
        row = {"stage": st.name, "key": keys[st.name], "status": "pending", "seconds": 0.0}
        if rec.get("key") == keys[st.name]:
            row["status"] = "done" if rec.get("status") == "done" else "started"
            row["seconds"] = rec.get("seconds", 0.0)
        prog = _load(folder / "checkpoints" / "progress.json")
        if row["status"] == "started" and prog:
            row["progress"] = {k: prog.get(k) for k in ("epoch", "epochs", "select", "best")}
        rows.append(row)
    complete = all(r["status"] in DONE for r in rows)
    results = collect(cfg, out, stages, rows, paired=complete if paired is None else paired)
    marker = _load(out / "run.json")
    results.update(
        seconds=seconds,
        config_hash=run_hash(cfg),
        command=command,
        commit=marker.get("commit"),
        complete=complete,
    )
    write_json(out / "results.json", results)
    if final:
        plots(out, results)
    drawn = [f for f in PLOT_FILES if (out / f).exists()]
    write_text(out / "report.md", report(results, drawn))
    return results


def refresh(run_dir: str | Path) -> dict:
    """Rewrite a run folder's ``results.json``, ``report.md`` and plots from what its stages
    have written so far, with paired comparisons over the finished stages, running nothing
    (safe while the run goes on in another process)."""
    run_dir = Path(run_dir)
    cfg_path, marker = run_dir / "config.yaml", run_dir / "run.json"
    if not (cfg_path.exists() and marker.exists()):
        raise ConfigError(
            f"{run_dir} is not an mmsid run folder (no config.yaml / run.json); "
            "give the --out folder of an `mmsid run`"
        )
    resolved = load_yaml(cfg_path)
    cfg = merge(
        PipelineConfig(dataset=resolved.pop("dataset"), out=str(run_dir)),
        {k: v for k, v in resolved.items() if k != "out"},
        str(cfg_path),
    )
    info = json.loads(marker.read_text())
    if info.get("config_hash") != run_hash(cfg):
        raise ConfigError(
            f"{cfg_path} does not match {marker} (config {info.get('config_hash')}, the file "
            f"gives {run_hash(cfg)}). Likely causes: config.yaml was edited by hand, or the run "
            "was made by another mmsid version whose settings differ. Fix: restore config.yaml, "
            "or re-run `mmsid run` with the same options and --resume"
        )
    stages = plan(cfg)
    return snapshot(
        cfg, run_dir, stages, {}, info.get("command", "not recorded"), None, paired=True
    )


def git_commit() -> str | None:
    """The checkout's commit, '+dirty' when it has uncommitted changes; None outside git."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha + ("+dirty" if dirty else "")


def command_line() -> str:
    return "mmsid " + " ".join(sys.argv[1:])
