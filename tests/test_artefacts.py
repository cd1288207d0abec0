"""Artefacts verified on read: a finished stage's files are sealed by SHA-256; a damaged file
is refused by its reader, and the pipeline recomputes its stage and every stage that read it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmsid import artefacts
from mmsid.errors import DataError
from mmsid.ids import SIDTable
from mmsid.io import load_torch, save_torch


def _garble(path, n=16, at=None):
    """Flip n bytes in the middle of a file (what a bad disk or a partial copy does)."""
    b = bytearray(path.read_bytes())
    at = len(b) // 2 if at is None else at
    for i in range(at, min(at + n, len(b))):
        b[i] ^= 0xFF
    path.write_bytes(bytes(b))


def test_seal_check_reopen(tmp_path):
    import torch

    (tmp_path / "checkpoints").mkdir()
    save_torch(tmp_path / "checkpoints" / "last.pt", {"w": torch.ones(3)})
    (tmp_path / "metrics.json").write_text('{"a": 1}')
    (tmp_path / "ids.sqlite").write_text("store")  # changes after the run: not sealed
    (tmp_path / "stage.json").write_text("{}")
    rec = artefacts.seal(tmp_path)
    assert sorted(rec) == ["checkpoints/last.pt", "metrics.json"]
    assert artefacts.check(tmp_path) == []
    (tmp_path / "ids.sqlite").write_text("new items assigned")
    assert artefacts.check(tmp_path) == []
    load_torch(tmp_path / "checkpoints" / "last.pt")  # matches: read
    _garble(tmp_path / "checkpoints" / "last.pt", n=4, at=60)
    (tmp_path / "metrics.json").unlink()
    problems = artefacts.check(tmp_path)
    assert problems == [
        "checkpoints/last.pt: changed since mmsid wrote it (SHA-256 differs)",
        "metrics.json: missing",
    ]
    with pytest.raises(DataError, match=r"last\.pt: changed since mmsid wrote it.*files\.json"):
        load_torch(tmp_path / "checkpoints" / "last.pt")
    # a stage starting again in the folder drops the damaged file and the seal
    assert artefacts.reopen(tmp_path, quiet=True) == problems
    assert not (tmp_path / "checkpoints" / "last.pt").exists()
    assert not (tmp_path / artefacts.RECORD).exists()
    assert (tmp_path / "ids.sqlite").exists()  # not mmsid's to judge
    assert artefacts.check(tmp_path) is None  # unsealed
    # a damaged record is no record: nothing can be trusted, nothing is deleted by it
    (tmp_path / "metrics.json").write_text("{}")
    (tmp_path / artefacts.RECORD).write_text('{"sha256": ')
    assert artefacts.check(tmp_path) is None
    artefacts.reopen(tmp_path, quiet=True)
    assert (tmp_path / "metrics.json").exists()


def test_a_user_file_without_a_record_is_read_unchecked(tmp_path):
    t = SIDTable(np.arange(4), np.zeros((4, 2), np.int64), np.arange(4), "h", 8)
    t.save(tmp_path / "sids.parquet")
    assert SIDTable.load(tmp_path / "sids.parquet").codes.shape == (4, 2)


def test_garbled_sids_are_refused_and_the_pipeline_recomputes_them(real_data_dir, tmp_path, capsys):
    """16 garbled bytes in a finished tokenizer stage's sids.parquet: reading it directly is
    refused; the next run recomputes the tokenizer stage (the same codes again) and the
    ranking stage that read it, and keeps the features."""
    from mmsid.pipeline import resolve_config, run

    out = tmp_path / "run"
    cfg = resolve_config(
        "lfm2k-mm",
        str(out),
        cli={"methods": "rq-kmeans", "tasks": "ranking", "data_dir": str(real_data_dir)},
        sets=[
            "tokenizer.codebook_size=32",
            "ranking.epochs=1",
            "ranking.din=false",
            "ranking.popularity=false",
        ],
    )
    r1 = run(cfg, progress=False)
    tok = out / "stages" / "seed0" / "tokenize-rq-kmeans"
    rec = json.loads((tok / "stage.json").read_text())
    assert rec["status"] == "done" and rec["files"] == artefacts.RECORD
    sealed = artefacts.record(tok)
    assert "sids.parquet" in sealed and "tokenizer.pt" in sealed and "metrics.json" in sealed
    before = SIDTable.load(tok / "sids.parquet")
    good = (tok / "sids.parquet").read_bytes()

    _garble(tok / "sids.parquet")
    with pytest.raises(DataError, match=r"sids\.parquet: changed since mmsid wrote it"):
        SIDTable.load(tok / "sids.parquet")
    capsys.readouterr()
    r2 = run(cfg, progress=False)
    err = capsys.readouterr().err
    assert "seed0/tokenize-rq-kmeans/sids.parquet: changed since mmsid wrote it" in err
    status = {s["stage"]: s["status"] for s in r2["stages"]}
    assert status == {
        "features": "cached",
        "seed0/tokenize-rq-kmeans": "ran",
        "seed0/ranking-din-sid-rq-kmeans": "ran",
    }
    after = SIDTable.load(tok / "sids.parquet")  # sealed again, and readable
    np.testing.assert_array_equal(after.codes, before.codes)
    assert (tok / "sids.parquet").read_bytes() == good
    # the ranker's checkpoint is keyed by SID content: the same codes resume the same model
    for name, row in r1["ranking"].items():
        assert r2["ranking"][name]["test"] == row["test"], name
    # a missing record: the stage cannot be checked, so it is recomputed (not trusted)
    (tok / artefacts.RECORD).unlink()
    r3 = run(cfg, progress=False)
    assert {s["stage"]: s["status"] for s in r3["stages"]}["seed0/tokenize-rq-kmeans"] == "ran"
    r4 = run(cfg, progress=False)
    assert {s["status"] for s in r4["stages"]} == {"cached"}


def test_a_stage_stopped_by_bad_input_leaves_no_folder_it_created(real_data_dir, tmp_path):
    """A setting that only fails once the features are built (an OPQ projection wider than
    lfm2k-mm's 384-d text) stops the stage after it opened its folder: a folder the call
    created is removed with the parents it made, and a folder that was already there (the
    user's) is kept."""
    from mmsid.errors import ConfigError
    from mmsid.tokenize import TokenizeConfig, run_tokenize

    def bad(out):
        cfg = TokenizeConfig(
            dataset="lfm2k-mm",
            method="opq",
            levels=8,
            pca_dim=500,
            modalities=["text_minilm"],
            out=str(out),
            data_dir=str(real_data_dir),
        )
        with pytest.raises(ConfigError, match="pca_dim 500 must be between 0"):
            run_tokenize(cfg, progress=False)

    bad(tmp_path / "fresh" / "run")  # its parent is made by the stage too
    assert not (tmp_path / "fresh").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("kept")
    bad(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "kept"
