"""Paired comparisons of a run's rows on the same test users (mmsid.eval.stats): every row
against the item-id reference, every trained retriever against content-kNN, the best row
against the rest, and issue 17's MMQ + fine-tuning rows against every other SID row of their
model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mmsid.eval.stats import paired_auc, paired_users, per_user

SLICES = ("all", "head", "long_tail", "cold", "rare<30")
TASK = {
    # task: (main metric, other metrics, the item-id reference row)
    "retrieval": ("recall@10", ("ndcg@10", "recall@20", "ndcg@20"), "sasrec (item ids)"),
    "ranking": ("auc", ("gauc", "logloss"), "din (item ids)"),
}
# Retrieval's content-only baseline: on cold targets the question is not only whether a SID
# retriever beats item ids (which score a cold item last) but whether it beats ranking items by
# plain content similarity to the last item, which needs no training at all.
CONTENT = "content-knn"


def _arrays(task: str, folders: list[Path], ranks: str = "ranks.npz") -> dict:
    """Per-seed arrays of one row: retrieval ranks (from ``ranks``), ranking scores (test
    split)."""
    name = ranks if task == "retrieval" else "scores.npz"
    blobs = [np.load(f / name, allow_pickle=False) for f in folders]
    b0 = blobs[0]
    out = {
        "masks": dict(zip(b0["slice_names"].tolist(), b0["test_masks"])),
        "user": b0["test_user"],
    }
    if task == "retrieval":
        out["rank"] = np.stack([b["test_rank"] for b in blobs])
    else:
        out["label"] = b0["test_label"]
        out["score"] = np.stack([b["test_score"] for b in blobs])
    return out


def compare(task: str, rows: dict, st: Path) -> dict:
    """Paired comparisons: every row against the item-id reference on each slice, and the best
    row (mean on all test users) against every other row on all users."""
    main, _, ref = TASK[task]
    arrays = {
        r: _arrays(task, [st / s for s in v["stages"]], v.get("ranks", "ranks.npz"))
        for r, v in rows.items()
    }
    users = {r: a["user"] for r, a in arrays.items()}
    first = next(iter(users.values()))
    if any(len(u) != len(first) or (u != first).any() for u in users.values()):
        return {"error": "rows were tested on different users (different protocols)"}

    def test(a: str, b: str, sl: str) -> dict:
        A, B = arrays[a], arrays[b]
        m = np.ones(len(first), bool) if sl == "all" else A["masks"][sl]
        if not m.any():
            return {"diff": None, "lo": None, "hi": None, "win": None, "a": a, "b": b}
        if task == "retrieval":
            return paired_users(
                per_user(A["rank"][:, m], main), per_user(B["rank"][:, m], main), names=(a, b)
            )
        return paired_auc(
            A["user"][m], A["label"][m], A["score"][:, m], B["score"][:, m], names=(a, b)
        )

    def by_slice(a: str, b: str) -> dict:
        return {sl: test(a, b, sl) for sl in SLICES}

    out: dict[str, Any] = {"metric": main, "reference": ref if ref in rows else None}
    if ref in rows:
        out["vs_reference"] = {r: by_slice(r, ref) for r in rows if r != ref}
    if task == "retrieval" and CONTENT in rows:
        trained = [r for r, v in rows.items() if not v["deterministic"]]
        out["vs_content"] = {r: by_slice(r, CONTENT) for r in trained}
    best = max(rows, key=lambda r: rows[r]["test"]["all"][main]["mean"] or -np.inf)
    out["best"] = best
    out["best_vs"] = {r: test(best, r, "all") for r in rows if r != best}
    pairs = mmq_pairs(rows)
    if pairs:
        out["mmq_vs"] = {a: {b: by_slice(a, b) for b in others} for a, others in pairs.items()}
    return out


def mmq_pairs(rows: dict) -> dict[str, list[str]]:
    """Issue 17's comparisons: each MMQ + fine-tuning row against every other SID row of the
    same model and scoring (RQ-VAE, the other tokenizers, MMQ stage 1, the control, the
    ablations), so its claimed gain over RQ-VAE and what behavior adds beyond the control are
    paired on the same test users."""
    sid_rows = [r for r, v in rows.items() if v.get("method") is not None]
    # same model (parallel-sid, tiger, din-sid) and scoring (alone or fused with content)
    scorer = {r: (rows[r]["model"], "ranks" in rows[r]) for r in sid_rows}
    out: dict[str, list[str]] = {}
    for a in sid_rows:
        others = [b for b in sid_rows if b != a and scorer[b] == scorer[a]]
        if rows[a]["method"] == "mmq+ft" and others:
            out[a] = others
    return out
