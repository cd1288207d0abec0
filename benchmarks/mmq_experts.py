"""Issue 17's per-expert report of MMQ fits: gate mass, share of items routed, code utilization
and perplexity of every expert, after stage 1, after behavior fine-tuning and after its control
(behavior weight 0, same epochs), read from each fit's tokenizer ``metrics.json``
(mmsid.tokenize_mmq; the facts and the plot are mmsid.pipeline.experts', which the main job's
report shares). A table for the results Markdown and one PNG per data set, written by the bench
that reads the fits (bench_retrievers), so the plots come from the same runs and command as the
numbers beside them.
"""

from __future__ import annotations

import json

from bench_parallel_ids import tokenizer_dir
from id_specs import MMQ_ABLATED, fit_name, fit_of

from mmsid.pipeline.experts import (
    entropy_text,
    expert_cells,
    expert_facts,
    orthogonality_text,
)


def mmq_fits(dataset: str, specs: list[str], tseed: int = 0) -> dict[str, dict]:
    """expert_facts of each MMQ fit ``specs`` read (tokenizer seed ``tseed``), named
    by bench_parallel_ids.fit_name (mmq, mmq-ft and mmq-ctl share the mmq-ft fit; each
    ablation, each input and each tokenizer setting is its own)."""
    fits: dict[str, dict] = {}
    for spec in specs:
        fit, _ = fit_of(spec)
        if fit != "mmq-ft" and fit not in MMQ_ABLATED:
            continue
        name = fit_name(spec)
        if name not in fits:
            m = json.loads((tokenizer_dir(dataset, spec, tseed) / "metrics.json").read_text())
            fits[name] = expert_facts(m)
    return fits


def expert_lines(dataset: str, fit: str, f: dict) -> list[str]:
    """Markdown rows ``| data set | fit | expert | gate mass | routed | utilization |
    perplexity |``, each cell stage 1 → fine-tuned (control); then the fit's gate entropy and
    orthogonality rows."""
    rows = [f"| {dataset} | {fit} | " + " | ".join(c) + " |" for c in expert_cells(f)]
    rows.append(f"| {dataset} | {fit} | {entropy_text(f)} | | | | |")
    rows.append(f"| {dataset} | {fit} | {orthogonality_text(f)} | | | | |")
    return rows


def expert_table(stem: str, rows: list[str], codebooks: set[int], tseed: int = 0) -> list[str]:
    """The experts section of a results Markdown: expert_lines rows under their header
    (``stem``: the results stem its plots are named after; ``tseed``: the fits' tokenizer seed)."""
    return [
        "",
        f"MMQ's experts per fit (tokenizer seed {tseed}; plots: `{stem}_<data set>_experts.png`): "
        "gate mass (mean softmax weight over the group's items), routed share (items whose "
        "largest gate weight is this expert), and the expert's least-used level: code "
        "utilization (share of its codebook in use) and perplexity (exp of the code-use "
        f"entropy; codebook {', '.join(map(str, sorted(codebooks)))}). Each cell: stage 1 → "
        "fine-tuned (control). Under each fit: its gate entropy per group (mean over items, "
        "divided by log of the group's experts; 0: each item on one expert) and the measured "
        "mean abs cosine between the shared and specific parts that the orthogonality term "
        "pushes to 0 (n/a: a layout without one of them).",
        "",
        "| data set | fit | expert | gate mass | routed share | utilization | perplexity |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]
