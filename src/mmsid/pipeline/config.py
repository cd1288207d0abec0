"""The main job's settings: one typed dataclass per section, budgets as presets.
Priority: dataclass defaults < ``--budget`` preset < ``--config`` YAML < command line."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from mmsid.config import dotted, load_yaml, merge
from mmsid.errors import ConfigError
from mmsid.io import stable_hash
from mmsid.protocol import ProtocolConfig
from mmsid.retrieval.fusion import NEW_ITEM_BIAS_GRID, WEIGHT_GRID
from mmsid.retrieval.parallel import ParallelSIDConfig
from mmsid.retrieval.tiger import TIGERConfig
from mmsid.tokenize import PSRQ_ALPHA

# mmq+ft-control: MMQ fine-tuned like mmq+ft with behavior weight 0 (what continued training
# alone changes); mmq, mmq+ft and mmq+ft-control come from one tokenize stage. mmq-<ablation>:
# MMQ stage 1 with one part removed (mmsid.tokenize_mmq.ABLATIONS)
MMQ_FAMILY = ("mmq", "mmq+ft", "mmq+ft-control")
MMQ_ABLATIONS = {
    "mmq-no-orth": "no-orth",
    "mmq-no-sharpness": "no-sharpness",
    "mmq-shared-only": "shared-only",
    "mmq-specific-only": "specific-only",
    "mmq-one-expert": "one-expert",
}
METHODS = ("rq-kmeans", "rq-vae", "psrq", *MMQ_FAMILY, "opq", *MMQ_ABLATIONS)
DEFAULT_METHODS = ("rq-kmeans", "rq-vae", "psrq", *MMQ_FAMILY, "opq")
SID_RETRIEVERS = ("parallel-sid", "tiger")
TASKS = ("retrieval", "ranking")


@dataclass
class TokenizerSection:
    # rq-kmeans, rq-vae, psrq; 0 (default) = as many codes as MMQ's SID, so that the table
    # compares ID types at equal length (6 codes on ml100k-mm, 8 on lfm2k-mm)
    levels: int = 0
    codebook_size: int = 256
    epochs: int = 200  # rq-vae and mmq stage 1
    alpha: float = PSRQ_ALPHA  # psrq: 1 = the paper (mmsid.tokenize.PSRQ_ALPHA)
    finetune_epochs: int = 20  # mmq+ft stage 2
    finetune_pairs: int = 20000  # behavior pairs drawn per stage-2 epoch (0 = all)
    lambda_orth: float = 0.1
    center: bool = True  # center each modality before tokenizing (TokenizeConfig.center)
    # the modalities every tokenizer reads; empty = the data set's defaults
    # (features.inputs.DEFAULT_MODALITIES, else all of them), e.g. [title, categories] on
    # amazon-beauty
    modalities: list[str] = field(default_factory=list)
    collision_cap: int = 1_000_000  # retrieval sizes the collision vocabulary from the data
    # opq: m parallel codes. RPG uses 16-64; 8 is the length measured with the default retriever
    # (at 16 its temperature had to be retuned to 0.14: benchmarks/results/retrievers_idlen.md)
    opq_levels: int = 8
    # mmq: the expert layout (TokenizeConfig.n_shared / n_specific / expert_levels) and the
    # gate terms (MMQConfig.gate_balance / gate_sharpness)
    mmq_shared: int = 2
    mmq_specific: int = 2
    mmq_levels: int = 1
    mmq_gate_balance: float = 0.1
    mmq_gate_sharpness: float = 0.1


@dataclass
class RetrievalSection:
    # SID retrievers: a cap; early stopping on validation ends a run. Patience 10 and a cap of
    # 100, as every committed parallel-sid figure (benchmarks/bench_parallel_loss.py): best
    # epochs there ran 16-46, and at a cap of 40 RQ-VAE-6 on ml100k-mm stopped at the cap
    epochs: int = 100
    epoch_samples: int = 0
    patience: int = 10
    # trained retrievers (SID models, SASRec): early stopping cannot end one before this
    # epoch (LoopConfig.min_epochs). 25: over the main job's runs, patience ended one
    # retriever (RQ-VAE-6 on ml100k-mm, seed 0) at 18 epochs on an early validation peak;
    # held to 25 it trained to 54 and doubled its test recall, and no other retriever
    # stopped before 25 (benchmarks/results/earlystop.md)
    min_epochs: int = 25
    valid_sample: int = 5000
    lr: float = 1e-3
    batch_size: int = 256
    beam: int = 20
    max_minutes: float = 0.0
    # the retrievers trained over each method's SIDs: parallel-sid (one causal pass per user,
    # every code at once, exact scoring of the whole catalogue) and/or tiger (beam search)
    models: list[str] = field(default_factory=lambda: ["parallel-sid"])
    # parallel-sid at ParallelSIDConfig's defaults, the measured settings (width 256, FFN 512,
    # dropout 0.2, temperature 0.07); RPG's size is the preset mmsid.retrieval.parallel.RPG
    parallel: ParallelSIDConfig = field(default_factory=ParallelSIDConfig)
    tiger: TIGERConfig = field(default_factory=TIGERConfig)
    # the SID retrievers' optimiser: schedule constant | cosine | rsqrt, optimizer adamw |
    # adafactor, max_steps a step budget (0 = epochs decide); mmsid.training.LoopConfig
    schedule: str = "constant"
    warmup_steps: int = 0
    optimizer: str = "adamw"
    max_steps: int = 0
    sid_lr: float = 0.0  # SID retrievers' peak learning rate; 0 = ``lr`` (SASRec's)
    sasrec: bool = True  # the item-id baseline
    sasrec_epochs: int = 200  # a cap, with the same early stopping
    popularity: bool = True
    content_knn: bool = True  # the cold-start baseline
    # content fusion of parallel-sid and SASRec (mmsid.retrieval.fusion): each such row gets a
    # "+ content" row beside it, its (w, b) chosen after training on the whole validation
    # split from these grids (0 always a candidate); both empty = no fused rows
    fusion_weights: list[float] = field(default_factory=lambda: list(WEIGHT_GRID))
    fusion_new_item_bias: list[float] = field(default_factory=lambda: list(NEW_ITEM_BIAS_GRID))
    # 0: the grid's best overall point; t > 0: the best for new-item (cold) targets among the
    # points within t x the best overall (mmsid.retrieval.fusion.choose_point)
    fusion_tolerance: float = 0.0


@dataclass
class RankingSection:
    epochs: int = 20  # a cap; early stopping on validation AUC (1 epoch, patience 0 = paper)
    patience: int = 2
    neg_ratio: int = 1
    negatives: str = "popularity"  # popularity | uniform (mmsid.ranking.samples)
    label: str = "sampled"
    popularity: bool = True
    din: bool = True  # the item-id baseline
    mcca: bool = True  # MCCA over PSRQ's joint + per-modality sets (when psrq is a method)


@dataclass
class PipelineConfig:
    dataset: str
    out: str = "runs/run"
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    budget: str = "quick"
    seeds: list[int] = field(default_factory=lambda: [0])  # model seeds (tables: >= 3)
    device: str = "auto"
    data_dir: str | None = None
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    tokenizer: TokenizerSection = field(default_factory=TokenizerSection)
    retrieval: RetrievalSection = field(default_factory=RetrievalSection)
    ranking: RankingSection = field(default_factory=RankingSection)


# what each budget changes from the dataclass defaults (the defaults are "full"). The quick
# budget is a smoke test: every trained model gets the same 3 passes over the training data,
# too few for any ranking of methods to mean anything.
BUDGETS: dict[str, dict[str, Any]] = {
    "quick": {
        "tokenizer": {"epochs": 30, "finetune_epochs": 3},
        "retrieval": {
            "epochs": 3,
            "patience": 0,
            "min_epochs": 0,
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
            "parallel": {"d_model": 64, "d_ff": 256},
            "sasrec_epochs": 3,
        },
        "ranking": {"epochs": 3, "patience": 0},
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
    """Defaults < budget preset < YAML file < the file's section for this data set < command
    line (``cli`` named options, then ``sets`` as dotted KEY=VALUE).

    A file's ``datasets:`` maps data set names to settings that apply to that data set only
    (e.g. ``amazon-beauty: {tokenizer: {modalities: [title, categories]}}``), so one file
    configures a job over several data sets; the budget is the file's, for every data set."""
    file = load_yaml(config_file) if config_file else {}
    sections = file.pop("datasets", None) or {}
    bad = (
        {k: v for k, v in sections.items() if not isinstance(v, dict) or "budget" in v}
        if isinstance(sections, dict)
        else sections
    )
    if bad:
        raise ConfigError(
            f"{config_file}: 'datasets' maps each data set name to its own settings "
            f"(a mapping, without 'budget'), e.g. 'amazon-beauty: {{tokenizer: {{modalities: "
            f"[title, categories]}}}}'; got {bad!r}"
        )
    cli = {k: v for k, v in (cli or {}).items() if v not in (None, ())}
    over = dotted(sets)
    budget = over.get("budget") or cli.get("budget") or file.get("budget") or "quick"
    if budget not in BUDGETS:
        raise ConfigError(f"unknown budget '{budget}'; choose one of {tuple(BUDGETS)}")
    cfg = PipelineConfig(dataset=dataset, out=out)
    cfg = merge(cfg, {**BUDGETS[budget], "budget": budget}, "budget preset")
    cfg = merge(cfg, file, str(config_file))
    cfg = merge(cfg, sections.get(dataset, {}), f"{config_file}: datasets.{dataset}")
    cfg = merge(cfg, cli, "command line")
    cfg = merge(cfg, over, "--set")
    bad = [m for m in cfg.methods if m not in METHODS]
    if bad:
        raise ConfigError(f"unknown method(s) {bad}; choose from {METHODS}")
    bad = [t for t in cfg.tasks if t not in TASKS]
    if bad:
        raise ConfigError(f"unknown task(s) {bad}; choose from {TASKS}")
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds):
        raise ConfigError(f"seeds must be distinct and at least one, got {cfg.seeds}")
    bad = [m for m in cfg.retrieval.models if m not in SID_RETRIEVERS]
    if bad:
        raise ConfigError(f"unknown retrieval model(s) {bad}; choose from {SID_RETRIEVERS}")
    from mmsid.training import OPTIMIZERS, SCHEDULES

    if cfg.retrieval.schedule not in SCHEDULES or cfg.retrieval.optimizer not in OPTIMIZERS:
        raise ConfigError(
            f"retrieval.schedule '{cfg.retrieval.schedule}' / retrieval.optimizer "
            f"'{cfg.retrieval.optimizer}': choose a schedule of {SCHEDULES} and an optimizer "
            f"of {OPTIMIZERS}"
        )
    if cfg.retrieval.min_epochs < 0:
        raise ConfigError(
            f"retrieval.min_epochs {cfg.retrieval.min_epochs}: an epoch count, 0 (early "
            "stopping may end a run at any epoch) or more"
        )
    if cfg.ranking.negatives not in ("popularity", "uniform"):
        raise ConfigError(
            f"ranking.negatives '{cfg.ranking.negatives}': choose popularity or uniform"
        )
    return cfg


def run_hash(cfg: PipelineConfig) -> str:
    """What makes two runs the same run (the folder and device do not)."""
    resolved = dataclasses.asdict(cfg)
    return stable_hash({k: v for k, v in resolved.items() if k not in ("out", "device")})


def method_label(m: str, cfg: PipelineConfig, n_modalities: int | None = None) -> str:
    """A method's name with the settings that decide what it is, for every table and plot."""
    tk = cfg.tokenizer
    length = f"L={mmq_length(cfg, n_modalities)}" if tk.levels == 0 and n_modalities else ""
    if m == "psrq":
        return f"psrq(alpha={tk.alpha:g}{', ' + length if length else ''})"
    if m == "opq":
        return f"opq(m={tk.opq_levels})"
    if m.startswith("mmq"):
        from mmsid.tokenize_mmq import expert_layout

        shared, specific = expert_layout(
            MMQ_ABLATIONS.get(m, "none"), tk.mmq_shared, tk.mmq_specific, n_modalities or 1
        )
        layout = f"{shared} shared + {specific} specific"
        layout += "/modality" if n_modalities != 1 else ""
        if tk.mmq_levels > 1:
            layout += f", {tk.mmq_levels} levels/expert"
        return f"{m}({layout})"
    if m in ("rq-kmeans", "rq-vae") and length:
        return f"{m}({length})"
    return m


def mmq_length(cfg: PipelineConfig, n_modalities: int) -> int:
    """Codes in the SID of MMQ's configured layout on ``n_modalities`` modalities."""
    tk = cfg.tokenizer
    return (tk.mmq_shared + n_modalities * tk.mmq_specific) * tk.mmq_levels
