"""Which training loss the parallel-SID retriever should use (issue 15): RPG's per-code loss
(``parallel.loss=code``: mean cross-entropy of each code position on its own) against the
item-level loss (``parallel.loss=item``: cross-entropy over the catalogue's trainable items of
the score the evaluation ranks by, sum_j log p_j(c_ij)), on the same SID table, settings and
seeds. The choice is read on validation; test figures are reported beside it.

    python benchmarks/bench_parallel_loss.py [--datasets ml100k-mm] [--seeds 0 1 2]
    python benchmarks/bench_parallel_loss.py --only code   # one loss's runs (fill a core each)

Per data set: one RQ-KMeans table (3 x 256, tokenizer seed 0, fitted on the protocol's warm
items; cold items get IDs from ``transform``), then per model seed one retriever per loss
(retrieval.yaml's CPU-sized model: width 256, 2 layers, FFN 512, dropout 0.2, temperature
0.07, AdamW 1e-3 constant; early stopping on validation Recall@10, patience 10, at most 100
epochs), and popularity / content-kNN on the same protocol for reference. Runs live under
``runs/parallel_loss/`` (re-running reuses finished runs, resumes the others, or extends them to
a larger budget; ``--only`` runs a subset and writes nothing). Mean ± 95% CI over seeds; the
paired difference (item - code) is a bootstrap over the same users, seeds pooled, on
validation (the decision) and test.
Writes benchmarks/results/parallel_loss.{json,md}.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from mmsid.eval.stats import mean_ci, paired_text, paired_users, per_user
from mmsid.io import write_json, write_text
from mmsid.retrieval.parallel import ParallelSIDConfig

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
RUNS = HERE.parent / "runs" / "parallel_loss"
LOSSES = ("code", "item")
# ParallelSIDConfig's defaults (also the main job's), the fields a results file records
MODEL = {k: getattr(ParallelSIDConfig(), k) for k in ("d_model", "d_ff", "dropout", "temperature")}
# patience decides where a run stops; the cap only bounds a run that keeps improving (at 40,
# RQ-VAE-6 on ml100k-mm peaked at the cap in two of three seeds: an undertrained baseline). The
# schedule is constant, so a finished run at a smaller cap that patience stopped is the same run
# at this one, and one the cap stopped is resumed and extended (mmsid.training.train).
EPOCHS, PATIENCE, LR = 100, 10, 1e-3
SASREC_EPOCHS = 200  # SASRec's epochs are cheap (no per-code heads): patience decides
SLICES = ("all", "head", "long_tail", "cold")


def tokenize(
    dataset: str,
    method: str = "rq-kmeans",
    levels: int = 3,
    out: Path | None = None,
    seed: int = 0,
    modalities: list[str] | None = None,
    settings: dict | None = None,
):
    """The SID table's run folder (tokenizer seed ``seed``, fitted on the protocol's warm items;
    ``modalities``: its input, default the data set's DEFAULT_MODALITIES; ``settings``: other
    TokenizeConfig fields, e.g. {"gate_sharpness": 0.03}, checked like the rest).
    ``mmq-ft``: MMQ at its default expert layout with ``levels`` residual levels per expert
    (SID length = experts x levels), stage 1 then behavior fine-tuning on the protocol's
    training transitions (sids.parquet; stage 1's and the control's IDs beside it);
    ``mmq-ft-ABLATION``: the same with one of mmsid.tokenize_mmq.ABLATIONS (no-orth,
    shared-only, specific-only, one-expert). ``psrq``:
    alpha as every entry point's default (mmsid.tokenize.PSRQ_ALPHA, 0.25: at the paper's 1.0 deep
    levels copy the first on ml100k-mm, 270 items under one 3-code prefix). A finished folder
    made with other settings is an error, never reused."""
    import yaml

    from mmsid.tokenize import PSRQ_ALPHA, TokenizeConfig, run_tokenize

    out = out or RUNS / dataset / "rq-kmeans"
    kw: dict = {"method": method, "levels": levels}
    if method == "psrq":
        kw["alpha"] = PSRQ_ALPHA
    if method.startswith("mmq-ft"):  # mmq-ft-ABLATION: one part of the method taken away
        ablation = method.removeprefix("mmq-ft").removeprefix("-") or "none"
        kw = {"method": "mmq", "expert_levels": levels, "finetune": "behavior"}
        kw["ablation"] = ablation
    kw["modalities"] = list(modalities or [])  # [] = DEFAULT_MODALITIES; a folder records it
    kw.update(settings or {})
    if (out / "metrics.json").exists():
        made = yaml.safe_load((out / "config.yaml").read_text())
        want = {**kw, "seed": seed}
        if any(made.get(k) != v for k, v in want.items()):
            raise SystemExit(f"{out}: made with {made}, not {want}; move it away to remake it")
    else:
        run_tokenize(TokenizeConfig(dataset=dataset, out=str(out), seed=seed, **kw), progress=False)
    return out


def retrieve(
    dataset: str,
    model: str,
    seed: int,
    loss: str = "",
    sids: Path | None = None,
    out: Path | None = None,
    fusion: dict | None = None,
    temperature: float | None = None,
    sids_file: str = "sids.parquet",
    sasrec: dict | None = None,
    dropout: float | None = None,
):
    """A retriever's metrics (with its valid/test ranks), trained unless already finished at
    this budget: parallel-sid on ``sids`` with ``loss`` (MODEL's settings), SASRec (its
    defaults, at most SASREC_EPOCHS), or a deterministic baseline. ``fusion``: the content
    fusion settings as RetrieveConfig takes them (``fusion_weights`` and ``fusion_new_item_bias``
    tuples, ``fusion_tolerance``: how the point is chosen; mmsid.retrieval.fusion); its result is
    ``m["fused"]``, with its ranks. ``temperature`` and ``dropout`` override MODEL's for
    parallel-sid; ``sids_file``: which of the tokenizer folder's SID tables it reads;
    ``sasrec``: SASRecConfig fields that differ from its defaults."""
    from mmsid.retrieval.config import RetrieveConfig
    from mmsid.retrieval.run import run_retrieve
    from mmsid.retrieval.sasrec import SASRecConfig

    out = out or RUNS / dataset / (f"parallel-{loss}/seed{seed}" if loss else model)
    kw: dict = {"epochs": 0}
    if model == "parallel-sid":
        kw = {
            "sids": str(sids / sids_file),
            "epochs": EPOCHS,
            "patience": PATIENCE,
            "lr": LR,
            "parallel": ParallelSIDConfig(
                **{
                    **MODEL,
                    "temperature": temperature or MODEL["temperature"],
                    "dropout": MODEL["dropout"] if dropout is None else dropout,
                },
                loss=loss,
            ),
        }
    elif model == "sasrec":
        kw = {"epochs": SASREC_EPOCHS, "patience": PATIENCE, "lr": LR}
        kw["sasrec"] = SASRecConfig(**(sasrec or {}))
    kw.update(fusion or {})
    if not _finished(out, kw):
        cfg = RetrieveConfig(
            dataset=dataset, model=model, out=str(out), seed=seed, device="cpu", **kw
        )
        run_retrieve(cfg, progress=False)
    m = json.loads((out / "metrics.json").read_text())
    for name, res in (("ranks", m), ("fused_ranks", m.get("fused"))):
        if res is not None:
            with np.load(out / f"{name}.npz") as z:
                res["ranks"] = {"valid": z["valid_rank"], "test": z["test_rank"]}
                res["targets"] = {"valid": z["valid_target"], "test": z["test_target"]}
    return m


def _finished(out: Path, kw: dict) -> bool:
    """A run folder holds results at this budget and fusion grid (a trained run made at a
    smaller budget is resumed and extended, one without the grid re-evaluated; a finished one
    is not evaluated again)."""
    if not (out / "metrics.json").exists():
        return False
    if kw["epochs"]:
        import yaml

        cfg = yaml.safe_load((out / "config.yaml").read_text())
        made, want = Path(cfg.get("sids") or "").name, Path(kw.get("sids") or "").name
        if made != want:  # a run folder is one SID table's; never another's
            raise SystemExit(f"{out}: trained on {made or 'no SIDs'}, not {want}; move it away")
        if "sasrec" in kw and cfg["sasrec"] != asdict(kw["sasrec"]):
            raise SystemExit(f"{out}: SASRec made with {cfg['sasrec']}, not {kw['sasrec']}")
        for k in ("temperature", "dropout") if "parallel" in kw else ():
            if cfg["parallel"][k] != getattr(kw["parallel"], k):
                raise SystemExit(f"{out}: parallel-sid made with {k} {cfg['parallel'][k]}")
        if (cfg["epochs"], cfg["patience"]) != (kw["epochs"], kw["patience"]):
            return False
    ws, bs = kw.get("fusion_weights", ()), kw.get("fusion_new_item_bias", ())
    if ws or bs:
        grid = {(w, b) for w in {0.0, *ws} for b in {0.0, *bs}}
        fused = json.loads((out / "metrics.json").read_text()).get("fused") or {}
        same = fused.get("tolerance") == kw.get("fusion_tolerance", 0.0)
        return same and grid == {(g["weight"], g["new_item_bias"]) for g in fused.get("grid", [])}
    return True


def best_epochs(ms: list[dict]) -> str:
    """Each run's best epoch, ``*`` where the epoch cap ended the run before patience did (a run
    that may not have converged)."""
    return ", ".join(f"{m['best_epoch']}{'*' if m.get('stopped') == 'epochs' else ''}" for m in ms)


def fmt(c: dict) -> str:
    return f"{c['mean']:.4f} ± {(c['ci'] or 0.0):.4f}"


def aggregate(ms: list[dict], split: str) -> dict:
    """Mean ± 95% CI over seeds of each slice's Recall@10 and NDCG@10 on ``split``."""
    agg: dict = {
        f"{sl}/{k}": mean_ci([m[split][sl][k] for m in ms])
        for sl in SLICES
        for k in ("recall@10", "ndcg@10")
    }
    agg["cold_users"] = ms[0][split]["cold"]["n"]
    return agg


def metric_cells(agg: dict) -> str:
    """The table cells R@10 | N@10 | head | long tail | cold (users) of :func:`aggregate`."""
    return (
        f"{fmt(agg['all/recall@10'])} | {fmt(agg['all/ndcg@10'])} | "
        f"{fmt(agg['head/recall@10'])} | {fmt(agg['long_tail/recall@10'])} | "
        f"{fmt(agg['cold/recall@10'])} ({agg['cold_users']})"
    )


def baseline_rows(ds: str, model: str, m: dict, tail: str) -> list[str]:
    """A deterministic baseline's valid and test rows; ``tail`` = its empty trailing cells."""
    rows = []
    for split in ("valid", "test"):
        t = m[split]
        rows.append(
            f"| {ds} | {model} (deterministic) | {split} | {t['all']['recall@10']:.4f} | "
            f"{t['all']['ndcg@10']:.4f} | {t['head']['recall@10']:.4f} | "
            f"{t['long_tail']['recall@10']:.4f} | {t['cold']['recall@10']:.4f} "
            f"({t['cold']['n']}) |{tail}"
        )
    return rows


def slice_masks(dataset: str, targets: dict[str, np.ndarray]) -> dict[str, dict]:
    """{slice: {split: (users,) bool}} of the protocol's slices of each split's targets."""
    from mmsid.protocol import load_protocol
    from mmsid.retrieval.config import RetrieveConfig

    proto = load_protocol(dataset, None, RetrieveConfig(dataset=dataset).protocol)
    per_split = {split: proto.slices(t) for split, t in targets.items()}
    return {sl: {split: m[sl] for split, m in per_split.items()} for sl in per_split["test"]}


def on_slice(sl: str, masks: dict[str, dict]) -> tuple[str, tuple[str, dict] | None]:
    """(results-key prefix, ``users`` argument of paired_lines) for slice ``sl`` of slice_masks'
    ``masks``: ('', None) for "all", every user."""
    return ("", None) if sl == "all" else (f"{sl}_", (sl, masks[sl]))


def paired_lines(
    ds: str,
    x_runs,
    y_runs,
    names,
    store: dict,
    key: str = "",
    users: tuple[str, dict[str, np.ndarray]] | None = None,
) -> list[str]:
    """x - y by a paired bootstrap over the same users (seeds pooled), valid and test, Recall@10
    and NDCG@10: one line each; each result goes into ``store[f"paired_{key}{split}_{metric}"]``.
    ``users``: (a slice's name, its boolean mask over each split's users) to compare on that
    slice's users only."""
    lines = []
    for split in ("valid", "test"):
        keep = slice(None) if users is None else users[1][split]
        where = split if users is None else f"{split} ({users[0]} users)"
        for metric in ("recall@10", "ndcg@10"):
            x, y = (
                np.stack([per_user(m["ranks"][split], metric)[keep] for m in ms])
                for ms in (x_runs, y_runs)
            )
            d = paired_users(x, y, names=names)
            store[f"paired_{key}{split}_{metric}"] = d
            lines.append(f"- {ds}, {where} {metric}: {paired_text(d, x.shape[1])}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=["ml100k-mm"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--only", choices=LOSSES, help="run this loss's retrievers; write nothing")
    a = ap.parse_args()
    if a.only:
        for ds in a.datasets:
            sids = tokenize(ds)
            for seed in a.seeds:
                retrieve(ds, "parallel-sid", seed, a.only, sids)
        return
    from mmsid.pipeline import git_commit

    commit = git_commit()  # before anything is written
    cmd = "python benchmarks/bench_parallel_loss.py --datasets " + " ".join(a.datasets)
    cmd += " --seeds " + " ".join(map(str, a.seeds))
    res: dict = {
        "command": cmd,
        "commit": commit,
        "seeds": a.seeds,
        "tokenizer": {"method": "rq-kmeans", "levels": 3, "codebook_size": 256, "seed": 0},
        "retriever": {**MODEL, "epochs": EPOCHS, "patience": PATIENCE, "lr": LR},
        "datasets": {},
    }
    lines = [
        "# Parallel-SID retriever: per-code loss (RPG's) vs item-level loss",
        "",
        "`code`: mean cross-entropy of each code position on its own (RPG). `item`: "
        "cross-entropy over the catalogue's trainable items of sum_j log p_j(c_ij), the score "
        "the evaluation ranks by (cold items are left out of its softmax, as SASRec leaves "
        "them out of its own). Same RQ-KMeans table (3 x 256, fitted on warm items), same "
        "model (width 256, 2 layers, FFN 512, dropout 0.2, temperature 0.07, AdamW 1e-3; "
        f"early stopping on validation Recall@10, patience {PATIENCE}, at most {EPOCHS} "
        "epochs; `*`: the cap ended that run), same seeds. Mean ± 95% CI over seeds; the "
        "paired difference is a bootstrap over the same users, seeds pooled. The choice is "
        "read on validation.",
        "",
        f"Command: `{cmd}` (commit {commit}, seeds {a.seeds}).",
        "",
        "| data set | model | split | Recall@10 | NDCG@10 | head R@10 | long-tail R@10 | "
        "cold R@10 (users) | best epochs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    paired = []
    for ds in a.datasets:
        sids = tokenize(ds)
        runs = {
            loss: [retrieve(ds, "parallel-sid", s, loss, sids) for s in a.seeds] for loss in LOSSES
        }
        res["datasets"][ds] = {"protocol": runs["code"][0]["protocol"]}
        for loss, ms in runs.items():
            row: dict = {"best_epoch": [m["best_epoch"] for m in ms]}
            row["epochs_run"] = [m["epochs_run"] for m in ms]
            for split in ("valid", "test"):
                row[split] = agg = aggregate(ms, split)
                lines.append(
                    f"| {ds} | parallel-sid (loss={loss}) | {split} | {metric_cells(agg)} | "
                    f"{best_epochs(ms)} |"
                )
            res["datasets"][ds][loss] = row
        for model in ("popularity", "content-knn"):
            m = retrieve(ds, model, 0)
            res["datasets"][ds][model] = {s: m[s] for s in ("valid", "test")}
            lines += baseline_rows(ds, model, m, " |")
        paired += paired_lines(
            ds, runs["item"], runs["code"], ("item", "code"), res["datasets"][ds]
        )
    lines += ["", "Paired comparison (95% bootstrap interval):", "", *paired]
    write_json(RESULTS / "parallel_loss.json", res)
    write_text(RESULTS / "parallel_loss.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
