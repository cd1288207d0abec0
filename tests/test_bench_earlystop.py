"""benchmarks/bench_earlystop.py: which retrievers of a finished run the min-epochs rule
re-trains (those patience ended before the minimum; never a capped run or a later stop; a fused
row's models are its plain row's)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_the_rule_re_trains_only_runs_that_patience_ended_before_the_minimum():
    from bench_earlystop import changed_stages, nearest_kept

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
    # the shortest stop left as run: capped runs and fused rows are not patience's stops
    assert nearest_kept(rows, 25) == ("seed0/retrieval-b", 25)
    assert nearest_kept(rows, 26) == ("seed1/retrieval-x", 29)
    assert nearest_kept(rows, 45) is None


def test_a_re_train_of_another_version_of_the_stage_is_never_reused(tmp_path):
    """A folder under the output that re-trained the stage at another key (the run re-made it
    since), or that this script did not make, stops the script before anything is read."""
    import json

    import pytest
    from bench_earlystop import retrain

    src = tmp_path / "run" / "stages" / "seed0" / "retrieval-x"
    src.mkdir(parents=True)
    (src / "stage.json").write_text(json.dumps({"key": "new"}))
    dst = tmp_path / "out" / "seed0" / "retrieval-x"
    dst.mkdir(parents=True)
    with pytest.raises(SystemExit, match="not made by this script"):
        retrain(tmp_path / "run", "seed0/retrieval-x", tmp_path / "out", 25)
    (dst / "source.json").write_text(json.dumps({"key": "old"}))
    with pytest.raises(SystemExit, match="stage key changed"):
        retrain(tmp_path / "run", "seed0/retrieval-x", tmp_path / "out", 25)
    assert sorted(p.name for p in dst.iterdir()) == ["source.json"]  # nothing written


def test_a_row_with_re_trained_seeds_keeps_its_model_and_tokenizer(tmp_path):
    """Swapping a re-trained seed into a row keeps what issue 17's pairs read (the row's model
    and tokenizer), so the MMQ + fine-tuning pairs are the same rows before and after."""
    import json

    from bench_earlystop import swapped

    from mmsid.pipeline.paired import mmq_pairs

    metrics = {"test": {"all": {"recall@10": 0.1}}, "valid": {"all": {"recall@10": 0.1}}}
    metrics |= {"epochs_run": 30, "stopped": "early_stopping", "seconds": 1.0}
    st = tmp_path / "stages"
    rows = {}
    for m in ("mmq+ft", "rq-vae"):
        stages = [f"seed{s}/retrieval-parallel-sid-{m}" for s in (0, 1)]
        for s in stages:
            (st / s).mkdir(parents=True)
            (st / s / "metrics.json").write_text(json.dumps(metrics))
        rows[m] = {"stages": stages, "seeds": [0, 1], "model": "parallel-sid", "method": m}
    rows["sasrec"] = {"stages": ["seed0/retrieval-sasrec"], "seeds": [0], "model": "sasrec"}
    rows["sasrec"]["method"] = None
    new = tmp_path / "re" / "seed0" / "retrieval-parallel-sid-rq-vae"
    new.mkdir(parents=True)
    (new / "metrics.json").write_text(json.dumps(metrics | {"epochs_run": 54}))
    out = swapped(rows, st, {"seed0/retrieval-parallel-sid-rq-vae": new})
    assert out["rq-vae"]["epochs"] == [54, 30]  # the re-trained seed is read
    assert (out["rq-vae"]["model"], out["rq-vae"]["method"]) == ("parallel-sid", "rq-vae")
    assert mmq_pairs(out) == mmq_pairs(rows) == {"mmq+ft": ["rq-vae"]}
