from __future__ import annotations

import json

from click.testing import CliRunner

from mmsid.cli import main


def test_describe_json(real_data_dir):
    r = CliRunner().invoke(main, ["data", "describe", "lfm2k-mm", "--json",
                                  "--data-dir", str(real_data_dir)])
    assert r.exit_code == 0, r.output
    stats = json.loads(r.output)
    assert (stats["users"], stats["items"], stats["interactions"]) == (1858, 1425, 56_345)
    assert stats["modalities"]["audio_whisper"]["dim"] == 512


def test_describe_table_and_bad_name(real_data_dir):
    r = CliRunner().invoke(main, ["data", "describe", "ml100k-mm", "--data-dir",
                                  str(real_data_dir)])
    assert r.exit_code == 0 and "100,000" in r.output and "modality image" in r.output
    r = CliRunner().invoke(main, ["data", "describe", "nope"])
    assert r.exit_code == 2 and "unknown data set 'nope'" in r.output


def test_tokenize_writes_run_folder(real_data_dir, tmp_path):
    import pandas as pd

    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["tokenize", "--dataset", "lfm2k-mm", "--method", "rq-vae",
                                  "--codebook-size", "64", "--epochs", "30",
                                  "--data-dir", str(real_data_dir), "--out", str(out)])
    assert r.exit_code == 0, r.output
    for name in ("sids.parquet", "tokenizer.pt", "metrics.json", "config.yaml",
                 "code_usage.png", "loss_curve.png"):
        assert (out / name).exists(), name
    m = json.loads((out / "metrics.json").read_text())
    assert m["unique_after_collision_level"] == 1425 and len(m["utilization"]) == 3
    df = pd.read_parquet(out / "sids.parquet")
    assert len(df) == 1425 and len(df["sid"].iloc[0]) == 4
