"""The SID-table and per-expert sections of the retrieval and ranking results (bench_retrievers,
bench_ranking_ids): what each ID type's table looks like over every item (codes, shared SIDs,
codebook use; for MMQ + fine-tuning, what fine-tuning changed beside its control), and the
per-expert rows and plot of each MMQ fit (mmq_experts), read from the fits the runs read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from bench_parallel_ids import tokenizer_dir
from id_specs import MMQ_ABLATED, MMQ_IDS, parse_ids
from mmq_experts import expert_lines, mmq_fits

from mmsid.pipeline.experts import experts_plot

RESULTS = Path(__file__).resolve().parent / "results"


def id_facts(dataset: str, spec: str, tseed: int = 0) -> dict:
    """The SID table ``spec``'s runs read (tokenizer seed ``tseed``), over every item (cold
    ones included): codes per SID, PSRQ's alpha, the share of items whose full SID another
    item shares, the lowest share of a position's codebook in use; for MMQ + fine-tuning and
    its ablations, what the tokenizer's metrics.json says of stage 2 beside its control
    (mmsid.tokenize_mmq; shares over the fitted items)."""
    import json

    from mmsid.ids import SIDTable, collision_rate

    method = parse_ids(spec)[0]
    folder = tokenizer_dir(dataset, spec, tseed)
    m = json.loads((folder / "metrics.json").read_text())
    codes = SIDTable.load(folder / MMQ_IDS.get(method, "sids.parquet")).codes  # (N, L)
    used = [len(np.unique(c)) / m["codebook_size"] for c in codes.T]
    facts = {"codes": codes.shape[1], "collision_rate": collision_rate(codes)}
    facts["min_utilization"] = min(used)
    if method == "psrq":  # the issue asks PSRQ's rows to state the alpha they were fitted with
        import yaml

        facts["alpha"] = yaml.safe_load((folder / "config.yaml").read_text())["alpha"]
    if method == "mmq-ft" or method in MMQ_ABLATED:
        ft = m["stage2"]
        facts |= {
            "sid_changed_share": ft["sid_changed_share"],
            "control_sid_changed_share": ft["control"]["sid_changed_share"],
            "behavior_beyond_control": ft["behavior_beyond_control"],
            "sid_differs_from_control_share": ft["sid_differs_from_control_share"],
        }
    return facts


def id_line(dataset: str, spec: str, f: dict) -> str:
    cells = [f"{f['codes']}", f"{f['collision_rate']:.3f}", f"{f['min_utilization']:.2f}"]
    if "sid_changed_share" in f:
        cells += [
            f"{f['sid_changed_share']:.3f}",
            f"{f['control_sid_changed_share']:.3f}",
            f"{f['behavior_beyond_control']:+.3f}",
            f"{f['sid_differs_from_control_share']:.3f}",
        ]
    cells += [""] * (7 - len(cells))
    name = f"{spec} (alpha {f['alpha']:g})" if "alpha" in f else spec
    return f"| {dataset} | {name} | {' | '.join(cells)} |"


def sid_reports(
    ds: str, specs: list[str], stem: str, store: dict, tseeds: tuple[int, ...] = (0,)
) -> tuple[list, list, set]:
    """``ds``'s SID-table rows (id_facts of each spec at each of the runs' tokenizer seeds
    ``tseeds``, labelled ``SPEC (tokenizer seed T)`` where there are several), expert rows
    (each MMQ fit the specs read, mmq_experts, at the first tokenizer seed) and those fits'
    codebook sizes, with the facts kept in ``store`` (``ids`` by row label, ``experts``) and
    the experts plotted to ``STEM_DATASET_experts.png``."""
    seen = list(dict.fromkeys(tseeds))
    id_rows = []
    for spec in specs:
        for t in seen:
            label = spec if len(seen) == 1 else f"{spec} (tokenizer seed {t})"
            facts = id_facts(ds, spec, t)
            store.setdefault("ids", {})[label] = facts
            id_rows.append(id_line(ds, label, facts))
    fits = mmq_fits(ds, specs, seen[0])
    if not fits:
        return id_rows, [], set()
    store["experts"] = fits
    experts_plot(ds, fits, RESULTS / f"{stem}_{ds}_experts.png")
    rows = [r for fit, f in fits.items() for r in expert_lines(ds, fit, f)]
    return id_rows, rows, {f["codebook_size"] for f in fits.values()}


def id_table(id_lines: list[str], tseeds: tuple[int, ...] = (0,)) -> list[str]:
    """The SID-table section of a results Markdown (id_line rows under their header)."""
    seeds = ", ".join(map(str, dict.fromkeys(tseeds)))
    return [
        "",
        f"The SID tables the runs read (tokenizer seed {seeds}), over every item: codes per "
        "SID, the share of items whose full SID another item shares, the lowest share of a "
        "position's codebook in use. For MMQ + fine-tuning, from its tokenizer's report: the "
        "share of "
        "fitted items whose SID fine-tuning changed from stage 1, the same for the control "
        "(behavior weight 0, same epochs), their difference (what the behavior term changed "
        "beyond the control) and the share of all items whose fine-tuned SID differs from the "
        "control's.",
        "",
        "| data set | IDs | codes | collision rate | min utilization | changed by fine-tuning | "
        "by the control | beyond the control | fine-tuned vs control differ |",
        "|---|---|---|---|---|---|---|---|---|",
        *id_lines,
    ]
