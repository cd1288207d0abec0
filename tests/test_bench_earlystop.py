"""benchmarks/bench_earlystop.py: which retrievers of a finished run the min-epochs rule
re-trains (those patience ended before the minimum; never a capped run or a later stop; a fused
row's models are its plain row's)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_the_rule_re_trains_only_runs_that_patience_ended_before_the_minimum():
    from bench_earlystop import changed_stages

    def row(epochs, stopped, fused=False):
        stages = [f"seed{s}/retrieval-x" for s in range(len(epochs))]
        return {"stages": stages, "epochs": epochs, "stopped": stopped} | (
            {"ranks": "fused_ranks.npz"} if fused else {}
        )

    rows = {
        "a": row([18, 29, 44], ["early_stopping"] * 3),
        "a + content": row([18, 29, 44], ["early_stopping"] * 3, fused=True),
        "capped": row([10, 12], ["epochs", "max_minutes"]),
        "b": row([25, 24], ["early_stopping", "early_stopping"]),
    }
    rows["b"]["stages"] = ["seed0/retrieval-b", "seed1/retrieval-b"]
    assert changed_stages(rows, 25) == ["seed0/retrieval-x", "seed1/retrieval-b"]
    assert changed_stages(rows, 18) == []  # a stop at the minimum itself is the rule's own
    assert changed_stages(rows, 30) == [
        "seed0/retrieval-x",
        "seed1/retrieval-x",
        "seed0/retrieval-b",
        "seed1/retrieval-b",
    ]
