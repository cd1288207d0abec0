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
