"""The retrieve stage's settings: which retriever, its training budget and loop, evaluation,
content fusion, and each model's own config. One dataclass for every retriever (RecBole's one
contract per model family); :func:`check_config` is what the stage checks before it writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mmsid.config import check_ranges
from mmsid.errors import ConfigError
from mmsid.protocol import ProtocolConfig
from mmsid.retrieval.parallel import ParallelSIDConfig
from mmsid.retrieval.sasrec import SASRecConfig
from mmsid.retrieval.tiger import TIGERConfig
from mmsid.training import OPTIMIZERS, SCHEDULES

MODELS = ("parallel-sid", "tiger", "sasrec", "popularity", "content-knn")
FUSABLE = ("parallel-sid", "sasrec")  # exact score(history): content fusion applies
SID_MODELS = ("parallel-sid", "tiger")
UNTRAINED = ("popularity", "content-knn")
# not part of a run's resume key: budgets (a larger one extends a run), where things live, and
# what is chosen after training (the fusion grid)
BUDGET_KEYS = (
    "out",
    "device",
    "data_dir",
    "sids",
    "epochs",
    "max_minutes",
    "max_steps",
    "patience",
    "min_epochs",
    "fusion_weights",
    "fusion_new_item_bias",
    "fusion_tolerance",
)


@dataclass
class RetrieveConfig:
    dataset: str
    model: str = "parallel-sid"
    out: str = "runs/retrieve"
    sids: str | None = None  # a sids.parquet (the SID models read it; SASRec does not)
    sid_set: str = "joint"  # which set of a multi-set file (tokenize --per-modality)
    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    eval_every: int = 1
    patience: int = 5  # validations without improvement before stopping; 0 = never
    min_epochs: int = 0  # early stopping cannot end a run before this (LoopConfig.min_epochs)
    max_minutes: float = 0.0  # wall-time budget for training; 0 = none
    select: str = "recall@10"  # validation metric for model selection / early stopping
    valid_sample: int = 5000  # validation users scored during training (0 = all)
    # samples per epoch: each epoch trains on a fresh seeded random subset of this many
    # training samples (SASRec: windows); 0 = all. Sets the epoch length for long-history
    # data sets, where one pass over every prefix is long on a CPU.
    epoch_samples: int = 0
    ks: tuple[int, ...] = (5, 10, 20)
    beam: int = 20
    eval_batch_size: int = 64  # users per beam-search batch (fastest in bench_beam)
    amp: str = "auto"  # bf16 autocast for training only (evaluation is fp32): auto | on | off
    # learning rate: constant | cosine (after warmup_steps) | rsqrt (held for warmup_steps,
    # then 1/sqrt(step)): mmsid.training.LoopConfig
    schedule: str = "constant"
    warmup_steps: int = 0
    optimizer: str = "adamw"  # adamw | adafactor (TIGER's, with lr 0.01: LoopConfig)
    max_steps: int = 0  # a budget in optimiser steps (ends at an epoch end); 0 = epochs decide
    log_steps: bool = False  # keep every step's training loss in the history
    # content-knn and fusion: the modalities whose L2-normalised concatenation is the item's
    # content (empty = the data set's tokenizer defaults), centered first if asked
    modalities: list[str] = field(default_factory=list)
    center: bool = False
    # content fusion (mmsid.retrieval.fusion; parallel-sid, SASRec): after training, the model's
    # score + w * cos(content of the user's last item, item content) + b for items the model
    # never trained on, (w, b) picked from these grids (0 is always a candidate of each) by
    # ``select`` on the whole validation split; reported as metrics.json's "fused" beside the
    # model alone. Both empty = no fusion
    fusion_weights: tuple[float, ...] = ()
    fusion_new_item_bias: tuple[float, ...] = ()
    # 0: the grid's best overall point; t > 0: the best point for new-item (cold) targets among
    # those within t x the best overall validation ``select`` (fusion.choose_point)
    fusion_tolerance: float = 0.0
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    tiger: TIGERConfig = field(default_factory=TIGERConfig)
    sasrec: SASRecConfig = field(default_factory=SASRecConfig)
    parallel: ParallelSIDConfig = field(default_factory=ParallelSIDConfig)
    seed: int = 0
    device: str = "cpu"
    data_dir: str | None = None

    def __post_init__(self) -> None:
        check_ranges(
            self,
            epochs=(0, None),  # 0: the untrained baselines
            batch_size=(1, None),
            lr=(1e-12, 10.0),
            weight_decay=(0.0, None),
            eval_every=(1, None),
            patience=(0, None),
            min_epochs=(0, None),
            max_minutes=(0.0, None),
            valid_sample=(0, None),
            epoch_samples=(0, None),
            beam=(1, None),
            eval_batch_size=(1, None),
            warmup_steps=(0, None),
            max_steps=(0, None),
            fusion_tolerance=(0.0, 1.0),
        )
        for name in ("fusion_weights", "fusion_new_item_bias"):
            if any(w < 0 for w in getattr(self, name)):
                raise ConfigError(f"{name} {getattr(self, name)}: values must be >= 0")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule '{self.schedule}': choose one of {SCHEDULES}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer '{self.optimizer}': choose one of {OPTIMIZERS}")

    @property
    def fusion_grid(self) -> list[tuple[float, float]]:
        """The (w, b) candidates of content fusion, smaller first; [] = no fusion."""
        if not (self.fusion_weights or self.fusion_new_item_bias):
            return []
        ws, bs = sorted({0.0, *self.fusion_weights}), sorted({0.0, *self.fusion_new_item_bias})
        return [(float(w), float(b)) for w in ws for b in bs]


def check_config(cfg: RetrieveConfig) -> None:
    """What can be checked of ``cfg`` before the run folder is touched (what needs the loaded
    data, e.g. K against the catalogue, is checked by the run)."""
    if cfg.model not in MODELS:
        raise ConfigError(f"unknown retrieval model '{cfg.model}'; choose one of {MODELS}")
    if cfg.model not in UNTRAINED and cfg.epochs < 1:
        raise ConfigError(f"{cfg.model} trains: epochs must be at least 1, got {cfg.epochs}")
    if cfg.model in SID_MODELS and not cfg.sids:
        raise ConfigError(f"{cfg.model} needs a SID table: --sids RUN_DIR/sids.parquet")
    if cfg.fusion_grid and cfg.model not in FUSABLE:
        raise ConfigError(
            f"fusion_weights / fusion_new_item_bias: {cfg.model} has no exact score to fuse "
            f"with; use one of {FUSABLE}"
        )
    if cfg.beam < max(cfg.ks):
        raise ConfigError(f"beam {cfg.beam} is smaller than the largest K {max(cfg.ks)}")
    metric, _, k = cfg.select.partition("@")
    if metric not in ("recall", "ndcg") or not k.isdigit() or int(k) not in cfg.ks:
        raise ConfigError(f"select '{cfg.select}' must be recall@K or ndcg@K with K in {cfg.ks}")
