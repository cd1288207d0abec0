"""The stages of a run. Each stage has a folder under ``RUN/stages/`` and a key: the hash of
its config (which holds the protocol) and its inputs' keys, so a re-run skips every stage whose
key is unchanged. Seed-free stages (features, the popularity and content-kNN baselines) run
once; every other stage runs once per model seed under ``stages/seed<S>/``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmsid.io import stable_hash, write_json
from mmsid.pipeline.config import MMQ_ABLATIONS, MMQ_FAMILY, PipelineConfig, mmq_length
from mmsid.protocol import ProtocolConfig
from mmsid.retrieval.parallel import ParallelSIDConfig
from mmsid.retrieval.tiger import TIGERConfig


@dataclass
class Stage:
    name: str  # also its folder under RUN/stages/
    config: dict  # what the stage depends on (hashed with its inputs' keys)
    run: Any  # callable(folder: Path, progress: bool) -> None: progress bars inside the stage
    inputs: tuple[str, ...] = ()
    task: str | None = None  # "retrieval" | "ranking" for result rows
    row: str | None = None  # the row label in the report (seeds of one row are pooled)
    seed: int | None = None
    # the tokenizer whose one SID table the stage's model reads (a result row's SID type, for
    # issue 17's pairs); None: tokenizers, item-id models, baselines, MCCA's several sets
    method: str | None = None
    root: str = ""  # the run folder: paths under it enter the key relative to it

    def key(self, keys: dict[str, str]) -> str:
        """Hash of the stage's config and its inputs' keys; the device is left out (a stage
        finished on one device is reused on another), and paths inside the run folder count
        relative to it (a run folder moved or reached through another path is reused)."""
        config = {k: v for k, v in self.config.items() if k != "device"}
        config = _relative(config, self.root)
        return stable_hash({"config": config, "inputs": [keys[i] for i in self.inputs]})


def _relative(obj, root: str):
    """Strings under ``root`` rewritten as "<run>/..." (recursively)."""
    if isinstance(obj, dict):
        return {k: _relative(v, root) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_relative(v, root) for v in obj]
    if root and isinstance(obj, str) and obj.startswith(root.rstrip("/") + "/"):
        return "<run>/" + obj[len(root.rstrip("/")) + 1 :]
    return obj


def stage_keys(stages: list[Stage]) -> dict[str, str]:
    keys: dict[str, str] = {}
    for st in stages:
        keys[st.name] = st.key(keys)
    return keys


def modalities(cfg: PipelineConfig) -> list[str]:
    from mmsid.features.inputs import DEFAULT_MODALITIES

    if cfg.tokenizer.modalities:
        return list(cfg.tokenizer.modalities)
    if cfg.dataset in DEFAULT_MODALITIES:
        return DEFAULT_MODALITIES[cfg.dataset]
    from mmsid.data import load_dataset

    return list(load_dataset(cfg.dataset, cfg.data_dir).modalities)


def plan(cfg: PipelineConfig) -> list[Stage]:
    """Inputs before consumers, cheapest first (see ``_by_cost``), so an interrupted long run
    already has most of its report."""
    from mmsid.pipeline.config import method_label
    from mmsid.ranking.run import RankConfig, run_rank
    from mmsid.retrieval.config import FUSABLE, RetrieveConfig
    from mmsid.retrieval.run import run_retrieve
    from mmsid.tokenize import TokenizeConfig, run_tokenize

    proto = dataclasses.asdict(cfg.protocol)
    base = {"dataset": cfg.dataset, "device": cfg.device, "data_dir": cfg.data_dir}
    tk, rt, rk = cfg.tokenizer, cfg.retrieval, cfg.ranking
    names = modalities(cfg)
    chosen = {"modalities": list(tk.modalities)} if tk.modalities else {}
    label = {m: method_label(m, cfg, len(names)) for m in [*cfg.methods, "mmq+ft"]}
    # tokenizer.levels 0: the residual tokenizers' IDs are as long as MMQ's (equal-length
    # comparisons of issue 17)
    levels = tk.levels or mmq_length(cfg, len(names))
    stages: list[Stage] = []

    def features(folder: Path, progress: bool = False) -> None:
        from mmsid.data import load_dataset
        from mmsid.features import build_features

        ds = load_dataset(cfg.dataset, cfg.data_dir)
        f = build_features(ds, modalities=names, progress=progress)
        write_json(
            folder / "metrics.json",
            {
                "modalities": {n: list(f.embeddings[n].shape) for n in names},
                "coverage": {n: float(f.masks[n].mean()) for n in names},
                "encoders": f.encoders,
                "cached": f.cached,
            },
        )

    stages.append(Stage("features", {"dataset": cfg.dataset, "modalities": names}, features))

    def rank_stage(name, task_row, model, sids, inputs, seed, method=None) -> Stage:
        kc = dict(
            base,
            model=model,
            sids=sids,
            epochs=rk.epochs,
            patience=rk.patience,
            neg_ratio=rk.neg_ratio,
            negatives=rk.negatives,
            label=rk.label,
            seed=seed,
            protocol=proto,
        )

        def go(folder: Path, progress: bool = False, kc=kc) -> None:
            kw = dict(kc, protocol=ProtocolConfig(**kc["protocol"]))
            run_rank(RankConfig(out=str(folder), **kw), progress=progress)

        return Stage(name, kc, go, inputs, "ranking", task_row, seed, method)

    def retrieve_stage(name, task_row, model, sids, inputs, seed, epochs, method=None) -> Stage:
        rc = dict(
            base,
            model=model,
            epochs=epochs,
            epoch_samples=rt.epoch_samples,
            patience=rt.patience,
            valid_sample=rt.valid_sample,
            # trained retrievers only: the deterministic baselines keep their keys
            **({"min_epochs": rt.min_epochs} if epochs else {}),
            batch_size=rt.batch_size,
            beam=rt.beam,
            max_minutes=rt.max_minutes,
            seed=seed,
            protocol=proto,
            lr=(rt.sid_lr or rt.lr) if sids else rt.lr,
            **(
                {
                    "sids": sids,
                    "schedule": rt.schedule,
                    "warmup_steps": rt.warmup_steps,
                    "optimizer": rt.optimizer,
                    "max_steps": rt.max_steps,
                    # the SID model's own settings, under its RetrieveConfig field name
                    **(
                        {"tiger": dataclasses.asdict(rt.tiger)}
                        if model == "tiger"
                        else {"parallel": dataclasses.asdict(rt.parallel)}
                    ),
                }
                if sids
                else {}
            ),
            **({"modalities": names, "center": tk.center} if model == "content-knn" else {}),
            **(
                {
                    "fusion_weights": tuple(rt.fusion_weights),
                    "fusion_new_item_bias": tuple(rt.fusion_new_item_bias),
                    "fusion_tolerance": rt.fusion_tolerance,
                }
                if model in FUSABLE
                else {}
            ),
        )

        def go(folder: Path, progress: bool = False, rc=rc) -> None:
            kw = dict(rc, protocol=ProtocolConfig(**rc["protocol"]))
            if "tiger" in kw:
                kw["tiger"] = TIGERConfig(**kw["tiger"])
            if "parallel" in kw:
                kw["parallel"] = ParallelSIDConfig(**kw["parallel"])
            run_retrieve(RetrieveConfig(out=str(folder), **kw), progress=progress)

        return Stage(name, rc, go, inputs, "retrieval", task_row, seed, method)

    # seed-free baselines: deterministic given the protocol
    if "ranking" in cfg.tasks and rk.popularity:
        stages.append(rank_stage("ranking-popularity", "popularity", "popularity", {}, (), 0))
    if "retrieval" in cfg.tasks and rt.popularity:
        stages.append(
            retrieve_stage("retrieval-popularity", "popularity", "popularity", None, (), 0, 0)
        )
    if "retrieval" in cfg.tasks and rt.content_knn:
        stages.append(
            retrieve_stage(
                "retrieval-content-knn", "content-knn", "content-knn", None, ("features",), 0, 0
            )
        )

    runs = Path(cfg.out) / "stages"
    later: list[Stage] = []  # SID retrievers of every seed go last
    for seed in cfg.seeds:
        pre = f"seed{seed}/"
        tok_stage: dict[str, str] = {}
        sid_path: dict[str, Path] = {}
        # mmq, mmq+ft and mmq+ft-control are rows of one tokenize stage: fine-tuning writes
        # the stage-1 IDs and the control's beside its own. mmq-<ablation> rows are stage-1
        # fits of their own.
        family = [m for m in cfg.methods if m in MMQ_FAMILY]
        finetuned = any(m != "mmq" for m in family)
        mmq_stage = "mmq+ft" if finetuned else "mmq"
        own_stage = [m for m in cfg.methods if m not in MMQ_FAMILY]
        for m in own_stage + ([mmq_stage] if family else []):
            mmq = m in MMQ_FAMILY or m in MMQ_ABLATIONS
            tcfg = dict(
                base,
                method="mmq" if mmq else m,
                levels=tk.opq_levels if m == "opq" else levels,
                codebook_size=tk.codebook_size,
                epochs=tk.epochs,
                alpha=tk.alpha,
                collision_cap=tk.collision_cap,
                per_modality=(m == "psrq"),
                finetune="behavior" if m == "mmq+ft" else None,
                finetune_epochs=tk.finetune_epochs,
                lambda_orth=tk.lambda_orth,
                center=tk.center,
                seed=seed,
                protocol=proto,
                **chosen,
            )
            if mmq:  # only MMQ's stage keys depend on its layout
                tcfg.update(
                    finetune_control=m == "mmq+ft" and "mmq+ft-control" in cfg.methods,
                    finetune_pairs=tk.finetune_pairs,
                    ablation=MMQ_ABLATIONS.get(m, "none"),
                    n_shared=tk.mmq_shared,
                    n_specific=tk.mmq_specific,
                    expert_levels=tk.mmq_levels,
                    gate_balance=tk.mmq_gate_balance,
                    gate_sharpness=tk.mmq_gate_sharpness,
                )

            def run_tok(folder: Path, progress: bool = False, tcfg=tcfg) -> None:
                kw = dict(tcfg, protocol=ProtocolConfig(**tcfg["protocol"]))
                run_tokenize(TokenizeConfig(out=str(folder), **kw), progress=progress)

            name = f"{pre}tokenize-{m}"
            stages.append(Stage(name, tcfg, run_tok, ("features",), None, label[m], seed))
            tok_stage[m] = name
        sids_file = {"mmq": "sids_stage1.parquet", "mmq+ft-control": "sids_control.parquet"}
        for m in cfg.methods:
            if m in MMQ_FAMILY:
                tok_stage[m] = tok_stage[mmq_stage]
            file = sids_file.get(m, "sids.parquet") if m in family and finetuned else "sids.parquet"
            sid_path[m] = runs / tok_stage[m] / file

        if "ranking" in cfg.tasks:
            if rk.din:
                stages.append(
                    rank_stage(f"{pre}ranking-din", "din (item ids)", "din", {}, (), seed)
                )
            for m in cfg.methods:
                stages.append(
                    rank_stage(
                        f"{pre}ranking-din-sid-{m}",
                        f"din + {label[m]} SID",
                        "din-sid",
                        {"joint": str(sid_path[m])},
                        (tok_stage[m],),
                        seed,
                        m,
                    )
                )
            if rk.mcca and "psrq" in cfg.methods:
                sets = {"psrq": str(runs / tok_stage["psrq"] / "sid_sets.parquet")}
                stages.append(
                    rank_stage(
                        f"{pre}ranking-mcca-psrq",
                        f"mcca + {label['psrq']} sets",
                        "mcca",
                        sets,
                        (tok_stage["psrq"],),
                        seed,
                    )
                )
        if "retrieval" in cfg.tasks:
            if rt.sasrec:
                stages.append(
                    retrieve_stage(
                        f"{pre}retrieval-sasrec",
                        "sasrec (item ids)",
                        "sasrec",
                        None,
                        (),
                        seed,
                        rt.sasrec_epochs,
                    )
                )
            for model in rt.models:
                for m in cfg.methods:
                    later.append(
                        retrieve_stage(
                            f"{pre}retrieval-{model}-{m}",
                            f"{model} + {label[m]}",
                            model,
                            str(sid_path[m]),
                            (tok_stage[m],),
                            seed,
                            rt.epochs,
                            m,
                        )
                    )
    for st in stages + later:
        st.root = str(Path(cfg.out))
    return _by_cost(stages + later)


def _by_cost(stages: list[Stage]) -> list[Stage]:
    """Cheapest kind of stage first, and within a kind one row at a time over every seed, so
    that a run cut short holds complete rows (all seeds) rather than one seed of everything:
    seed-free stages, tokenizers, SASRec, ranking rows, parallel-SID rows, then TIGER rows
    (hours on a CPU).
    Inputs still come before their consumers (tokenizers precede everything reading SIDs)."""

    def phase(st: Stage) -> int:
        base = st.name.split("/")[-1]
        if "/" not in st.name:
            return 0
        if base.startswith("tokenize-"):
            return 1
        if base == "retrieval-sasrec":
            return 2
        if base.startswith("ranking-"):
            return 3
        return 4 if base.startswith("retrieval-parallel-sid") else 5

    first_seen: dict[tuple[int, str], int] = {}
    for i, st in enumerate(stages):
        first_seen.setdefault((phase(st), st.name.split("/")[-1]), i)
    return sorted(
        stages, key=lambda st: (phase(st), first_seen[(phase(st), st.name.split("/")[-1])])
    )
