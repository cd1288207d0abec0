"""The main job: data set -> protocol -> features -> every chosen tokenizer -> retrieval and
ranking on each, for every model seed -> one report with intervals and paired comparisons.

``config`` (settings and budgets), ``plan`` (the stages), ``runner`` (caching, resume),
``folder`` (the run folder's guard), ``report`` (seeds pooled, paired tests, report.md, plots).
"""

from mmsid.pipeline.config import (
    BUDGETS,
    METHODS,
    TASKS,
    PipelineConfig,
    method_label,
    resolve_config,
    run_hash,
)
from mmsid.pipeline.plan import Stage, plan, stage_keys
from mmsid.pipeline.report import DONE, SLICES, fmt, progress_note
from mmsid.pipeline.runner import command_line, git_commit, refresh, run

__all__ = [
    "BUDGETS",
    "DONE",
    "METHODS",
    "SLICES",
    "TASKS",
    "PipelineConfig",
    "Stage",
    "command_line",
    "fmt",
    "git_commit",
    "method_label",
    "plan",
    "progress_note",
    "refresh",
    "resolve_config",
    "run",
    "run_hash",
    "stage_keys",
]
