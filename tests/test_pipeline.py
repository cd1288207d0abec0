"""The main job: config priority and unknown keys, stage caching and resume, the folder
guard, and a report with every method x task x slice cell."""

from __future__ import annotations

import json

import pytest

from mmsid.errors import ConfigError
from mmsid.pipeline import BUDGETS, resolve_config, run


def test_config_priority_defaults_budget_file_cli(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("seed: 5\ntokenizer:\n  epochs: 11\nretrieval:\n  epochs: 7\n  lr: 0.01\n")
    cfg = resolve_config(
        "ml100k-mm",
        "x",
        config_file=str(f),
        cli={"seed": 3},
        sets=["retrieval.epochs=9", "tasks=ranking"],
    )
    assert cfg.tokenizer.epochs == 11  # file over budget preset (30) over default (200)
    assert cfg.retrieval.epochs == 9  # --set over file
    assert cfg.retrieval.lr == 0.01  # file over preset
    assert cfg.retrieval.epoch_samples == BUDGETS["quick"]["retrieval"]["epoch_samples"]
    assert cfg.retrieval.tiger.d_model == 64  # preset over default
    assert cfg.seed == 3 and cfg.tasks == ["ranking"]
    assert cfg.tokenizer.codebook_size == 256  # default untouched
    full = resolve_config("ml100k-mm", "x", cli={"budget": "full"})
    assert full.tokenizer.epochs == 200 and full.retrieval.tiger.d_model == 128


def test_new_settings_keep_existing_run_folders_valid():
    """A run folder is matched by its config hash: a setting added later must leave the hash
    of configs that do not set it unchanged, or every existing run is refused ("holds another
    run") and must start over. Pinned: the hash of the full-budget lfm2k-mm runs made before
    ``tokenizer.modalities`` existed. Change it only with a change that should invalidate runs."""
    from mmsid.pipeline import _run_hash

    assert _run_hash(resolve_config("lfm2k-mm", "x", cli={"budget": "full"})) == "f63157da4e4f8c53"
    chosen = resolve_config(
        "lfm2k-mm", "x", cli={"budget": "full"}, sets=["tokenizer.modalities=text_minilm"]
    )
    assert _run_hash(chosen) != "f63157da4e4f8c53"


def test_unknown_keys_name_the_closest(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("retrieval:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match="unknown key 'epoch'.*did you mean 'epochs'"):
        resolve_config("ml100k-mm", "x", config_file=str(f))
    with pytest.raises(ConfigError, match="unknown key 'tokeniser'.*'tokenizer'"):
        resolve_config("ml100k-mm", "x", sets=["tokeniser.levels=2"])
    with pytest.raises(ConfigError, match="unknown method"):
        resolve_config("ml100k-mm", "x", cli={"methods": "rq-kmeans,vq"})
    with pytest.raises(ConfigError, match="unknown task"):
        resolve_config("ml100k-mm", "x", cli={"tasks": "retrieval,search"})
    with pytest.raises(ConfigError, match="expected int"):
        resolve_config("ml100k-mm", "x", sets=["seed=abc"])


TINY = [
    "tokenizer.codebook_size=32",
    "tokenizer.epochs=2",
    "tokenizer.finetune_epochs=1",
    "retrieval.epochs=1",
    "retrieval.epoch_samples=300",
    "retrieval.valid_sample=100",
    "retrieval.sasrec_epochs=1",
    "retrieval.tiger.d_model=32",
    "retrieval.tiger.enc_layers=1",
    "retrieval.tiger.dec_layers=1",
    "retrieval.tiger.d_ff=64",
    "retrieval.tiger.n_heads=2",
    "retrieval.tiger.d_head=16",
]


def test_pipeline_caches_stages_and_reports_every_cell(real_data_dir, tmp_path):
    out = tmp_path / "run"
    cfg = resolve_config(
        "lfm2k-mm",
        str(out),
        cli={"methods": "mmq,mmq+ft", "data_dir": str(real_data_dir)},
        sets=TINY,
    )
    r1 = run(cfg, progress=False)
    assert {s["status"] for s in r1["stages"]} == {"ran"}
    names = [s["stage"] for s in r1["stages"]]
    # mmq and mmq+ft share one tokenizer run (stage-1 IDs are written before fine-tuning)
    assert "tokenize-mmq" not in names and "tokenize-mmq+ft" in names
    report = (out / "report.md").read_text()
    for model in (
        "tiger + mmq",
        "tiger + mmq+ft",
        "sasrec (item ids)",
        "din (item ids)",
        "din + mmq SID",
        "din + mmq+ft SID",
    ):
        assert model in report
    for task in ("retrieval", "ranking"):
        for name, row in r1[task].items():
            for s in ("all", "head", "long_tail", "cold"):
                assert s in row["test"], (task, name, s)
    assert (out / "metrics_by_method.png").exists() and (out / "config.yaml").exists()

    r2 = run(cfg, progress=False)  # same config: nothing is recomputed
    assert [s["status"] for s in r2["stages"]] == ["cached"] * len(names)
    assert r2["retrieval"] == r1["retrieval"]
    # records written under the first key definition (the device inside the key) still count,
    # and are rewritten under the current key
    import mmsid.pipeline as pl

    old = pl.stage_keys(pl.plan(cfg), legacy=True)
    for name in names:
        rec = out / "stages" / name / "stage.json"
        rec.write_text(json.dumps({**json.loads(rec.read_text()), "key": old[name]}))
    r2a = run(cfg, progress=False)
    assert [s["status"] for s in r2a["stages"]] == ["cached"] * len(names)
    assert json.loads(rec.read_text())["key"] == pl.stage_keys(pl.plan(cfg))[names[-1]]
    # another device reuses every finished stage (a CPU run can be continued on a GPU)
    other = resolve_config(
        "lfm2k-mm",
        str(out),
        cli={"methods": "mmq,mmq+ft", "data_dir": str(real_data_dir), "device": "meta"},
        sets=TINY,
    )
    r2b = run(other, progress=False)
    assert [s["status"] for s in r2b["stages"]] == ["cached"] * len(names)

    # a changed retrieval setting re-runs retrieval only; it needs --resume in this folder
    cfg3 = resolve_config(
        "lfm2k-mm",
        str(out),
        cli={"methods": "mmq,mmq+ft", "data_dir": str(real_data_dir)},
        sets=[*TINY, "retrieval.beam=25"],
    )
    with pytest.raises(ConfigError, match="holds another run"):
        run(cfg3, progress=False)
    r3 = run(cfg3, resume=True, progress=False)
    status = {s["stage"]: s["status"] for s in r3["stages"]}
    assert all(v == ("ran" if k.startswith("retrieval") else "cached") for k, v in status.items())
    assert json.loads((out / "results.json").read_text())["config_hash"] == r3["config_hash"]


def test_interrupted_stage_is_rerun(real_data_dir, tmp_path, monkeypatch):
    """A stage killed mid-way leaves a 'running' record; the next run redoes it and keeps
    the finished ones."""
    import mmsid.pipeline as pl

    out = tmp_path / "run"
    cfg = resolve_config(
        "lfm2k-mm",
        str(out),
        cli={"methods": "rq-kmeans", "tasks": "ranking", "data_dir": str(real_data_dir)},
        sets=[*TINY, "ranking.din=false"],
    )
    real_plan = pl.plan

    def plan_that_dies(c):
        stages = real_plan(c)

        def boom(folder):
            raise KeyboardInterrupt

        stages[-1].run = boom
        return stages

    monkeypatch.setattr(pl, "plan", plan_that_dies)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, progress=False)
    monkeypatch.setattr(pl, "plan", real_plan)
    # the report written after the last finished stage shows the run in progress
    partial = json.loads((out / "results.json").read_text())
    assert not partial["complete"] and partial["codebook"]["rq-kmeans"]["utilization"]
    assert [s["status"] for s in partial["stages"]] == ["ran", "ran", "pending"]
    assert "In progress: 2 of 3 stages done" in (out / "report.md").read_text()
    # refreshed from another shell: the interrupted stage reads as started, nothing runs
    snap = pl.refresh(out)
    assert [s["status"] for s in snap["stages"]] == ["done", "done", "started"]
    assert snap["ranking"] == {} and snap["command"] == "mmsid.run(config)"
    with pytest.raises(ConfigError, match="not an mmsid run folder"):
        pl.refresh(tmp_path)

    r = run(cfg, progress=False)
    status = {s["stage"]: s["status"] for s in r["stages"]}
    assert status == {
        "features": "cached",
        "tokenize-rq-kmeans": "cached",
        "ranking-din-sid-rq-kmeans": "ran",
    }
    assert r["complete"] and "In progress" not in (out / "report.md").read_text()
    assert pl.refresh(out)["ranking"] == r["ranking"]


def test_chosen_modalities_reach_the_tokenizers(real_data_dir, tmp_path):
    """tokenizer.modalities reaches features and every tokenizer; with a single modality
    (a text-only catalogue) MCCA still runs, over PSRQ's joint set."""
    from mmsid.errors import DataError
    from mmsid.pipeline import plan

    common = {"methods": "psrq", "tasks": "ranking", "data_dir": str(real_data_dir)}
    default = plan(resolve_config("lfm2k-mm", str(tmp_path / "a"), cli=common, sets=TINY))
    assert all("modalities" not in st.config for st in default)  # earlier runs' keys hold
    out = tmp_path / "run"
    cfg = resolve_config(
        "lfm2k-mm",
        str(out),
        cli=common,
        sets=[*TINY, "ranking.din=false", "tokenizer.modalities=text_minilm"],
    )
    r = run(cfg, progress=False)
    feats = json.loads((out / "stages" / "features" / "metrics.json").read_text())
    tok = json.loads((out / "stages" / "tokenize-psrq" / "metrics.json").read_text())
    assert list(feats["modalities"]) == ["text_minilm"] and tok["modalities"] == ["text_minilm"]
    assert tok["sid_sets"] == ["joint"]
    mcca = json.loads((out / "stages" / "ranking-mcca-psrq" / "metrics.json").read_text())
    assert mcca["sid_sets"] == ["psrq"]  # one set: the joint IDs
    assert r["ranking"]["mcca + psrq"]["test"]["all"]["auc"] > 0.6

    bad = resolve_config(
        "lfm2k-mm", str(tmp_path / "bad"), cli=common, sets=["tokenizer.modalities=text,poster"]
    )
    with pytest.raises(DataError, match="no modality.*available"):
        run(bad, progress=False)
