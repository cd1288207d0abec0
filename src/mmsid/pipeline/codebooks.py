"""The report's codebook section: per tokenizer row, code use, collisions and coherence averaged
over its seeds, and for MMQ each expert's gate mass and code use and what fine-tuning changed
beside its control."""

from __future__ import annotations

import numpy as np

from mmsid.pipeline.experts import (
    entropy_text,
    expert_cells,
    expert_facts,
    mean_facts,
    orthogonality_text,
)


def fmt(v) -> str:
    return "–" if v is None or (isinstance(v, float) and v != v) else f"{v:.4f}"


def _int(v) -> str:
    return "–" if v is None else f"{v:,.0f}"


def codebook_row(ms: list[dict]) -> dict:
    """Codebook metrics of one tokenizer row, averaged over its seeds' metrics.json."""

    def mean(*path: str):
        vals = []
        for m in ms:
            for key in path:
                m = (m or {}).get(key)
            if m is not None:
                vals.append(m)
        return None if not vals else np.mean(np.asarray(vals, dtype=float), axis=0).tolist()

    coh = [((m.get("coherence") or {}).get("prefix")) for m in ms]
    coh = [[np.nan if v is None else v for v in c] for c in coh if c]
    return {
        "utilization": mean("utilization"),
        "collision_rate": mean("collision_rate"),
        "unique_after_collision_level": mean("unique_after_collision_level"),
        "items": ms[0].get("items"),
        "coherence_by_level": np.nanmean(coh, axis=0).tolist() if coh else None,
        "coherence_random": mean("coherence", "random"),
        "fit_seconds": mean("seconds", "fit") or 0.0,
        "sid_changed_share": mean("stage2", "sid_changed_share"),
        "sid_changed_control": mean("stage2", "control", "sid_changed_share"),
        "sid_differs_from_control": mean("stage2", "sid_differs_from_control_share"),
        "experts": _experts(ms),
        "seeds": len(ms),
    }


def _experts(ms: list[dict]) -> dict | None:
    """MMQ: mmsid.pipeline.experts' facts of each seed's fit, averaged over the seeds; None
    for other tokenizers."""
    if not all((m.get("stage1") or {}).get("experts") for m in ms):
        return None
    return mean_facts([expert_facts(m) for m in ms])


def codebook_lines(res: dict) -> list[str]:
    if not res["codebook"]:
        return []
    lines = [
        "## Codebooks (mean over seeds)",
        "",
        "| method | utilization by level | collision rate | unique SIDs | coherence by level "
        "(random pairs) | SIDs changed by fine-tuning | fit s |",
        "|---|---|---|---|---|---|---|",
    ]
    for m, c in res["codebook"].items():
        util = ", ".join(f"{u:.2f}" for u in c.get("utilization") or [])
        coh = ", ".join("–" if u != u else f"{u:.3f}" for u in c.get("coherence_by_level") or [])
        lines.append(
            f"| {m} | {util} | {fmt(c.get('collision_rate'))} | "
            f"{_int(c.get('unique_after_collision_level'))} / {c.get('items')} | {coh} "
            f"({fmt(c.get('coherence_random'))}) | {fmt(c.get('sid_changed_share'))} | "
            f"{c.get('fit_seconds') or 0:.0f} |"
        )
    lines.append("")
    for m, c in res["codebook"].items():
        lines += _expert_lines(m, c)
    return lines


def _expert_lines(m: str, c: dict) -> list[str]:
    """MMQ's experts: is the mixture used (gate mass and routed share spread over experts, gate
    entropy between 0 and 1), is every codebook alive, and what fine-tuning changed beyond its
    control."""
    f = c.get("experts")
    if not f:
        return []
    lines = [
        f"### {m}: experts (mean over seeds; plot `mmq_experts.png`)",
        "",
        "Gate mass: the expert's mean gate weight within its group (1 / experts = even use); "
        "routed share: the items whose largest gate weight is this expert; utilization (share "
        f"of the {f['codebook_size']} codes in use) and perplexity (exp of the code-use entropy) "
        "of the expert's least-used level, over the items that have its input. Each cell: "
        "stage 1 → fine-tuned (control).",
        "",
        "| expert | gate mass | routed share | code utilization | perplexity |",
        "|---|---|---|---|---|",
        *("| " + " | ".join(row) + " |" for row in expert_cells(f)),
        "",
        f"G{entropy_text(f)[1:]} (mean over items of the gate's entropy / log of the "
        f"group's experts; 0: each item on one expert, 1: spread evenly); "
        f"{orthogonality_text(f)}.",
    ]
    if c.get("sid_changed_control") is not None:
        lines += [
            "",
            f"Fine-tuning changed {fmt(c.get('sid_changed_share'))} of the fitted items' SIDs; "
            f"its control (behavior weight 0, same epochs and pairs) changed "
            f"{fmt(c['sid_changed_control'])}; the two differ on "
            f"{fmt(c.get('sid_differs_from_control'))} of all items: that share is what the "
            "behavior term changed.",
        ]
    return lines + [""]
