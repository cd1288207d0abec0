from __future__ import annotations

import json

from click.testing import CliRunner

from mmsid.cli import main


def test_describe_json(real_data_dir):
    r = CliRunner().invoke(
        main, ["data", "describe", "lfm2k-mm", "--json", "--data-dir", str(real_data_dir)]
    )
    assert r.exit_code == 0, r.output
    stats = json.loads(r.output)
    assert (stats["users"], stats["items"], stats["interactions"]) == (1858, 1425, 56_345)
    assert stats["modalities"]["audio_whisper"]["dim"] == 512


def test_describe_table_and_bad_name(real_data_dir):
    r = CliRunner().invoke(
        main, ["data", "describe", "ml100k-mm", "--data-dir", str(real_data_dir)]
    )
    assert r.exit_code == 0 and "100,000" in r.output and "modality image" in r.output
    r = CliRunner().invoke(main, ["data", "describe", "nope"])
    assert r.exit_code == 2 and "unknown data set 'nope'" in r.output


def test_tokenize_writes_run_folder(real_data_dir, tmp_path):
    import pandas as pd

    out = tmp_path / "run"
    r = CliRunner().invoke(
        main,
        [
            "tokenize",
            "--dataset",
            "lfm2k-mm",
            "--method",
            "rq-vae",
            "--codebook-size",
            "64",
            "--epochs",
            "30",
            "--data-dir",
            str(real_data_dir),
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    for name in (
        "sids.parquet",
        "tokenizer.pt",
        "metrics.json",
        "config.yaml",
        "code_usage.png",
        "loss_curve.png",
    ):
        assert (out / name).exists(), name
    m = json.loads((out / "metrics.json").read_text())
    assert m["unique_after_collision_level"] == 1425 and len(m["utilization"]) == 3
    df = pd.read_parquet(out / "sids.parquet")
    assert len(df) == 1425 and len(df["sid"].iloc[0]) == 4


def test_rank_din_sid_and_bad_sid_table(real_data_dir, tmp_path):
    import numpy as np

    from mmsid.ids import SIDTable

    tok = tmp_path / "tok"
    r = CliRunner().invoke(
        main,
        [
            "tokenize",
            "--dataset",
            "lfm2k-mm",
            "--method",
            "psrq",
            "--codebook-size",
            "32",
            "--per-modality",
            "--collision-cap",
            "2000",
            "--data-dir",
            str(real_data_dir),
            "--out",
            str(tok),
        ],
    )
    assert r.exit_code == 0, r.output
    from mmsid.ids import load_sid_sets

    sets = load_sid_sets(tok / "sid_sets.parquet")
    assert list(sets) == ["joint", "text_minilm", "audio_vggish", "audio_whisper"]
    np.testing.assert_array_equal(sets["joint"].sids, SIDTable.load(tok / "sids.parquet").sids)
    out = tmp_path / "rank"
    r = CliRunner().invoke(
        main,
        [
            "rank",
            "--dataset",
            "lfm2k-mm",
            "--model",
            "mcca",
            "--sids",
            str(tok / "sid_sets.parquet"),
            "--epochs",
            "1",
            "--data-dir",
            str(real_data_dir),
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["sid_sets"] == list(sets) and m["parameters"] > 0
    assert set(m["test"]) == {"all", "head", "long_tail", "cold", "rare<30"}
    assert m["test"]["all"]["auc"] > 0.7
    assert (out / "curves.png").exists() and (out / "model.pt").exists()
    # a SID table that misses catalogue items is refused with a message naming the file
    t = SIDTable.load(tok / "sids.parquet")
    SIDTable(t.item_ids[:-5], t.codes[:-5], t.collision[:-5], codebook_size=32).save(
        tmp_path / "short.parquet"
    )
    r = CliRunner().invoke(
        main,
        [
            "rank",
            "--dataset",
            "lfm2k-mm",
            "--model",
            "din-sid",
            "--sids",
            str(tmp_path / "short.parquet"),
            "--data-dir",
            str(real_data_dir),
            "--out",
            str(tmp_path / "x"),
        ],
    )
    assert r.exit_code == 2 and "short.parquet: SID table misses 5 catalogue item(s)" in r.output
    r = CliRunner().invoke(
        main,
        [
            "rank",
            "--dataset",
            "lfm2k-mm",
            "--model",
            "mcca",
            "--data-dir",
            str(real_data_dir),
            "--out",
            str(tmp_path / "y"),
        ],
    )
    assert r.exit_code == 2 and "needs --sids" in r.output
    assert np.isfinite(m["test"]["all"]["logloss"])


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path):
    r = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert r.exit_code != 0 and "not an mmsid run folder" in r.output
    assert not (tmp_path / "report.md").exists()


def test_trained_warns_when_a_cap_ended_training(capsys):
    """A time limit or the epoch cap that ended training before early stopping is reported; the
    cap with patience 0 (no early stopping: the plan) and early stopping are not."""
    from mmsid.cli.base import _trained

    for stopped, patience, warns in [
        ("max_minutes", 5, "cut by the time limit after 4 epoch(s)"),
        ("epochs", 5, "reached the epoch cap (4)"),
        ("epochs", 0, None),
        ("early_stopping", 5, None),
    ]:
        _trained({"stopped": stopped, "epochs_run": 4}, "OUT", patience)
        out = capsys.readouterr()
        assert "wrote OUT/metrics.json" in out.out
        assert (warns in out.err) if warns else out.err == ""


def test_tokenize_mmq_gate_options_reach_the_fit(real_data_dir, tmp_path):
    """--gate-sharpness / --gate-balance set MMQ's gate terms (recorded in the run's config;
    sharpness 0 leaves the gates softer than the default), and a negative weight is refused."""
    import numpy as np
    import yaml

    def run(out, *extra):
        return CliRunner().invoke(
            main,
            [
                "tokenize", "--dataset", "lfm2k-mm", "--method", "mmq", "--epochs", "3",
                "--codebook-size", "16", "--collision-cap", "2000", "--data-dir",
                str(real_data_dir), "--device", "cpu",
                "--out", str(out), *extra,
            ],
        )  # fmt: skip

    soft, sharp = tmp_path / "soft", tmp_path / "sharp"
    r = run(soft, "--gate-sharpness", "0", "--gate-balance", "0.3")
    assert r.exit_code == 0, r.output
    cfg = yaml.safe_load((soft / "config.yaml").read_text())
    assert cfg["gate_sharpness"] == 0.0 and cfg["gate_balance"] == 0.3
    assert run(sharp, "--gate-sharpness", "1.0").exit_code == 0
    gates = [json.loads((d / "metrics.json").read_text())["stage1"]["gates"] for d in (soft, sharp)]
    ent = [np.mean([g["entropy"] for g in gs.values()]) for gs in gates]
    assert ent[0] > ent[1]
    r = run(tmp_path / "bad", "--gate-sharpness", "-1")
    assert r.exit_code != 0 and "gate_sharpness" in r.output
    assert not (tmp_path / "bad" / "sids.parquet").exists()
