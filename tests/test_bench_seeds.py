"""The benches' ``--refit-tokenizers`` (benchmarks/bench_parallel_ids.py): model seed s reads a
SID table fitted with tokenizer seed s, so the seeds' intervals include refitting the tokenizer;
without it every seed reads tokenizer seed 0's table. A tokenizer folder made with another seed
is an error, never reused."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_each_model_seed_gets_its_own_tokenizer_folder_only_when_refitting():
    from bench_parallel_ids import seed_folder, tokenizer_dir, tokenizer_seed

    assert [tokenizer_seed(s, False) for s in (0, 1, 2)] == [0, 0, 0]
    assert [tokenizer_seed(s, True) for s in (0, 1, 2)] == [0, 1, 2]
    assert [seed_folder(s, False) for s in (0, 1, 2)] == ["seed0", "seed1", "seed2"]
    assert [seed_folder(s, True) for s in (0, 1, 2)] == ["seed0", "seed1-tok1", "seed2-tok2"]
    dirs = [tokenizer_dir("lfm2k-mm", "mmq-ctl:2", t) for t in (0, 1, 2)]
    assert len(set(dirs)) == 3 and dirs[0].name == "tokenizer"
    # MMQ's three ID tables share one fit per tokenizer seed
    assert tokenizer_dir("lfm2k-mm", "mmq:2", 1) == tokenizer_dir("lfm2k-mm", "mmq-ft:2", 1)


@pytest.mark.parametrize("refit", [False, True])
def test_ranker_and_retriever_seeds_read_the_tokenizer_seed_they_are_given(refit, monkeypatch):
    """bench_ranking_ids and bench_parallel_ids: which table each model seed trains on, and
    where its run goes (the tokenizer and the models are recorded, not trained)."""
    import bench_parallel_ids
    import bench_ranking_ids

    fitted, ranked, retrieved = [], [], []

    def fake_tokenize(dataset, method, levels, out, seed=0, modalities=None, settings=None):
        assert modalities == [] and settings == {}  # the data set's default input and settings
        fitted.append((method, levels, out.name, seed))
        return out

    def fake_rank(dataset, model, seed, out, sids=None):
        ranked.append((seed, out.name, sids.parent.name, sids.name))
        return {}

    def fake_retrieve(dataset, model, seed, loss, sids, out, fusion, **kw):
        retrieved.append((seed, out.name, sids.name, kw["sids_file"]))
        return {}

    monkeypatch.setattr(bench_ranking_ids, "rank", fake_rank)
    monkeypatch.setattr(bench_parallel_ids, "tokenize", fake_tokenize)
    monkeypatch.setattr(bench_parallel_ids, "retrieve", fake_retrieve)
    bench_ranking_ids.runs_for("lfm2k-mm", "mmq-ctl:2", [0, 1, 2], refit)
    bench_parallel_ids.runs_for("lfm2k-mm", "mmq-ctl:2", [0, 1, 2], refit=refit)

    want = [0, 1, 2] if refit else [0, 0, 0]
    tok = ["tokenizer", "tokenizer-seed1", "tokenizer-seed2"] if refit else ["tokenizer"] * 3
    runs = ["seed0", "seed1-tok1", "seed2-tok2"] if refit else ["seed0", "seed1", "seed2"]
    assert fitted == [("mmq-ft", 2, t, s) for t, s in zip(tok, want)] * 2
    assert ranked == [(s, r, t, "sids_control.parquet") for s, r, t in zip([0, 1, 2], runs, tok)]
    assert retrieved == [(s, r, t, "sids_control.parquet") for s, r, t in zip([0, 1, 2], runs, tok)]


def test_a_tokenizer_folder_made_with_another_seed_is_not_reused(real_data_dir, tmp_path):
    """bench_parallel_loss.tokenize fits with the seed it is given and refuses a finished
    folder whose config has another seed (settings the same)."""
    from bench_parallel_loss import tokenize

    out = tokenize("lfm2k-mm", "rq-kmeans", 1, tmp_path / "tok", seed=1)
    assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == 1
    assert tokenize("lfm2k-mm", "rq-kmeans", 1, out, seed=1) == out  # same seed: reused
    with pytest.raises(SystemExit, match="'seed': 0"):
        tokenize("lfm2k-mm", "rq-kmeans", 1, out, seed=0)


def test_a_spec_can_name_the_tokenizer_input_and_gets_its_own_folders(monkeypatch):
    """``METHOD:LEVELS[@T]/VIEW+VIEW``: the tokenizer reads those modalities, and its fit and
    runs live apart from the default input's (the same method and length on another input is
    another SID table); malformed views are refused."""
    import bench_parallel_ids
    import bench_ranking_ids
    from bench_parallel_ids import tokenizer_dir
    from id_specs import parse_ids, spec_views

    spec = "mmq-ft:1@0.07/title+categories"
    assert parse_ids(spec) == ("mmq-ft", 1, 0.07)
    assert spec_views(spec) == ["title", "categories"] and spec_views("opq:8@0.14") == []
    assert parse_ids("rq-vae:6/title+categories") == ("rq-vae", 6, None)
    for bad in ("rq-vae:6/", "rq-vae:6/title+", "rq-vae:6/ti tle", "rq-vae:6/a/b"):
        with pytest.raises(SystemExit, match="input modalities"):
            parse_ids(bad)
    views = tokenizer_dir("amazon-beauty", spec)
    assert views.parent.name == "mmq-ft-1-title+categories"
    assert views != tokenizer_dir("amazon-beauty", "mmq-ft:1")
    # stage 1 and the control read the same fit as fine-tuned MMQ on the same views
    assert tokenizer_dir("amazon-beauty", "mmq:1/title+categories") == views

    fitted, ran = [], []

    def fake_tokenize(dataset, method, levels, out, seed=0, modalities=None, settings=None):
        fitted.append((out.parent.name, modalities))
        return out

    monkeypatch.setattr(bench_parallel_ids, "tokenize", fake_tokenize)
    monkeypatch.setattr(
        bench_parallel_ids, "retrieve", lambda *a, **kw: ran.append(a[5].parent.name) or {}
    )
    monkeypatch.setattr(
        bench_ranking_ids, "rank", lambda ds, m, s, out, sids=None: ran.append(out.parent.name)
    )
    bench_parallel_ids.runs_for("amazon-beauty", spec, [0])
    bench_ranking_ids.runs_for("amazon-beauty", spec, [0])
    assert fitted == [("mmq-ft-1-title+categories", ["title", "categories"])] * 2
    # the retriever's runs name its temperature; the ranker's do not (DIN reads none)
    assert ran == ["mmq-ft-1-title+categories-t0.07", "mmq-ft-1-title+categories"]


def test_a_spec_sets_mmqs_gate_weights_in_their_own_fit_and_folders(monkeypatch):
    """``METHOD:LEVELS,sharpness=W``: the tokenizer is fitted with gate_sharpness W, in a fit
    and run folders of its own (so a weight is tuned on validation like any setting), for the
    retriever and the ranker alike; other methods, unknown keys, negative or repeated values
    and a weight on the term an ablation drops are refused before anything runs."""
    import bench_parallel_ids as b
    import bench_ranking_ids
    import id_specs as sp

    spec = "mmq-ft:1,sharpness=0.03@0.07/title+categories"
    assert sp.parse_ids(spec) == ("mmq-ft", 1, 0.07)
    assert sp.spec_views(spec) == ["title", "categories"]
    assert sp.spec_settings(spec) == {"gate_sharpness": 0.03}
    assert sp.spec_settings("mmq:2,balance=0.2,sharpness=0") == {
        "gate_balance": 0.2,
        "gate_sharpness": 0.0,
    }
    assert sp.spec_settings("mmq-ft:1/title+categories") == {}
    assert sp.spec_settings("opq:16,pca=128@0.14") == {"pca_dim": 128}
    assert b.tokenizer_dir("amazon-beauty", "opq:16,pca=128@0.14").parent.name == "opq-16-pca128"
    tok = b.tokenizer_dir("amazon-beauty", spec)
    assert tok.parent.name == "mmq-ft-1-sharpness0.03-title+categories"
    assert tok != b.tokenizer_dir("amazon-beauty", "mmq-ft:1/title+categories")
    assert tok != b.tokenizer_dir("amazon-beauty", "mmq-ft:1,sharpness=0.01/title+categories")
    # stage 1 and the control of the same weighted fit read it
    assert b.tokenizer_dir("amazon-beauty", "mmq-ctl:1,sharpness=0.03/title+categories") == tok
    assert sp.fit_name("mmq:1,sharpness=0.03@0.1~0.3/title+categories") == (
        "mmq-ft:1,sharpness=0.03/title+categories"
    )
    run = b.run_folder("amazon-beauty", spec, 0).parent.name
    assert run == "mmq-ft-1-sharpness0.03-title+categories-t0.07"
    for bad, says in (
        ("rq-vae:6,sharpness=0.1", "a setting of mmq"),
        ("mmq-ft:1,pca=64", "a setting of opq and pq"),
        ("opq:16,pca=0", "VALUE >= 0"),
        ("opq:16,pca=12.5", "whole number"),
        ("mmq-ft:1,temperature=0.1", "KEY one of"),
        ("mmq-ft:1,sharpness=-0.1", "VALUE >= 0"),
        ("mmq-ft:1,sharpness=x", "VALUE >= 0"),
        ("mmq-ft:1,sharpness", "KEY one of"),
        ("mmq-ft:1,sharpness=0.1,sharpness=0.2", "once each"),
        ("mmq-ft-no-sharpness:1,sharpness=0.1", "drops the term"),
    ):
        with pytest.raises(SystemExit, match=says):
            sp.parse_ids(bad)

    fitted = []

    def fake_tokenize(dataset, method, levels, out, seed=0, modalities=None, settings=None):
        fitted.append((method, levels, out.parent.name, modalities, settings))
        return out

    monkeypatch.setattr(b, "tokenize", fake_tokenize)
    monkeypatch.setattr(b, "retrieve", lambda *a, **kw: {})
    ranked = []
    monkeypatch.setattr(bench_ranking_ids, "rank", lambda *a, **kw: ranked.append(a[3]) or {})
    b.runs_for("amazon-beauty", spec, [0])
    bench_ranking_ids.runs_for("amazon-beauty", spec, [0])
    want = ("mmq-ft", 1, tok.parent.name, ["title", "categories"], {"gate_sharpness": 0.03})
    assert fitted == [want] * 2
    # the ranker's runs are named as the fit is (no ',' or '=' in a folder name)
    assert ranked[0].parent.name == "mmq-ft-1-sharpness0.03-title+categories"
    assert bench_ranking_ids.ranking_folder(
        "d", "mmq-ft:1,sharpness=0.030@0.1/title+categories"
    ) == (bench_ranking_ids.ranking_folder("d", "mmq-ft:1,sharpness=0.03/title+categories"))
    assert bench_ranking_ids.ranking_folder("d", "din").name == "din"


def test_a_tokenizer_folder_made_with_other_gate_weights_is_not_reused(real_data_dir, tmp_path):
    """bench_parallel_loss.tokenize fits MMQ with the settings it is given (recorded in the
    run's config) and refuses a finished folder made with another weight."""
    from bench_parallel_loss import tokenize

    from mmsid.quantizers import Tokenizer

    out, short = tmp_path / "tok", {"epochs": 2, "finetune_epochs": 1, "finetune_pairs": 1000}
    tokenize("lfm2k-mm", "mmq-ft", 1, out, settings={**short, "gate_sharpness": 0.0})
    assert yaml.safe_load((out / "config.yaml").read_text())["gate_sharpness"] == 0.0
    assert Tokenizer.load(out / "tokenizer.pt").cfg.gate_sharpness == 0.0
    again = tokenize("lfm2k-mm", "mmq-ft", 1, out, settings={**short, "gate_sharpness": 0.0})
    assert again == out
    with pytest.raises(SystemExit, match="'gate_sharpness': 0.03"):
        tokenize("lfm2k-mm", "mmq-ft", 1, out, settings={**short, "gate_sharpness": 0.03})


def test_a_tokenizer_folder_made_on_another_input_is_not_reused(real_data_dir, tmp_path):
    """bench_parallel_loss.tokenize records the input modalities and refuses a finished folder
    made on another input, in either direction."""
    from bench_parallel_loss import tokenize

    out = tokenize("lfm2k-mm", "rq-kmeans", 1, tmp_path / "tok", modalities=["text_minilm"])
    assert yaml.safe_load((out / "config.yaml").read_text())["modalities"] == ["text_minilm"]
    assert tokenize("lfm2k-mm", "rq-kmeans", 1, out, modalities=["text_minilm"]) == out
    with pytest.raises(SystemExit, match="'modalities': \\[\\]"):
        tokenize("lfm2k-mm", "rq-kmeans", 1, out)


def test_a_spec_sets_the_retrievers_dropout_in_its_own_folder(monkeypatch):
    """``~D`` in an ID spec: the retriever trains at dropout D in a folder of its own, on the
    same tokenizer as the spec without it; a bad value is refused before anything runs."""
    import bench_parallel_ids as b
    import id_specs as sp

    spec, plain = "opq:16@0.14~0.5/title+categories", "opq:16@0.14/title+categories"
    assert sp.parse_ids(spec) == sp.parse_ids(plain) == ("opq", 16, 0.14)
    assert (sp.spec_dropout(spec), sp.spec_dropout(plain)) == (0.5, None)
    assert b.tokenizer_dir("d", spec) == b.tokenizer_dir("d", plain)
    assert b.run_folder("d", spec, 1).parent.name == "opq-16-title+categories-t0.14-dropout0.5"
    assert b.run_folder("d", plain, 1).parent.name == "opq-16-title+categories-t0.14"
    for bad in ("opq:16~1.5", "opq:16~x", "opq:16@0.14~"):
        with pytest.raises(SystemExit, match="dropout in"):
            sp.parse_ids(bad)
    got = []
    monkeypatch.setattr(b, "tokenize", lambda *a, **kw: a[3])
    monkeypatch.setattr(b, "retrieve", lambda *a, **kw: got.append(kw["dropout"]) or {})
    b.runs_for("d", spec, [0])
    b.runs_for("d", plain, [0])
    assert got == [0.5, None]


def test_the_retrievers_dropout_reaches_its_config_and_guards_its_folder(tmp_path, monkeypatch):
    """bench_parallel_loss.retrieve trains parallel-sid at the asked temperature and dropout
    (the run itself stubbed: it records its config as run_retrieve does); a finished folder
    asked for at another dropout is refused, never reused."""
    import dataclasses

    import bench_parallel_loss

    import mmsid.retrieval.run

    made = []

    def fake_run(cfg, progress=False):
        made.append(cfg)
        out = Path(cfg.out)
        out.mkdir(parents=True)
        (out / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg)))
        (out / "metrics.json").write_text("{}")
        z = {f"{s}_{k}": np.zeros(1) for s in ("valid", "test") for k in ("rank", "target")}
        np.savez(out / "ranks.npz", **z)

    monkeypatch.setattr(mmsid.retrieval.run, "run_retrieve", fake_run)
    sids, out = tmp_path / "tok", tmp_path / "run"
    kw = dict(loss="item", sids=sids, out=out, temperature=0.14)
    bench_parallel_loss.retrieve("d", "parallel-sid", 0, dropout=0.5, **kw)
    p = made[0].parallel
    assert (p.dropout, p.temperature, p.d_model) == (
        0.5,
        0.14,
        bench_parallel_loss.MODEL["d_model"],
    )
    bench_parallel_loss.retrieve("d", "parallel-sid", 0, dropout=0.5, **kw)  # finished: reused
    assert len(made) == 1
    with pytest.raises(SystemExit, match="made with dropout 0.5"):
        bench_parallel_loss.retrieve("d", "parallel-sid", 0, **kw)  # MODEL's 0.2 asked
