"""The main job: data set -> features -> every chosen tokenizer -> generative retrieval and
ranking on each -> one report.

Each stage runs in its own folder under ``RUN/stages/`` and leaves a record
(``stage.json``: its key, status, seconds). The key hashes the stage's config and its
inputs' keys, so a re-run skips every stage whose key is unchanged, and a stage interrupted
mid-way resumes from its own checkpoint (tokenizers, retrieval and ranking all checkpoint).
Config priority: dataclass defaults < ``--budget`` preset < ``--config`` YAML < ``--set``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmsid.config import dotted, load_yaml, merge
from mmsid.errors import ConfigError
from mmsid.io import stable_hash, write_json, write_text
from mmsid.retrieval.tiger import TIGERConfig

METHODS = ("rq-kmeans", "rq-vae", "psrq", "mmq", "mmq+ft")
TASKS = ("retrieval", "ranking")
SLICES = ("all", "head", "long_tail", "cold")
DONE = ("ran", "cached", "done")  # stage statuses whose outputs are final


@dataclass
class TokenizerSection:
    levels: int = 3
    codebook_size: int = 256
    epochs: int = 200  # rq-vae and mmq stage 1
    alpha: float = 0.25  # psrq: 1 = the paper; 0.25 keeps deep levels discriminative
    finetune_epochs: int = 20  # mmq+ft stage 2
    lambda_orth: float = 0.1
    center: bool = False  # center each modality before tokenizing (TokenizeConfig.center)
    # the modalities every tokenizer reads; empty = the data set's defaults
    # (tokenize.DEFAULT_MODALITIES, else all of them), e.g. [title, categories] on amazon-beauty
    modalities: list[str] = field(default_factory=list)
    collision_cap: int = 1_000_000  # retrieval sizes the collision vocabulary from the data


@dataclass
class RetrievalSection:
    epochs: int = 30
    epoch_samples: int = 0
    patience: int = 5
    valid_sample: int = 5000
    lr: float = 1e-3
    batch_size: int = 256
    beam: int = 20
    max_history: int = 20
    max_minutes: float = 0.0
    tiger: TIGERConfig = field(default_factory=TIGERConfig)
    sasrec: bool = True  # the item-id baseline
    sasrec_epochs: int = 200


@dataclass
class RankingSection:
    epochs: int = 1
    neg_ratio: int = 1
    label: str = "sampled"
    din: bool = True  # the item-id baseline
    mcca: bool = True  # MCCA over PSRQ's joint + per-modality sets (when psrq is a method)


@dataclass
class PipelineConfig:
    dataset: str
    out: str = "runs/run"
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    budget: str = "quick"
    seed: int = 0
    device: str = "auto"
    data_dir: str | None = None
    tokenizer: TokenizerSection = field(default_factory=TokenizerSection)
    retrieval: RetrievalSection = field(default_factory=RetrievalSection)
    ranking: RankingSection = field(default_factory=RankingSection)


# what each budget changes from the dataclass defaults (the defaults are "full")
BUDGETS: dict[str, dict[str, Any]] = {
    "quick": {
        "tokenizer": {"epochs": 30, "finetune_epochs": 3},
        "retrieval": {
            "epochs": 3,
            "epoch_samples": 4000,
            "patience": 0,
            "valid_sample": 500,
            "lr": 2e-3,
            "tiger": {
                "d_model": 64,
                "n_heads": 4,
                "d_head": 16,
                "d_ff": 256,
                "enc_layers": 2,
                "dec_layers": 2,
            },
            "sasrec_epochs": 10,
        },
    },
    "full": {},
}


def resolve_config(
    dataset: str,
    out: str,
    *,
    config_file: str | None = None,
    cli: dict[str, Any] | None = None,
    sets: list[str] | tuple[str, ...] = (),
) -> PipelineConfig:
    """Defaults < budget preset < YAML file < command line (``cli`` named options, then
    ``sets`` as dotted KEY=VALUE)."""
    file = load_yaml(config_file) if config_file else {}
    cli = {k: v for k, v in (cli or {}).items() if v not in (None, ())}
    over = dotted(sets)
    budget = over.get("budget") or cli.get("budget") or file.get("budget") or "quick"
    if budget not in BUDGETS:
        raise ConfigError(f"unknown budget '{budget}'; choose one of {tuple(BUDGETS)}")
    cfg = PipelineConfig(dataset=dataset, out=out)
    cfg = merge(cfg, {**BUDGETS[budget], "budget": budget}, "budget preset")
    cfg = merge(cfg, file, str(config_file))
    cfg = merge(cfg, cli, "command line")
    cfg = merge(cfg, over, "--set")
    bad = [m for m in cfg.methods if m not in METHODS]
    if bad:
        raise ConfigError(f"unknown method(s) {bad}; choose from {METHODS}")
    bad = [t for t in cfg.tasks if t not in TASKS]
    if bad:
        raise ConfigError(f"unknown task(s) {bad}; choose from {TASKS}")
    return cfg


# ---- stages -------------------------------------------------------------------------------


@dataclass
class Stage:
    name: str  # also its folder under RUN/stages/
    config: dict  # what the stage depends on (hashed with its inputs' keys)
    run: Any  # callable(folder: Path) -> None
    inputs: tuple[str, ...] = ()

    def key(self, keys: dict[str, str], *, legacy: bool = False) -> str:
        """Hash of the stage's config and its inputs' keys. The device is left out: a stage
        finished on one device is reused on another (a CPU run can be continued on a GPU).
        ``legacy``: the key as first defined, with the device in it, still accepted so that
        the records of runs made before this change stay valid."""
        config = self.config if legacy else {k: v for k, v in self.config.items() if k != "device"}
        return stable_hash({"config": config, "inputs": [keys[i] for i in self.inputs]})


def plan(cfg: PipelineConfig) -> list[Stage]:
    """The stages of a run, inputs before consumers, cheapest first: features, tokenizers,
    ranking (minutes), then retrieval (SASRec, then TIGER on each SID type: hours at the full
    budget on a CPU), so an interrupted long run already has most of its report."""
    from mmsid.ranking.run import RankConfig, run_rank
    from mmsid.retrieval.run import RetrieveConfig, run_retrieve
    from mmsid.tokenize import DEFAULT_MODALITIES, TokenizeConfig, run_tokenize

    common = {"seed": cfg.seed, "device": cfg.device, "data_dir": cfg.data_dir}
    tk = cfg.tokenizer
    stages: list[Stage] = []

    def features(folder: Path) -> None:
        from mmsid.data import load_dataset
        from mmsid.features import build_features

        ds = load_dataset(cfg.dataset, cfg.data_dir)
        names = tk.modalities or DEFAULT_MODALITIES.get(cfg.dataset, list(ds.modalities))
        f = build_features(ds, modalities=names, progress=False)
        write_json(
            folder / "metrics.json",
            {
                "modalities": {n: list(f.embeddings[n].shape) for n in names},
                "coverage": {n: float(f.masks[n].mean()) for n in names},
                "encoders": f.encoders,
                "cached": f.cached,
            },
        )

    # settings added after the first runs join a stage's key only when set, so those runs'
    # caches stay valid
    chosen = {"modalities": list(tk.modalities)} if tk.modalities else {}
    stages.append(Stage("features", {"dataset": cfg.dataset, **chosen}, features))
    sid_paths: dict[str, Path] = {}  # method -> sids.parquet
    tok_stage: dict[str, str] = {}  # method -> tokenize stage name
    methods = list(cfg.methods)
    for m in methods:
        if m == "mmq" and "mmq+ft" in methods:
            continue  # the mmq+ft run writes the stage-1 IDs too
        method = "mmq" if m.startswith("mmq") else m
        tcfg = dict(
            dataset=cfg.dataset,
            method=method,
            levels=tk.levels,
            codebook_size=tk.codebook_size,
            epochs=tk.epochs,
            alpha=tk.alpha,
            collision_cap=tk.collision_cap,
            per_modality=(m == "psrq"),
            finetune="behavior" if m == "mmq+ft" else None,
            finetune_epochs=tk.finetune_epochs,
            lambda_orth=tk.lambda_orth,
            **({"center": True} if tk.center else {}),
            **chosen,
            **common,
        )
        name = f"tokenize-{m}"

        def run_tok(folder: Path, tcfg=tcfg) -> None:
            run_tokenize(TokenizeConfig(out=str(folder), **tcfg), progress=False)

        stages.append(Stage(name, tcfg, run_tok, ("features",)))
        tok_stage[m] = name
    for m in methods:
        if m == "mmq" and "mmq+ft" in methods:
            tok_stage["mmq"] = tok_stage["mmq+ft"]
    runs = Path(cfg.out) / "stages"
    for m in methods:
        fname = "sids_stage1.parquet" if (m == "mmq" and "mmq+ft" in methods) else "sids.parquet"
        sid_paths[m] = runs / tok_stage[m] / fname

    rk = cfg.ranking
    if "ranking" in cfg.tasks:
        kcommon = dict(
            dataset=cfg.dataset, epochs=rk.epochs, neg_ratio=rk.neg_ratio, label=rk.label, **common
        )
        entries2 = [
            (f"ranking-din-sid-{m}", "din-sid", {"joint": str(sid_paths[m])}, (tok_stage[m],))
            for m in methods
        ]
        if rk.din:
            entries2.append(("ranking-din", "din", {}, ("features",)))
        if rk.mcca and "psrq" in methods:
            sets = {"psrq": str(runs / tok_stage["psrq"] / "sid_sets.parquet")}
            entries2.append(("ranking-mcca-psrq", "mcca", sets, (tok_stage["psrq"],)))
        for name, model, sids, inputs in entries2:
            kc = dict(kcommon, model=model, sids=sids)

            def run_rk(folder: Path, kc=kc) -> None:
                run_rank(RankConfig(out=str(folder), **kc), progress=False)

            stages.append(Stage(name, kc, run_rk, inputs))

    rt = cfg.retrieval
    rcommon = dict(
        dataset=cfg.dataset,
        epochs=rt.epochs,
        epoch_samples=rt.epoch_samples,
        patience=rt.patience,
        valid_sample=rt.valid_sample,
        lr=rt.lr,
        batch_size=rt.batch_size,
        beam=rt.beam,
        max_history=rt.max_history,
        max_minutes=rt.max_minutes,
        **common,
    )
    if "retrieval" in cfg.tasks:
        entries = [("retrieval-sasrec", None)] if rt.sasrec else []
        entries += [(f"retrieval-tiger-{m}", m) for m in methods]
        for name, m in entries:
            if m is None:
                rc = dict(rcommon, model="sasrec", epochs=rt.sasrec_epochs)
                inputs: tuple[str, ...] = ("features",)
            else:
                rc = dict(
                    rcommon,
                    model="tiger",
                    sids=str(sid_paths[m]),
                    tiger=dataclasses.asdict(rt.tiger),
                )
                inputs = (tok_stage[m],)

            def run_ret(folder: Path, rc=rc) -> None:
                kw = dict(rc)
                if "tiger" in kw:
                    kw["tiger"] = TIGERConfig(**kw["tiger"])
                run_retrieve(RetrieveConfig(out=str(folder), **kw), progress=False)

            stages.append(Stage(name, rc, run_ret, inputs))
    return stages


def stage_keys(stages: list[Stage], *, legacy: bool = False) -> dict[str, str]:
    """Every stage's key (its config hashed with its inputs' keys), inputs first."""
    keys: dict[str, str] = {}
    for st in stages:
        keys[st.name] = st.key(keys, legacy=legacy)
    return keys


def _is_done(rec: dict, name: str, keys: dict[str, str], legacy: dict[str, str]) -> bool:
    return rec.get("status") == "done" and rec.get("key") in (keys[name], legacy[name])


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
    it goes (``mmsid report RUN`` refreshes them from another shell)."""
    import yaml
    from tqdm.auto import tqdm

    out = Path(cfg.out)
    resolved = dataclasses.asdict(cfg)
    run_hash = _run_hash(cfg)
    command = command or "mmsid.run(config)"
    marker = out / "run.json"
    if marker.exists():
        prev = json.loads(marker.read_text()).get("config_hash")
        if prev != run_hash and overwrite:
            shutil.rmtree(out)
        elif prev != run_hash and not resume:
            raise ConfigError(
                f"{out} holds another run (config {prev}, this one {run_hash}); pass --resume "
                "to reuse its matching stages, --overwrite to start clean, or pick another --out"
            )
    elif out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(
            f"{out} exists and is not an mmsid run folder; choose another --out or pass --overwrite"
        )
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    write_json(marker, {"config_hash": run_hash, "command": command})
    stages = plan(cfg)
    keys, legacy = stage_keys(stages), stage_keys(stages, legacy=True)
    records: dict[str, dict] = {}  # this invocation's finished stages
    t0 = time.perf_counter()
    bar = tqdm(stages, desc="mmsid run", unit="stage", disable=not progress)
    for st in bar:
        bar.set_postfix_str(st.name)
        key = keys[st.name]
        folder = out / "stages" / st.name
        rec_path = folder / "stage.json"
        rec = _load(rec_path)
        if _is_done(rec, st.name, keys, legacy):
            if rec["key"] != key:  # a legacy record: rewrite it under the current key
                write_json(rec_path, {**rec, "key": key})
            records[st.name] = {
                "stage": st.name,
                "key": key,
                "status": "cached",
                "seconds": rec.get("seconds", 0.0),
            }
            continue
        folder.mkdir(parents=True, exist_ok=True)
        write_json(rec_path, {"key": key, "status": "running"})
        t = time.perf_counter()
        st.run(folder)
        sec = time.perf_counter() - t
        write_json(rec_path, {"key": key, "status": "done", "seconds": sec})
        records[st.name] = {"stage": st.name, "key": key, "status": "ran", "seconds": sec}
        if len(records) < len(stages):  # the report so far (the last one is written below)
            snapshot(cfg, out, stages, records, command, time.perf_counter() - t0)
    results = snapshot(cfg, out, stages, records, command, time.perf_counter() - t0)
    plots(out, results)
    return results


# settings added after run folders existed: they join the run's hash only when set away from
# their default, so those folders still count as the same run (as with the stage keys)
ADDED_LATER = (("tokenizer", "modalities", []),)


def _run_hash(cfg: PipelineConfig) -> str:
    resolved = dataclasses.asdict(cfg)
    for section, key, default in ADDED_LATER:
        if resolved[section][key] == default:
            del resolved[section][key]
    return stable_hash({k: v for k, v in resolved.items() if k not in ("out", "device")})


def snapshot(
    cfg: PipelineConfig,
    out: Path,
    stages: list[Stage],
    records: dict[str, dict],
    command: str,
    seconds: float | None,
) -> dict:
    """Collect what the run folder holds now and write ``results.json`` and ``report.md``.
    Stages this invocation did not reach are read from their records on disk: ``done``,
    ``started`` (running elsewhere, or interrupted: re-running continues it) or ``pending``;
    a started training stage shows its last epoch from ``checkpoints/progress.json``."""
    keys, legacy = stage_keys(stages), stage_keys(stages, legacy=True)
    rows = []
    for st in stages:
        if st.name in records:
            rows.append(records[st.name])
            continue
        folder = out / "stages" / st.name
        rec = _load(folder / "stage.json")
        row = {"stage": st.name, "key": keys[st.name], "status": "pending", "seconds": 0.0}
        if rec.get("key") in (keys[st.name], legacy[st.name]):
            row["status"] = "done" if rec.get("status") == "done" else "started"
            row["seconds"] = rec.get("seconds", 0.0)
        prog = _load(folder / "checkpoints" / "progress.json")
        if row["status"] == "started" and prog:
            row["progress"] = {k: prog.get(k) for k in ("epoch", "epochs", "select", "best")}
        rows.append(row)
    results = collect(cfg, out, rows)
    results.update(
        seconds=seconds,
        config_hash=_run_hash(cfg),
        command=command,
        complete=all(r["status"] in DONE for r in rows),
    )
    write_json(out / "results.json", results)
    write_text(out / "report.md", report(results))
    return results


def refresh(run_dir: str | Path) -> dict:
    """Rewrite a run folder's ``results.json``, ``report.md`` and plots from what its stages
    have written so far, running nothing (safe while the run goes on in another process)."""
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
    if info.get("config_hash") != _run_hash(cfg):
        raise ConfigError(
            f"{cfg_path} does not match {marker} (config {info.get('config_hash')}); "
            "it was edited by hand or made by another mmsid version: re-run `mmsid run` on it "
            "with --resume"
        )
    stages = plan(cfg)
    results = snapshot(
        cfg,
        run_dir,
        stages,
        {},
        info.get("command", "not recorded (the run predates the record)"),
        None,
    )
    plots(run_dir, results)
    return results


# ---- results and report -------------------------------------------------------------------


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def collect(cfg: PipelineConfig, out: Path, records: list[dict]) -> dict:
    st = out / "stages"
    res: dict[str, Any] = {
        "dataset": cfg.dataset,
        "seed": cfg.seed,
        "budget": cfg.budget,
        "methods": cfg.methods,
        "tasks": cfg.tasks,
        "stages": records,
        "codebook": {},
        "retrieval": {},
        "ranking": {},
    }
    done = {r["stage"] for r in records if r["status"] in DONE}
    for m in cfg.methods:
        tok = "tokenize-mmq+ft" if (m == "mmq" and "mmq+ft" in cfg.methods) else f"tokenize-{m}"
        if tok not in done:
            continue
        tm = _load(st / tok / "metrics.json")
        if m == "mmq" and "mmq+ft" in cfg.methods:
            res["codebook"][m] = {
                "note": "stage-1 IDs of the mmq+ft run",
                "orthogonality": tm.get("stage1", {}).get("orthogonality_abs_cos"),
            }
        else:
            res["codebook"][m] = {
                k: tm.get(k)
                for k in (
                    "utilization",
                    "perplexity",
                    "collision_rate",
                    "unique_after_collision_level",
                    "items",
                )
            }
            res["codebook"][m]["coherence_by_level"] = (tm.get("coherence") or {}).get("prefix")
            res["codebook"][m]["coherence_random"] = (tm.get("coherence") or {}).get("random")
            res["codebook"][m]["fit_seconds"] = (tm.get("seconds") or {}).get("fit")
            if "stage2" in tm:
                res["codebook"][m]["sid_changed_share"] = tm["stage2"]["sid_changed_share"]
    for rec in records:
        name = rec["stage"]
        if name not in done:
            continue
        m = _load(st / name / "metrics.json")
        if name.startswith("retrieval-"):
            label = (
                "sasrec (item ids)"
                if name == "retrieval-sasrec"
                else f"tiger + {name.removeprefix('retrieval-tiger-')}"
            )
            res["retrieval"][label] = {
                "test": m.get("test"),
                "valid": m.get("valid"),
                # training + validation + test, over every invocation of a resumed stage
                "seconds": m.get("train_seconds", 0.0) + m.get("eval_seconds", 0.0),
                "epochs": m.get("epochs_run"),
            }
        elif name.startswith("ranking-"):
            label = {"ranking-din": "din (item ids)", "ranking-mcca-psrq": "mcca + psrq"}.get(
                name, f"din + {name.removeprefix('ranking-din-sid-')} SID"
            )
            res["ranking"][label] = {
                "test": m.get("test"),
                "valid": m.get("valid"),
                "seconds": rec["seconds"],
            }
    return res


def fmt(v) -> str:
    return "–" if v is None or (isinstance(v, float) and v != v) else f"{v:.4f}"


def progress_note(stage: dict) -> str:
    """'epoch 7/30, best valid recall@10 0.0577' for a started training stage, else ''."""
    p = stage.get("progress")
    return (
        f"epoch {p['epoch']}/{p['epochs']}, best valid {p['select']} {fmt(p['best'])}" if p else ""
    )


def report(res: dict) -> str:
    lines = [
        f"# mmsid run: {res['dataset']} ({res['budget']} budget, seed {res['seed']})",
        "",
        f"Command: `{res['command']}`  ",
        f"Config hash: `{res['config_hash']}`; stage time "
        f"{sum(r['seconds'] for r in res['stages']) / 60:.1f} min"
        + (f" (this invocation {res['seconds'] / 60:.1f} min)" if res["seconds"] else "")
        + "; stages "
        + ", ".join(
            f"{n} {sum(r['status'] == n for r in res['stages'])}"
            for n in ("ran", "cached", "done", "started", "pending")
            if any(r["status"] == n for r in res["stages"])
        )
        + ".",
        "",
    ]
    if not res.get("complete", True):
        n_done = sum(r["status"] in DONE for r in res["stages"])
        lines += [
            f"**In progress: {n_done} of {len(res['stages'])} stages done.** The tables below "
            "hold the finished stages; re-running the command continues the rest (Stages).",
            "",
        ]
    if res["retrieval"]:
        lines += ["## Generative retrieval (test, leave-one-out)", ""]
        for k in (10, 5, 20):
            lines += [
                f"Recall@{k} / NDCG@{k} by slice:",
                "",
                "| model | " + " | ".join(SLICES) + " | train + eval s |",
                "|---|" + "---|" * (len(SLICES) + 1),
            ]
            for name, r in res["retrieval"].items():
                t = r["test"] or {}
                cells = [
                    f"{fmt(t.get(s, {}).get(f'recall@{k}'))} / {fmt(t.get(s, {}).get(f'ndcg@{k}'))}"
                    for s in SLICES
                ]
                lines.append(f"| {name} | " + " | ".join(cells) + f" | {r['seconds']:.0f} |")
            lines.append("")
    if res["ranking"]:
        lines += [
            "## Ranking (CTR, test)",
            "",
            "AUC / GAUC / LogLoss on all items; AUC by slice:",
            "",
            "| model | AUC | GAUC | LogLoss | head AUC | long-tail AUC | cold AUC | s |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, r in res["ranking"].items():
            t = r["test"] or {}
            a = t.get("all", {})
            lines.append(
                f"| {name} | {fmt(a.get('auc'))} | {fmt(a.get('gauc'))} | {fmt(a.get('logloss'))} | "
                f"{fmt(t.get('head', {}).get('auc'))} | {fmt(t.get('long_tail', {}).get('auc'))} | "
                f"{fmt(t.get('cold', {}).get('auc'))} | {r['seconds']:.0f} |"
            )
        lines.append("")
    lines += [
        "## Codebooks",
        "",
        "| method | utilization by level | collision rate | unique SIDs "
        "| coherence by level (random) | fit s |",
        "|---|---|---|---|---|---|",
    ]
    for m, c in res["codebook"].items():
        if "note" in c:
            lines.append(f"| {m} | {c['note']} | | | | |")
            continue
        util = ", ".join(f"{u:.2f}" for u in c.get("utilization") or [])
        # a level where no two items share a prefix has no coherence (None)
        coh = ", ".join("–" if u is None else f"{u:.3f}" for u in c.get("coherence_by_level") or [])
        lines.append(
            f"| {m} | {util} | {fmt(c.get('collision_rate'))} | "
            f"{c.get('unique_after_collision_level')}/{c.get('items')} | {coh} "
            f"({fmt(c.get('coherence_random'))}) | {c.get('fit_seconds') or 0:.0f} |"
        )
    lines += [
        "",
        "## Stages",
        "",
        "| stage | status | seconds (last invocation) | progress |",
        "|---|---|---|---|",
    ]
    for r in res["stages"]:
        note = progress_note(r)
        lines.append(f"| {r['stage']} | {r['status']} | {r['seconds']:.1f} | {note} |")
    lines += [
        "",
        "Plots: `metrics_by_method.png`, `coherence_by_level.png`; per stage: "
        "`stages/*/code_usage.png`, `loss_curve.png`, `curves.png`.",
        "",
    ]
    return "\n".join(lines)


def plots(out: Path, res: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from mmsid.io import save_png

    panels = [(t, key) for t, key in (("retrieval", "recall@10"), ("ranking", "auc")) if res[t]]
    if panels:
        fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 3.5), squeeze=False)
        for ax, (task, key) in zip(axes[0], panels):
            names = list(res[task])
            w = 0.8 / len(SLICES)
            for i, s in enumerate(SLICES):
                vals = [((res[task][n]["test"] or {}).get(s) or {}).get(key, np.nan) for n in names]
                ax.bar(np.arange(len(names)) + i * w, vals, w, label=s)
            ax.set_xticks(
                np.arange(len(names)) + 0.4 - w / 2, names, rotation=30, ha="right", fontsize=7
            )
            ax.set_title(f"{task}: test {key}")
            ax.legend(fontsize=7)
        fig.tight_layout()
        save_png(fig, out / "metrics_by_method.png")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for m, c in res["codebook"].items():
        if c.get("coherence_by_level"):
            ax.plot(
                range(1, len(c["coherence_by_level"]) + 1),
                [np.nan if u is None else u for u in c["coherence_by_level"]],
                marker="o",
                label=m,
            )
    ax.set_xlabel("SID prefix length")
    ax.set_ylabel("coherence (mean cos)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, out / "coherence_by_level.png")


def command_line() -> str:
    return "mmsid " + " ".join(sys.argv[1:])
