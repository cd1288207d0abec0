"""MMQ table (issue 5): generative retrieval Recall@10 / NDCG@10 (per slice) for RQ-KMeans,
RQ-VAE, MMQ stage 1, MMQ + behavior fine-tuning and the MMQ ablations (no orthogonal loss,
shared-only, specific-only), same split and same retrieval budget, mean ± std over seeds;
plus codebook metrics and measured orthogonality.

    python benchmarks/bench_mmq.py [--datasets ml100k-mm] [--seeds 0 1 2] [--epochs 100]

Retrieval budget (the same for every row, chosen to fit 2 CPU cores): a small TIGER (2+2
layers, d 64, 4 heads x 16, FFN 256), 10 epochs of 8,000 sampled training prefixes, lr 2e-3,
beam 20, model selection on validation Recall@10 (up to 5,000 validation users: all of them on
ml100k-mm and lfm2k-mm, a fixed seeded sample on amazon-beauty). Tokenizers: 3 levels x K 256 (RQ-KMeans,
RQ-VAE) and MMQ's 1 shared + 1 specific expert per modality (M + 1 codes), trained
``--epochs`` epochs; MMQ fine-tuning 10 epochs of 20,000 training-split transitions.
Modalities: the data set's defaults (ml100k-mm text + image; lfm2k-mm tag text + VGGish +
Whisper), except amazon-beauty, which has text only: there every tokenizer reads the two
text views ``title`` and ``categories`` (the issue's documented stand-in for a second
modality), so all rows see the same content.
Run folders under runs/bench-mmq/ (skipped when done: re-running resumes); writes
benchmarks/results/mmq.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from mmsid.io import write_json, write_text
from mmsid.retrieval.run import RetrieveConfig, run_retrieve
from mmsid.retrieval.tiger import TIGERConfig
from mmsid.tokenize import TokenizeConfig, run_tokenize

RESULTS = Path(__file__).resolve().parent / "results"
SMALL_TIGER = TIGERConfig(d_model=64, n_heads=4, d_head=16, d_ff=256, enc_layers=2, dec_layers=2)
ROWS = [
    "rq-kmeans",
    "rq-vae",
    "mmq-stage1",
    "mmq+ft",
    "mmq-no-orth",
    "mmq-shared-only",
    "mmq-specific-only",
]
SLICES = ("all", "head", "long_tail", "cold")
# per data set: modalities every tokenizer reads ([] = the data set's defaults)
MODALITIES = {"amazon-beauty": ["title", "categories"]}


def tag(dataset: str, center: bool) -> str:
    return f"{dataset}-centered" if center else dataset


def tokenize_runs(
    dataset: str,
    seed: int,
    root: Path,
    epochs: int,
    ablations: bool = True,
    fit: bool = True,
    center: bool = False,
) -> dict[str, tuple[Path, Path]]:
    """{row: (tokenize run folder, sids.parquet)}; fits what is missing (unless not ``fit``)."""

    def run(name: str, **kw) -> Path:
        out = root / f"{tag(dataset, center)}-tok-{name}-s{seed}"
        if fit and not (out / "metrics.json").exists():
            run_tokenize(
                TokenizeConfig(
                    dataset=dataset,
                    out=str(out),
                    seed=seed,
                    epochs=epochs,
                    modalities=MODALITIES.get(dataset, []),
                    center=center,
                    **kw,
                ),
                progress=False,
            )
        return out

    rqk = run("rq-kmeans", method="rq-kmeans")
    rqv = run("rq-vae", method="rq-vae")
    ft = run("mmq-ft", method="mmq", finetune="behavior", finetune_epochs=10)
    out = {
        "rq-kmeans": (rqk, rqk / "sids.parquet"),
        "rq-vae": (rqv, rqv / "sids.parquet"),
        "mmq-stage1": (ft, ft / "sids_stage1.parquet"),
        "mmq+ft": (ft, ft / "sids.parquet"),
    }
    for abl in ("no-orth", "shared-only", "specific-only") if ablations else ():
        d = run(f"mmq-{abl}", method="mmq", ablation=abl)
        out[f"mmq-{abl}"] = (d, d / "sids.parquet")
    return out


def retrieve(
    dataset: str,
    row: str,
    sids: Path,
    seed: int,
    root: Path,
    fit: bool = True,
    center: bool = False,
) -> dict:
    out = root / f"{tag(dataset, center)}-ret-{row}-s{seed}"
    if (out / "metrics.json").exists():
        return json.loads((out / "metrics.json").read_text())
    if not fit:
        return {}
    cfg = RetrieveConfig(
        dataset=dataset,
        sids=str(sids),
        out=str(out),
        seed=seed,
        epochs=10,
        epoch_samples=8000,
        lr=2e-3,
        patience=0,
        valid_sample=5000,
        tiger=SMALL_TIGER,
    )
    return run_retrieve(cfg, progress=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=["ml100k-mm"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument(
        "--ablation-seeds",
        nargs="+",
        type=int,
        default=None,
        help="seeds for the ablation rows (default: --seeds)",
    )
    ap.add_argument("--root", default="runs/bench-mmq")
    ap.add_argument(
        "--center",
        action="store_true",
        help="center each modality before tokenizing (TokenizeConfig.center); results go to "
        "mmq_centered.{json,md}",
    )
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="tables from the finished runs only (train nothing; the n column counts seeds)",
    )
    a = ap.parse_args()
    root = Path(a.root)
    t0 = time.perf_counter()
    raw: dict = {}
    compute: dict[str, dict[str, float]] = {}  # dataset -> {run folder: measured seconds}
    for ds in a.datasets:
        for seed in a.seeds:  # seed-major: partial results are complete rows
            ablate = a.ablation_seeds is None or seed in a.ablation_seeds
            fit = not a.report_only
            for row, (tok_dir, sids) in tokenize_runs(
                ds, seed, root, a.epochs, ablate, fit, a.center
            ).items():
                r = retrieve(ds, row, sids, seed, root, fit, a.center)
                if not r:
                    continue
                tm = json.loads((tok_dir / "metrics.json").read_text())
                secs = compute.setdefault(ds, {})
                secs[tok_dir.name] = float(sum(tm.get("seconds", {}).values()))
                secs[f"ret-{row}-s{seed}"] = r.get("train_seconds", 0.0) + r.get(
                    "eval_seconds", 0.0
                )
                if row == "mmq-stage1":
                    codebook = {"note": "stage-1 codes of the mmq+ft run"}
                else:
                    codebook = {
                        k: tm.get(k)
                        for k in ("utilization", "collision_rate", "coherence", "levels")
                    }
                raw.setdefault(ds, {}).setdefault(row, []).append(
                    {
                        "seed": seed,
                        "test": {s: r["test"][s] for s in SLICES},
                        "valid_recall@10": r["valid"]["all"]["recall@10"],
                        "codebook": codebook,
                        "orthogonality": (tm.get("stage1") or {}).get("orthogonality_abs_cos"),
                        "stage2": tm.get("stage2") if row == "mmq+ft" else None,
                    }
                )
                print(ds, row, seed, f"R@10 {r['test']['all']['recall@10']:.4f}", flush=True)
    res = {
        "raw": raw,
        "seconds": time.perf_counter() - t0,  # this invocation (finished runs are reused)
        # what the runs themselves measured (tokenizer fit + retrieval train/eval), summed
        "compute_minutes": {ds: sum(v.values()) / 60 for ds, v in compute.items()},
        # the command that trains every cell (--report-only just re-reads finished runs)
        "command": "python " + " ".join(x for x in sys.argv if x != "--report-only"),
        "epochs": a.epochs,
        "center": a.center,
    }
    name = "mmq_centered" if a.center else "mmq"
    write_json(RESULTS / f"{name}.json", res)
    write_text(RESULTS / f"{name}.md", markdown(res))
    plot(res, RESULTS / f"{name}.png")
    print(markdown(res))


def plot(res: dict, path: Path) -> None:
    """Test Recall@10 by SID type, one panel per data set: mean and std over seeds, each
    seed a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mmsid.io import save_png

    sets = list(res["raw"])
    fig, axes = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 3.6), squeeze=False)
    for ax, ds in zip(axes[0], sets):
        rows = [r for r in ROWS if res["raw"][ds].get(r)]
        for i, row in enumerate(rows):
            v = [x["test"]["all"]["recall@10"] for x in res["raw"][ds][row]]
            color = "tab:orange" if row.startswith("mmq") else "tab:blue"
            ax.bar(i, np.mean(v), yerr=np.std(v) if len(v) > 1 else 0, color=color, alpha=0.6)
            ax.plot([i] * len(v), v, "k.", ms=4)
        ax.set_xticks(range(len(rows)), rows, rotation=45, ha="right", fontsize=8)
        ax.set_title(ds)
        ax.set_ylabel("test Recall@10")
    fig.tight_layout()
    save_png(fig, path)


def mean_or_dash(v: list[float | None]) -> str:
    v = [x for x in v if x is not None]
    return f"{np.mean(v):.3f}" if v else "–"


def ms(v: list[float]) -> str:
    v = [x for x in v if x is not None and not np.isnan(x)]
    if not v:
        return "–"
    return f"{np.mean(v):.4f} ± {np.std(v):.4f}" if len(v) > 1 else f"{v[0]:.4f}"


def markdown(res: dict) -> str:
    lines = [
        "# MMQ vs RQ-VAE / RQ-KMeans: generative retrieval (test, leave-one-out)",
        "",
        "Mean ± std over seeds (n per cell in the last column). Retrieval budget and "
        "tokenizer settings: see benchmarks/bench_mmq.py's docstring."
        + (
            " **Tokenizer input centered** (each modality minus its mean, re-normalised)."
            if res.get("center")
            else ""
        ),
        "",
    ]
    for ds, rows in res["raw"].items():
        lines += [
            f"## {ds}",
            "",
            "| SIDs | Recall@10 | NDCG@10 | long-tail R@10 | head R@10 | cold R@10 | n |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in ROWS:
            rs = rows.get(row)
            if not rs:
                continue
            lines.append(
                f"| {row} | {ms([r['test']['all']['recall@10'] for r in rs])} | "
                f"{ms([r['test']['all']['ndcg@10'] for r in rs])} | "
                f"{ms([r['test']['long_tail']['recall@10'] for r in rs])} | "
                f"{ms([r['test']['head']['recall@10'] for r in rs])} | "
                f"{ms([r['test']['cold'].get('recall@10') for r in rs])} | {len(rs)} |"
            )
        if "rq-vae" in rows and "mmq+ft" in rows:
            a = np.mean([r["test"]["all"]["recall@10"] for r in rows["mmq+ft"]])
            b = np.mean([r["test"]["all"]["recall@10"] for r in rows["rq-vae"]])
            lines += [
                "",
                f"MMQ + fine-tuning vs RQ-VAE, Recall@10: {100 * (a / b - 1):+.1f}% (goal: +10%).",
            ]
        lines += [
            "",
            "| SIDs | utilization by position | collision rate | coherence by level | "
            "mean abs cos(shared, specific) |",
            "|---|---|---|---|---|",
        ]
        for row in ROWS:
            rs = rows.get(row)
            if not rs or "utilization" not in rs[0]["codebook"]:
                continue
            cb = rs[0]["codebook"]
            util = ", ".join(
                f"{np.mean([r['codebook']['utilization'][i] for r in rs]):.2f}"
                for i in range(len(cb["utilization"]))
            )
            coh = ", ".join(  # a level where every item is alone in its group has no value
                mean_or_dash([r["codebook"]["coherence"]["prefix"][i] for r in rs])
                for i in range(len(cb["coherence"]["prefix"]))
            )
            lines.append(
                f"| {row} | {util} | {ms([r['codebook']['collision_rate'] for r in rs])}"
                f" | {coh} | {ms([r['orthogonality'] for r in rs])} |"
            )
        ft = [r["stage2"] for r in rows.get("mmq+ft", []) if r["stage2"]]
        if ft:
            lines += [
                "",
                "Behavior fine-tuning changed the SID of "
                f"{ms([f['sid_changed_share'] for f in ft])} of items (share), trained on "
                f"{ft[0]['pairs']:,} training-split transitions.",
                "",
            ]
    cm = res.get("compute_minutes", {})
    took = ", ".join(f"{ds} {m:.0f} min" for ds, m in cm.items())
    lines += [
        "",
        f"Reproduce: `{res['command']}`. Compute measured by the runs (tokenizer fits + "
        f"retrieval training and evaluation, 1 thread each): {took}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
