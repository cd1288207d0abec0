"""The main job: config priority and unknown keys, stage caching and resume, the folder
guard, and a report with every method x task x slice cell."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmsid.errors import ConfigError
from mmsid.pipeline import BUDGETS, resolve_config, run
from mmsid.retrieval.config import RetrieveConfig


def test_config_priority_defaults_budget_file_cli(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("seeds: [5]\ntokenizer:\n  epochs: 11\nretrieval:\n  epochs: 7\n  lr: 0.01\n")
    cfg = resolve_config(
        "ml100k-mm",
        "x",
        config_file=str(f),
        cli={"seeds": "3,4"},
        sets=["retrieval.epochs=9", "tasks=ranking", "protocol.cold_fraction=0.1"],
    )
    assert cfg.tokenizer.epochs == 11  # file over budget preset (30) over default (200)
    assert cfg.retrieval.epochs == 9  # --set over file
    assert cfg.retrieval.lr == 0.01  # file over preset
    assert cfg.retrieval.sasrec_epochs == BUDGETS["quick"]["retrieval"]["sasrec_epochs"]
    assert cfg.retrieval.tiger.d_model == 64  # preset over default
    assert cfg.seeds == [3, 4] and cfg.tasks == ["ranking"]
    assert cfg.protocol.cold_fraction == 0.1 and cfg.protocol.seed == 0
    assert cfg.tokenizer.codebook_size == 256  # default untouched
    full = resolve_config("ml100k-mm", "x", cli={"budget": "full"})
    assert full.tokenizer.epochs == 200 and full.retrieval.tiger.d_model == 128
    # parallel-sid: the measured settings, not RPG's, and the same as `mmsid retrieve`'s; the
    # quick preset changes only its size
    par = full.retrieval.parallel
    assert (par.d_model, par.d_ff, par.dropout, par.temperature) == (256, 512, 0.2, 0.07)
    assert par == RetrieveConfig(dataset="ml100k-mm").parallel
    par = cfg.retrieval.parallel
    assert (par.d_model, par.d_ff, par.dropout, par.temperature) == (64, 256, 0.2, 0.07)
    assert full.tokenizer.levels == 0  # residual IDs as long as MMQ's


def test_config_file_sections_per_data_set(tmp_path):
    """A file's ``datasets.NAME`` applies to that data set only, above the file's own keys and
    below the command line; its budget is the file's (a section cannot set one)."""
    f = tmp_path / "c.yaml"
    f.write_text(
        "budget: full\ntokenizer:\n  epochs: 11\ndatasets:\n  amazon-beauty:\n"
        "    tokenizer:\n      modalities: [title, categories]\n      epochs: 12\n"
    )
    beauty = resolve_config("amazon-beauty", "x", config_file=str(f))
    assert beauty.tokenizer.modalities == ["title", "categories"]
    assert beauty.tokenizer.epochs == 12 and beauty.budget == "full"
    ml = resolve_config("ml100k-mm", "x", config_file=str(f))
    assert ml.tokenizer.modalities == [] and ml.tokenizer.epochs == 11
    cli = resolve_config("amazon-beauty", "x", config_file=str(f), sets=["tokenizer.epochs=3"])
    assert cli.tokenizer.epochs == 3 and cli.tokenizer.modalities == ["title", "categories"]
    # the committed main job reads amazon-beauty's two views, the other data sets' defaults
    main = str(Path(__file__).parents[1] / "benchmarks" / "configs" / "main.yaml")
    assert resolve_config("amazon-beauty", "x", config_file=main).tokenizer.modalities == [
        "title",
        "categories",
    ]
    assert (
        resolve_config("amazon-beauty", "x", config_file=main).tokenizer.mmq_gate_sharpness == 0.01
    )
    assert resolve_config("lfm2k-mm", "x", config_file=main).tokenizer.modalities == []
    default = resolve_config("lfm2k-mm", "x").tokenizer.mmq_gate_sharpness  # the others' default
    assert resolve_config("lfm2k-mm", "x", config_file=main).tokenizer.mmq_gate_sharpness == default
    assert (
        resolve_config("ml100k-mm", "x", config_file=main).tokenizer.mmq_gate_sharpness == default
    )
    for bad in ("datasets: [amazon-beauty]\n", "datasets:\n  amazon-beauty:\n    budget: quick\n"):
        f.write_text(bad)
        with pytest.raises(ConfigError, match="'datasets' maps each data set name"):
            resolve_config("amazon-beauty", "x", config_file=str(f))
    f.write_text("datasets:\n  amazon-beauty:\n    tokeniser: {levels: 2}\n")
    with pytest.raises(ConfigError, match="datasets.amazon-beauty: unknown key 'tokeniser'"):
        resolve_config("amazon-beauty", "x", config_file=str(f))


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
        resolve_config("ml100k-mm", "x", sets=["seeds=abc"])
    with pytest.raises(ConfigError, match="distinct"):
        resolve_config("ml100k-mm", "x", cli={"seeds": "1,1"})
    with pytest.raises(ConfigError, match="cold_fraction"):
        resolve_config("ml100k-mm", "x", sets=["protocol.cold_fraction=1.5"])


def test_plan_of_mmq_ablations_and_equal_length_ids():
    """mmq-<ablation> methods are stage-1 fits of their own with the ablation set; mmq, mmq+ft
    and its control share one stage and read its three SID files; tokenizer.levels 0 makes the
    residual tokenizers as long as MMQ's SID (6 codes on text + image), named so."""
    from mmsid.pipeline.plan import plan

    cfg = resolve_config(
        "ml100k-mm",
        "runs/x",
        cli={
            "methods": "rq-kmeans,psrq,mmq,mmq+ft,mmq+ft-control,mmq-no-orth,mmq-one-expert",
            "tasks": "ranking",
        },
        sets=["tokenizer.levels=0", "ranking.mcca=false"],
    )
    stages = {st.name: st for st in plan(cfg)}
    tok = {n.split("tokenize-")[1]: st for n, st in stages.items() if "/tokenize-" in n}
    assert set(tok) == {"rq-kmeans", "psrq", "mmq+ft", "mmq-no-orth", "mmq-one-expert"}
    assert tok["rq-kmeans"].config["levels"] == tok["psrq"].config["levels"] == 6
    assert "ablation" not in tok["rq-kmeans"].config  # MMQ settings stay out of others' keys
    assert tok["mmq-no-orth"].config["ablation"] == "no-orth"
    assert tok["mmq-one-expert"].config["finetune"] is None
    assert tok["mmq+ft"].config["finetune_control"] is True
    reads = {
        st.row: st.config["sids"]["joint"]
        for st in stages.values()
        if st.name.startswith("seed0/ranking-din-sid")
    }
    files = {row.split("(")[0].removeprefix("din + "): p.split("/")[-1] for row, p in reads.items()}
    assert files["mmq"] == "sids_stage1.parquet"
    assert files["mmq+ft"] == "sids.parquet"
    assert files["mmq+ft-control"] == "sids_control.parquet"
    rows = set(reads)
    assert "din + rq-kmeans(L=6) SID" in rows and "din + psrq(alpha=0.25, L=6) SID" in rows
    assert "din + mmq-one-expert(1 shared + 1 specific/modality) SID" in rows


def test_min_epochs_reaches_trained_retrievers_only():
    """retrieval.min_epochs is in the stage config (so the key) of every trained retriever
    (SASRec, parallel-SID) and of no deterministic baseline; changing it re-keys exactly the
    trained retrievers; the quick budget sets 0 and a negative value is refused."""
    from mmsid.pipeline.plan import plan

    def stages(*sets):
        cfg = resolve_config("ml100k-mm", "x", cli={"tasks": "retrieval"}, sets=list(sets))
        return {st.name: st for st in plan(cfg)}

    full = stages("budget=full")
    trained = {n for n, st in full.items() if "/retrieval-" in n}
    baselines = {"retrieval-popularity", "retrieval-content-knn"}
    assert baselines <= set(full) and any("sasrec" in n for n in trained)
    assert any("parallel-sid" in n for n in trained)
    for n in trained:
        assert full[n].config["min_epochs"] == 25, n
    for n in baselines:
        assert "min_epochs" not in full[n].config, n
    other = stages("budget=full", "retrieval.min_epochs=40")
    changed = {n for n in full if full[n].config != other[n].config}
    assert changed == trained
    quick = stages("budget=quick")
    assert {quick[n].config["min_epochs"] for n in trained} == {0}
    with pytest.raises(ConfigError, match="retrieval.min_epochs"):
        stages("retrieval.min_epochs=-1")


TINY = [
    "tokenizer.levels=3",  # not 0 (MMQ's length): 3 levels keep these runs seconds long
    "tokenizer.codebook_size=32",
    "tokenizer.epochs=2",
    "tokenizer.finetune_epochs=1",
    "tokenizer.finetune_pairs=2000",
    "retrieval.epochs=1",
    "retrieval.epoch_samples=300",
    "retrieval.valid_sample=100",
    "retrieval.sasrec_epochs=1",
    "ranking.epochs=1",
    "retrieval.tiger.d_model=32",
    "retrieval.tiger.enc_layers=1",
    "retrieval.tiger.dec_layers=1",
    "retrieval.tiger.d_ff=64",
    "retrieval.tiger.n_heads=2",
    "retrieval.tiger.d_head=16",
    "retrieval.models=parallel-sid,tiger",
    "retrieval.parallel.d_model=32",
    "retrieval.parallel.d_ff=64",
    "retrieval.parallel.n_layers=1",
]


def test_pipeline_caches_stages_and_reports_every_cell(real_data_dir, tmp_path):
    """Two seeds, every stage guarded: each training stage records what it trained on and
    the records hold no evaluated interaction and no cold item."""
    import numpy as np

    from mmsid.data import load_dataset
    from mmsid.protocol import build_protocol

    out = tmp_path / "run"
    cfg = resolve_config(
        "lfm2k-mm",
        str(out),
        cli={
            "methods": "mmq,mmq+ft,mmq+ft-control",
            "data_dir": str(real_data_dir),
            "seeds": "0,1",
        },
        sets=TINY,
    )
    r1 = run(cfg, progress=False)
    assert {s["status"] for s in r1["stages"]} == {"ran"}
    names = [s["stage"] for s in r1["stages"]]
    # mmq, mmq+ft and its control share one tokenizer run (stage-1 IDs are written before
    # fine-tuning, the control's beside the fine-tuned ones)
    assert "seed0/tokenize-mmq" not in names and "seed1/tokenize-mmq+ft" in names
    assert not any("tokenize-mmq+ft-control" in n for n in names)
    ctl = out / "stages" / "seed0" / "tokenize-mmq+ft"
    assert {"sids.parquet", "sids_stage1.parquet", "sids_control.parquet"} <= {
        f.name for f in ctl.iterdir()
    }
    report = (out / "report.md").read_text()
    mmq = "mmq(2 shared + 2 specific/modality)"
    assert "experts (mean over seeds" in report and "its control (behavior weight 0" in report
    # issue 17's per-expert report: routed share and gate entropy per group, and its plot
    assert "| expert | gate mass | routed share | code utilization | perplexity |" in report
    assert "Gate entropy: shared " in report and (out / "mmq_experts.png").is_file()
    for model in (
        f"tiger + {mmq}",
        "tiger + mmq+ft(",
        "parallel-sid + mmq+ft-control(",
        "din + mmq+ft-control(",
        f"parallel-sid + {mmq}",
        "sasrec (item ids)",
        "din (item ids)",
        f"din + {mmq} SID",
        "popularity",
        "content-knn",
    ):
        assert model in report
    assert "has no time order" in report and "Best on all test users" in report
    for task in ("retrieval", "ranking"):
        for name, row in r1[task].items():
            for s in ("all", "head", "long_tail", "cold", "rare<30"):
                assert s in row["test"], (task, name, s)
            if not row["deterministic"]:
                assert row["seeds"] == [0, 1], name
        comp = r1["comparisons"][task]
        assert comp["best"] in r1[task] and comp["vs_reference"]
        d = comp["vs_reference"]["popularity"]["all"]
        assert d["lo"] <= d["diff"] <= d["hi"]
    # every trained retriever against content-kNN, by slice: a paired mean difference is the
    # difference of the two rows' means on that slice (cold included), and it is in the report
    vs_content = r1["comparisons"]["retrieval"]["vs_content"]
    trained = {n for n, row in r1["retrieval"].items() if not row["deterministic"]}
    assert set(vs_content) == trained and "sasrec (item ids) + content" in trained
    knn = r1["retrieval"]["content-knn"]["test"]
    for name, by_slice in vs_content.items():
        for sl in ("all", "cold"):
            gap = (
                r1["retrieval"][name]["test"][sl]["recall@10"]["mean"]
                - knn[sl]["recall@10"]["mean"]
            )
            assert by_slice[sl]["diff"] == pytest.approx(gap, abs=1e-9), (name, sl)
    assert "recall@10 minus content-knn's, paired bootstrap" in report
    assert "vs_content" not in r1["comparisons"]["ranking"]
    # issue 17's pairs: each MMQ + fine-tuning row minus the other SID rows of its model and
    # scoring (stage 1 and the control here), paired on the same users
    pairs = {task: r1["comparisons"][task]["mmq_vs"] for task in ("retrieval", "ranking")}
    assert set(pairs["ranking"]) == {"din + mmq+ft(2 shared + 2 specific/modality) SID"}
    ft = "parallel-sid + mmq+ft(2 shared + 2 specific/modality)"
    assert set(pairs["retrieval"]) == {
        ft,
        f"{ft} + content",
        "tiger + mmq+ft(2 shared + 2 specific/modality)",
    }
    for task, by_row in pairs.items():
        main = "recall@10" if task == "retrieval" else "auc"
        for a, vs in by_row.items():
            want = {a.replace("mmq+ft(", "mmq("), a.replace("mmq+ft(", "mmq+ft-control(")}
            assert set(vs) == want, (a, set(vs))
            if task == "retrieval":  # a paired mean difference is the difference of the means
                for b, d in vs.items():
                    gap = (
                        r1[task][a]["test"]["all"][main]["mean"]
                        - r1[task][b]["test"]["all"][main]["mean"]
                    )
                    assert d["all"]["diff"] == pytest.approx(gap, abs=1e-9)
                    assert d["all"]["lo"] <= d["all"]["diff"] <= d["all"]["hi"]
            assert f"{a}: {main} minus each other SID row's of the same model" in report
    # content fusion: every parallel-sid and SASRec row has a "+ content" row (the same runs,
    # their fused metrics and ranks), TIGER's none
    ret, fused_rows = r1["retrieval"], 0
    for name, row in ret.items():
        if name.endswith(" + content") or name.startswith(("tiger", "popularity", "content")):
            assert f"{name} + content" not in ret
            continue
        f = ret[f"{name} + content"]
        assert f["stages"] == row["stages"] and f["ranks"] == "fused_ranks.npz"
        runs = [json.loads((out / "stages" / s / "metrics.json").read_text()) for s in f["stages"]]
        chosen = [{k: m["fused"][k] for k in ("weight", "new_item_bias")} for m in runs]
        assert f["fusion"] == chosen
        want = np.mean([m["fused"]["test"]["all"]["recall@10"] for m in runs])
        assert f["test"]["all"]["recall@10"]["mean"] == pytest.approx(want)
        assert f"{name} + content" in r1["comparisons"]["retrieval"]["vs_reference"]
        fused_rows += 1
    assert fused_rows >= 3 and "`+ content`: the same trained models" in report
    for f in ("retrieval_vs_item_ids.png", "ranking_auc.png", "coherence_by_level.png"):
        assert (out / f).exists(), f
    # the guard, again, from the records on disk
    p = build_protocol(load_dataset("lfm2k-mm", real_data_dir), cfg.protocol)
    guarded = 0
    for rec in (out / "stages").rglob("trained_on.npz"):
        z = np.load(rec, allow_pickle=False)
        assert str(z["fingerprint"]) == p.fingerprint()
        p.check_training(rows=z["rows"], items=z["items"], what=str(rec))
        guarded += 1
    trained = [n for n in names if "/" in n or n.startswith(("ranking", "retrieval"))]
    assert guarded == len(trained)

    r2 = run(cfg, progress=False)  # same config: nothing is recomputed
    assert [s["status"] for s in r2["stages"]] == ["cached"] * len(names)
    assert r2["retrieval"] == r1["retrieval"]
    # another device reuses every finished stage (a CPU run can be continued on a GPU)
    other = resolve_config(
        "lfm2k-mm",
        str(out),
        cli={
            "methods": "mmq,mmq+ft,mmq+ft-control",
            "data_dir": str(real_data_dir),
            "device": "meta",
            "seeds": "0,1",
        },
        sets=TINY,
    )
    r2b = run(other, progress=False)
    assert [s["status"] for s in r2b["stages"]] == ["cached"] * len(names)
    # a run folder moved elsewhere is the same run: no stage is recomputed
    import shutil

    moved = tmp_path / "elsewhere" / "run"
    shutil.move(out, moved)
    cfg_moved = resolve_config(
        "lfm2k-mm",
        str(moved),
        cli={
            "methods": "mmq,mmq+ft,mmq+ft-control",
            "data_dir": str(real_data_dir),
            "seeds": "0,1",
        },
        sets=TINY,
    )
    r2c = run(cfg_moved, progress=False)
    assert [s["status"] for s in r2c["stages"]] == ["cached"] * len(names)
    assert r2c["retrieval"] == r1["retrieval"]
    shutil.move(moved, out)

    # a changed retrieval setting re-runs the trained retrievers only; it needs --resume here
    cfg3 = resolve_config(
        "lfm2k-mm",
        str(out),
        cli={
            "methods": "mmq,mmq+ft,mmq+ft-control",
            "data_dir": str(real_data_dir),
            "seeds": "0,1",
        },
        sets=[*TINY, "retrieval.beam=25"],
    )
    with pytest.raises(ConfigError, match="holds another run"):
        run(cfg3, progress=False)
    r3 = run(cfg3, resume=True, progress=False)
    status = {s["stage"]: s["status"] for s in r3["stages"]}
    for k, v in status.items():
        base = k.split("/")[-1]
        assert v == ("ran" if base.startswith("retrieval") else "cached"), k
    assert json.loads((out / "results.json").read_text())["config_hash"] == r3["config_hash"]


def test_interrupted_stage_is_rerun(real_data_dir, tmp_path, monkeypatch):
    """A stage killed mid-way leaves a 'running' record; the next run redoes it and keeps
    the finished ones."""
    import mmsid.pipeline.runner as runner

    out = tmp_path / "run"
    cfg = resolve_config(
        "lfm2k-mm",
        str(out),
        cli={"methods": "rq-kmeans", "tasks": "ranking", "data_dir": str(real_data_dir)},
        sets=[*TINY, "ranking.din=false", "ranking.popularity=false"],
    )
    real_plan = runner.plan

    def plan_that_dies(c):
        stages = real_plan(c)

        def boom(folder, progress=False):
            raise KeyboardInterrupt

        stages[-1].run = boom
        return stages

    monkeypatch.setattr(runner, "plan", plan_that_dies)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, progress=False)
    monkeypatch.setattr(runner, "plan", real_plan)
    # the report written after the last finished stage shows the run in progress
    partial = json.loads((out / "results.json").read_text())
    assert not partial["complete"] and partial["codebook"]["rq-kmeans"]["utilization"]
    assert [s["status"] for s in partial["stages"]] == ["ran", "ran", "pending"]
    mid = (out / "report.md").read_text()
    assert "In progress: 2 of 3 stages done" in mid
    # no link to a plot that does not exist yet
    assert "Plots: drawn when every stage is done." in mid and ".png" not in mid
    # refreshed from another shell: the interrupted stage reads as started, nothing runs
    snap = runner.refresh(out)
    assert [s["status"] for s in snap["stages"]] == ["done", "done", "started"]
    assert snap["ranking"] == {} and snap["command"] == "mmsid.run(config)"
    with pytest.raises(ConfigError, match="not an mmsid run folder"):
        runner.refresh(tmp_path)

    r = run(cfg, progress=False)
    status = {s["stage"]: s["status"] for s in r["stages"]}
    assert status == {
        "features": "cached",
        "seed0/tokenize-rq-kmeans": "cached",
        "seed0/ranking-din-sid-rq-kmeans": "ran",
    }
    final = (out / "report.md").read_text()
    assert r["complete"] and "In progress" not in final
    linked = [f for f in ("ranking_auc.png", "coherence_by_level.png") if f"`{f}`" in final]
    assert linked and all((out / f).exists() for f in linked)
    assert runner.refresh(out)["ranking"] == r["ranking"]


def test_chosen_modalities_reach_the_tokenizers(real_data_dir, tmp_path):
    """tokenizer.modalities reaches features and every tokenizer; with a single modality
    (a text-only catalogue) MCCA still runs, over PSRQ's joint set."""
    from mmsid.errors import DataError

    common = {"methods": "psrq", "tasks": "ranking", "data_dir": str(real_data_dir)}
    out = tmp_path / "run"
    cfg = resolve_config(
        "lfm2k-mm",
        str(out),
        cli=common,
        sets=[
            *TINY,
            "ranking.din=false",
            "ranking.popularity=false",
            "tokenizer.modalities=text_minilm",
        ],
    )
    r = run(cfg, progress=False)
    feats = json.loads((out / "stages" / "features" / "metrics.json").read_text())
    st = out / "stages" / "seed0"
    tok = json.loads((st / "tokenize-psrq" / "metrics.json").read_text())
    assert list(feats["modalities"]) == ["text_minilm"] and tok["modalities"] == ["text_minilm"]
    assert tok["sid_sets"] == ["joint"]
    mcca = json.loads((st / "ranking-mcca-psrq" / "metrics.json").read_text())
    assert mcca["sid_sets"] == ["psrq"]  # one set: the joint IDs
    assert r["ranking"]["mcca + psrq(alpha=0.25) sets"]["test"]["all"]["auc"]["mean"] > 0.55

    bad = resolve_config(
        "lfm2k-mm", str(tmp_path / "bad"), cli=common, sets=["tokenizer.modalities=text,poster"]
    )
    with pytest.raises(DataError, match="no modality.*available"):
        run(bad, progress=False)


def test_plan_runs_inputs_first_and_one_row_at_a_time_over_seeds():
    """A run cut short holds complete rows (every seed) of the cheapest stages."""
    from mmsid.pipeline import plan

    cfg = resolve_config("ml100k-mm", "x", cli={"seeds": "0,1,2"})
    names = [s.name for s in plan(cfg)]
    for st in plan(cfg):
        assert all(names.index(i) < names.index(st.name) for i in st.inputs), st.name
    base = [n.split("/")[-1] for n in names]
    for b in set(base):
        at = [i for i, x in enumerate(base) if x == b]
        assert at == list(range(at[0], at[0] + len(at))), b  # its seeds are contiguous
    assert names.index("seed2/retrieval-sasrec") < names.index("seed0/ranking-din")
    assert max(names.index(f"seed{s}/ranking-mcca-psrq") for s in range(3)) < min(
        i for i, n in enumerate(names) if "retrieval-parallel-sid" in n
    )


def test_eta_comes_from_measured_stages_of_the_same_kind():
    """The run's ETA prices each pending stage at what its kind (the same stage of another
    seed) took, and says how many stages have no measured kind yet."""
    from mmsid.pipeline.plan import Stage
    from mmsid.pipeline.runner import eta_text, remaining_seconds

    def st(name):
        return Stage(name, {}, None)

    timed = {"features": 1.0, "seed0/tokenize-rq-vae": 100.0, "seed1/tokenize-rq-vae": 140.0}
    timed["seed0/retrieval-sasrec"] = None  # started, not finished: no measurement
    todo = [st("seed2/tokenize-rq-vae"), st("seed0/retrieval-sasrec"), st("seed1/ranking-din")]
    assert remaining_seconds(todo, timed) == (120.0, 2)
    assert remaining_seconds([], timed) == (0.0, 0)
    assert eta_text(120.0, 2) == "left ~2 min + 2 stages not yet timed"
    assert eta_text(30.0, 0) == "left ~30 s"
    assert eta_text(0.0, 1) == "1 stage not yet timed"
    assert eta_text(0.0, 0) == "left ~0 s"


def test_mmq_pairs_match_rows_of_the_same_model_and_scoring():
    """Issue 17's pairs read each row's tokenizer and model from the plan's stages
    (Stage.method, the stage config's model), not from names: MMQ + fine-tuning is paired with
    every other SID row of its model and scoring (fused with fused), never with item-id rows,
    baselines, MCCA, or another model's rows."""
    from mmsid.pipeline.paired import mmq_pairs
    from mmsid.pipeline.plan import plan

    methods = "rq-vae,psrq,mmq,mmq+ft,mmq+ft-control,mmq-no-orth"
    cfg = resolve_config(
        "ml100k-mm", "x", cli={"methods": methods}, sets=["retrieval.models=parallel-sid,tiger"]
    )
    tasks: dict[str, dict[str, dict]] = {"retrieval": {}, "ranking": {}}
    for st in plan(cfg):
        if st.task:  # as report.collect: one row per task and label, its seeds pooled
            r = tasks[st.task].setdefault(st.row, {"stages": [], "model": st.config["model"]})
            r["stages"].append(st.name)
            r["method"] = st.method
    rows = tasks["retrieval"]
    for r in list(rows):
        if rows[r]["model"] in ("parallel-sid", "sasrec"):  # content fusion's rows
            rows[f"{r} + content"] = {**rows[r], "ranks": "fused_ranks.npz"}
    sid = {
        (t, v["model"], "ranks" in v): v["method"]
        for t, rs in tasks.items()
        for v in rs.values()
        if v["method"]
    }
    assert len(sid) == 4  # parallel-sid alone and fused, tiger, din-sid
    none = {v["model"] for rs in tasks.values() for v in rs.values() if not v["method"]}
    assert none == {"sasrec", "popularity", "content-knn", "din", "mcca"}
    for task, rs in tasks.items():
        pairs = mmq_pairs(rs)
        fts = [r for r, v in rs.items() if v["method"] == "mmq+ft"]
        assert sorted(pairs) == sorted(fts) and len(fts) == (3 if task == "retrieval" else 1)
        for a in fts:
            same = {
                r
                for r, v in rs.items()
                if (v["model"], "ranks" in v) == (rs[a]["model"], "ranks" in rs[a])
            }
            want = {r for r in same if r != a and rs[r]["method"]}
            assert set(pairs[a]) == want, a
            assert {rs[b]["method"] for b in pairs[a]} == set(methods.split(",")) - {"mmq+ft"}


def test_the_report_flags_seeds_that_patience_ended_well_before_the_rest():
    """A seed early stopping ended at under half the task's median epochs is named (its fused
    row's copy once); one the cap or the time limit ended, and later stops, are not."""
    from mmsid.pipeline.report import early_stop_lines

    def row(name, epochs, stopped, fused=False):
        stages = [f"seed{s}/retrieval-{name}" for s in range(len(epochs))]
        r = {"stages": stages, "epochs": epochs, "stopped": stopped}
        return r | ({"ranks": "fused_ranks.npz"} if fused else {})

    es = "early_stopping"
    rows = {
        "a": row("a", [18, 44, 48], [es, es, es]),
        "a + content": row("a", [18, 44, 48], [es, es, es], fused=True),
        "b": row("b", [40, 10, 43], [es, "max_minutes", es]),
        "c": row("c", [21, 41], [es, es]),
    }
    (line,) = [x for x in early_stop_lines(rows) if x]
    assert "median 40.5 epochs" in line
    assert "seed0/retrieval-a (18 epochs)" in line and line.count("retrieval-a") == 1
    assert "retrieval-b" not in line and "retrieval-c" not in line  # time-limited; 21 >= 20.25
    rows["a"]["epochs"][0] = 21
    assert early_stop_lines(rows) == []
