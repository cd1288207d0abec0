"""SASRec's settings in the retrieval benches (benchmarks/bench_retrievers.py ``--sasrec``,
benchmarks/bench_sasrec_grid.py): each setting gets its own run folder, a folder made with other
settings is an error (never reused as if it were this one), and the grid chooses on validation."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_sasrec_settings_are_parsed_typed_and_named_one_folder_each():
    from bench_retrievers import parse_sasrec, sasrec_name
    from bench_sasrec_grid import GRID, flag

    assert parse_sasrec(["dropout=0.5", "d_model=128"]) == {"d_model": 128, "dropout": 0.5}
    assert parse_sasrec(["d_model=64", "dropout=0.2"]) == {}  # the defaults: no setting
    assert parse_sasrec(["loss=bce"]) == {"loss": "bce"}
    for bad in (["width=128"], ["d_model"], ["d_model=1.5"], ["dropout=high"], ["dropout=1.5"]):
        with pytest.raises(SystemExit, match="--sasrec"):
            parse_sasrec(bad)
    names = [sasrec_name(g) for g in GRID]
    assert names[0] == "sasrec" and GRID[0] == {}  # the defaults' folder is bench_retrievers'
    assert len(set(names)) == len(GRID) == 6
    assert sasrec_name({"d_model": 128, "dropout": 0.5}) == "sasrec-d_model128-dropout0.5"
    for g in GRID:  # the grid's printed choice, given back to bench_retrievers, is the point
        assert parse_sasrec(flag(g).split()) == g


def test_a_sasrec_folder_made_with_other_settings_is_an_error(tmp_path):
    from bench_parallel_loss import PATIENCE, SASREC_EPOCHS, _finished

    from mmsid.retrieval.sasrec import SASRecConfig

    made = {"epochs": SASREC_EPOCHS, "patience": PATIENCE, "sids": None}
    made["sasrec"] = asdict(SASRecConfig())
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(made))
    (tmp_path / "metrics.json").write_text(json.dumps({}))
    kw = {"epochs": SASREC_EPOCHS, "patience": PATIENCE, "sasrec": SASRecConfig()}
    assert _finished(tmp_path, kw)
    with pytest.raises(SystemExit, match="SASRec made with"):
        _finished(tmp_path, {**kw, "sasrec": SASRecConfig(d_model=128)})


def test_the_grid_chooses_the_best_mean_validation_recall_first_on_a_tie():
    from bench_sasrec_grid import choose

    def runs(*recalls):
        return [
            {"valid": {"all": {"recall@10": r}}, "test": {"all": {"recall@10": 1.0}}}
            for r in recalls
        ]

    assert choose([runs(0.10, 0.12), runs(0.12, 0.13), runs(0.11)]) == 1
    assert choose([runs(0.25), runs(0.125, 0.375), runs(0.25)]) == 0  # tie: the earlier point
