"""Safety with the user's files: mmsid never unpickles code from a checkpoint or tokenizer
file (torch.load weights_only), and refuses truncated or foreign files with a message."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmsid.errors import DataError
from mmsid.io import load_torch, save_torch


class _Payload:
    """Unpickling this runs code: it creates the file named ``marker``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _crafted(path, marker):
    torch.save({"model": {}, "history": [_Payload(str(marker))], "run_key": "x"}, path)


def test_a_crafted_pickle_runs_no_code(tmp_path):
    from mmsid.quantizers import Tokenizer
    from mmsid.training import LoopConfig, train

    marker = tmp_path / "pwned"
    bad = tmp_path / "last.pt"
    _crafted(bad, marker)
    with pytest.raises(DataError, match="refuses to unpickle"):
        load_torch(bad)
    with pytest.raises(DataError, match="last.pt"):
        Tokenizer.load(bad)
    net = torch.nn.Linear(2, 1)
    with pytest.raises(DataError, match="last.pt"):  # a resume checkpoint, as `--out` reads
        train(
            net,
            LoopConfig(epochs=1),
            batches=lambda g: [np.arange(2)],
            make_batch=lambda idx: {},
            evaluate=lambda m: {"x": 0.0},
            select="x",
            checkpoint=bad,
            progress=False,
        )
    assert not marker.exists()


def test_truncated_and_foreign_files_are_refused_with_a_message(tmp_path):
    good = tmp_path / "ok.pt"
    save_torch(good, {"w": torch.ones(3), "n": np.int64(4), "x": np.float32(0.5), "a": [1.0]})
    back = load_torch(good)  # numpy scalars were saved as plain numbers: weights_only reads them
    assert back["n"] == 4 and isinstance(back["n"], int) and torch.equal(back["w"], torch.ones(3))
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:40])
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    for f in (cut, text):
        with pytest.raises(DataError, match="not a readable mmsid file"):
            load_torch(f)


# ---- the run folder guard ---------------------------------------------------------------------


def _tiny_run(out, data_dir, **sets):
    from mmsid.pipeline import resolve_config

    over = [
        "methods=rq-kmeans",
        "tasks=retrieval",
        "tokenizer.codebook_size=16",
        "retrieval.models=",
        "retrieval.sasrec=false",
        "retrieval.content_knn=false",
        *[f"{k}={v}" for k, v in sets.items()],
    ]
    return resolve_config("lfm2k-mm", str(out), cli={"data_dir": str(data_dir)}, sets=over)


def test_overwrite_deletes_only_what_a_run_wrote(real_data_dir, tmp_path):
    from mmsid.errors import ConfigError
    from mmsid.pipeline import run

    out = tmp_path / "x"
    out.mkdir()
    (out / "precious.txt").write_text("thesis")
    # a folder mmsid did not create is refused, with or without --overwrite
    with pytest.raises(ConfigError, match="not an mmsid run folder"):
        run(_tiny_run(out, real_data_dir), overwrite=True, progress=False)
    (out / "run.json").write_text('{"note": "someone else\'s file"}')
    with pytest.raises(ConfigError, match="not written by an mmsid run"):
        run(_tiny_run(out, real_data_dir), overwrite=True, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["precious.txt", "run.json"]
    # a real run, then a user's file beside it, then --overwrite with another config
    out2 = tmp_path / "y"
    run(_tiny_run(out2, real_data_dir), progress=False)
    assert (out2 / "stages").is_dir() and (out2 / "report.md").exists()
    (out2 / "notes.txt").write_text("mine")
    run(_tiny_run(out2, real_data_dir, seeds="1"), overwrite=True, progress=False)
    assert (out2 / "notes.txt").read_text() == "mine"  # kept
    assert not (out2 / "stages" / "seed0").exists()  # the old run's stages are gone
    assert (out2 / "stages" / "seed1").is_dir()


def test_a_bad_dataset_is_refused_before_the_folder_is_touched(tmp_path):
    from mmsid.pipeline import resolve_config, run

    out = tmp_path / "x"
    out.mkdir()
    (out / "precious.txt").write_text("thesis")
    cfg = resolve_config("nope", str(out))
    with pytest.raises(DataError, match="unknown data set 'nope'"):
        run(cfg, overwrite=True, progress=False)
    assert [p.name for p in out.iterdir()] == ["precious.txt"]
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(Exception, match="is a file"):
        run(resolve_config("lfm2k-mm", str(f)), progress=False)


@pytest.mark.parametrize(
    "build",
    [
        lambda: __import__("mmsid.retrieval.config").retrieval.config.RetrieveConfig(
            dataset="d", lr=float("nan")
        ),
        lambda: __import__("mmsid.retrieval.config").retrieval.config.RetrieveConfig(
            dataset="d", batch_size=-5
        ),
        lambda: __import__("mmsid.retrieval.config").retrieval.config.RetrieveConfig(
            dataset="d", patience=-1
        ),
        lambda: __import__("mmsid.ranking.run").ranking.run.RankConfig(dataset="d", neg_ratio=0),
        lambda: __import__("mmsid.tokenize").tokenize.TokenizeConfig(dataset="d", alpha=np.nan),
        lambda: __import__("mmsid.tokenize").tokenize.TokenizeConfig(dataset="d", levels=0),
        lambda: __import__("mmsid.tokenize").tokenize.TokenizeConfig(dataset="d", collision_cap=0),
    ],
)
def test_invalid_settings_are_refused_where_declared(build):
    from mmsid.errors import ConfigError

    with pytest.raises(ConfigError, match="must be a finite number in"):
        build()


def test_invalid_settings_from_set_and_the_cli(real_data_dir, tmp_path):
    from click.testing import CliRunner

    from mmsid.cli import main
    from mmsid.config import dotted, merge
    from mmsid.errors import ConfigError
    from mmsid.retrieval.config import RetrieveConfig

    with pytest.raises(ConfigError, match="RetrieveConfig.epochs = None"):
        merge(RetrieveConfig(dataset="d"), dotted(["epochs=null"]), "--set")
    with pytest.raises(ConfigError, match="ParallelSIDConfig.temperature = 0"):
        merge(RetrieveConfig(dataset="d"), dotted(["parallel.temperature=0"]), "--set")
    # each retriever's own settings are checked where declared, as parallel-sid's are
    for bad, match in [
        ("sasrec.dropout=1.5", "SASRecConfig.dropout = 1.5"),
        ("sasrec.d_model=0", "SASRecConfig.d_model = 0"),
        ("sasrec.loss=xyz", "sasrec.loss 'xyz': choose ce or bce"),
        ("sasrec.n_heads=3", "sasrec.d_model 64 is not a multiple of n_heads"),
        ("tiger.dropout=-0.1", "TIGERConfig.dropout = -0.1"),
        ("tiger.max_history=0", "TIGERConfig.max_history = 0"),
    ]:
        with pytest.raises(ConfigError, match=match):
            merge(RetrieveConfig(dataset="d"), dotted([bad]), "--set")
    out = tmp_path / "r"
    r = CliRunner().invoke(
        main,
        ["retrieve", "--dataset", "lfm2k-mm", "--model", "sasrec", "--epochs", "0"]
        + ["--data-dir", str(real_data_dir), "--out", str(out)],
    )
    assert r.exit_code != 0 and "epochs must be at least 1" in r.output
    assert not out.exists()  # refused before anything was written
    r = CliRunner().invoke(
        main, ["retrieve", "--dataset", "lfm2k-mm", "--batch-size", "-5", "--out", str(out)]
    )
    assert r.exit_code != 0 and "batch_size = -5" in r.output


def test_a_folder_in_use_is_refused_and_a_stale_lock_is_cleared(real_data_dir, tmp_path):
    import socket
    import subprocess
    import sys

    from mmsid.errors import ConfigError
    from mmsid.pipeline import run
    from mmsid.pipeline.folder import LOCK

    out = tmp_path / "x"
    run(_tiny_run(out, real_data_dir), progress=False)
    assert not (out / LOCK).exists()  # released when the run ends
    # another live process holds the folder: refused, even with --overwrite, nothing deleted
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK).write_text(f"{live.pid} {socket.gethostname()}\n")
        with pytest.raises(ConfigError, match=f"in use by mmsid process {live.pid}"):
            run(_tiny_run(out, real_data_dir, seeds="1"), overwrite=True, progress=False)
        assert (out / "stages" / "seed0").is_dir()
    finally:
        live.kill()
        live.wait()
    # the holder is gone (killed): its lock is stale, the next run clears it and proceeds
    run(_tiny_run(out, real_data_dir, seeds="1"), overwrite=True, progress=False)
    assert (out / "stages" / "seed1").is_dir() and not (out / LOCK).exists()


def test_strict_json_finite_weights_umask_and_orphan_temp_files(tmp_path):
    """metrics are strict JSON (NaN -> null); NaN/inf weights are refused when written and
    when read; files get the umask's permissions; a killed write's temp file is removed at
    the next start, and nothing else is."""
    import json
    import os

    import numpy as np
    import torch

    from mmsid.io import atomic_path, clean_temp, load_torch, save_torch, write_json

    write_json(tmp_path / "m.json", {"a": float("nan"), "b": [1.0, np.inf], "c": np.float32(2)})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": None, "b": [1.0, None], "c": 2.0}
    assert "NaN" not in (tmp_path / "m.json").read_text()

    with pytest.raises(DataError, match=r"state\.w.*NaN or inf"):
        save_torch(tmp_path / "w.pt", {"state": {"w": torch.tensor([1.0, float("nan")])}})
    assert not (tmp_path / "w.pt").exists()
    torch.save({"state": {"w": torch.tensor([float("inf")])}}, tmp_path / "bad.pt")
    with pytest.raises(DataError, match="NaN or inf.*delete it"):
        load_torch(tmp_path / "bad.pt")
    save_torch(tmp_path / "ok.pt", {"state": {"w": torch.ones(2), "step": 3}})
    assert load_torch(tmp_path / "ok.pt")["state"]["step"] == 3

    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "perm.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(old)
    import mmsid.io

    assert (tmp_path / "perm.txt").stat().st_mode & 0o777 == 0o666 & ~mmsid.io._UMASK

    (tmp_path / "checkpoints").mkdir()
    orphan = tmp_path / "checkpoints" / ".last.pt.k3j_9xQz.tmp"  # as mkstemp names them
    orphan.write_bytes(b"half")
    mine = tmp_path / ".notes.tmp"  # a user's file that does not look like ours
    mine.write_text("keep")
    assert clean_temp(tmp_path) == [orphan]
    assert not orphan.exists() and mine.exists()


def test_a_run_cut_by_the_time_limit_says_so(real_data_dir, tmp_path):
    """metrics.json records why training ended; the command warns when a time limit cut it."""
    import json

    from click.testing import CliRunner

    from mmsid.cli import main

    tok = tmp_path / "tok"
    args = ["--dataset", "lfm2k-mm", "--data-dir", str(real_data_dir)]
    r = CliRunner().invoke(main, ["tokenize", *args, "--out", str(tok)])
    assert r.exit_code == 0, r.output
    common = [
        "retrieve", *args, "--model", "parallel-sid", "--sids", str(tok / "sids.parquet"),
        "--valid-sample", "100", "--set", "parallel.d_model=32", "--set", "parallel.d_ff=64",
        "--set", "parallel.n_layers=1", "--set", "parallel.n_heads=2",
    ]  # fmt: skip
    r = CliRunner().invoke(
        main, [*common, "--epochs", "3", "--max-minutes", "1e-5", "--out", str(tmp_path / "cut")]
    )
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert m["stopped"] == "max_minutes" and m["epochs_run"] == 1
    assert "cut by the time limit after 1 epoch" in r.output
    r = CliRunner().invoke(main, [*common, "--epochs", "1", "--out", str(tmp_path / "full")])
    assert json.loads((tmp_path / "full" / "metrics.json").read_text())["stopped"] == "epochs"
    assert "time limit" not in r.output


def test_a_stage_turns_on_deterministic_algorithms(tmp_path):
    """Reproducible from a seed with any thread count: every stage's start_run switches torch
    to its deterministic kernels (2-thread RQ-VAE fits differed run to run without them)."""
    import dataclasses

    import torch

    from mmsid.device import start_run

    @dataclasses.dataclass
    class Cfg:
        out: str
        seed: int = 0
        device: str = "cpu"

    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(False)
    try:
        start_run(Cfg(out=str(tmp_path / "run")))
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(before, warn_only=True)


def test_kill_9_mid_run_loses_nothing_and_a_second_run_is_kept_out(real_data_dir, tmp_path):
    """A real `mmsid run` process: while it works, a second run into its folder is refused
    (naming the holder) and changes nothing; killed with SIGKILL mid-stage, the next run keeps
    every finished stage (their files still match their SHA-256 record), redoes the killed one,
    and leaves no temporary file and no lock behind."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from mmsid import artefacts
    from mmsid.errors import ConfigError
    from mmsid.io import TEMP
    from mmsid.pipeline import run
    from mmsid.pipeline.folder import LOCK

    out = tmp_path / "run"
    sets = {"methods": "rq-vae", "seeds": "0,1", "tokenizer.epochs": "12"}
    cfg = _tiny_run(out, real_data_dir, **sets)
    cmd = [sys.executable, "-m", "mmsid", "run", "--dataset", "lfm2k-mm"]
    cmd += ["--data-dir", str(real_data_dir), "--out", str(out)]
    for over in ["tasks=retrieval", "tokenizer.codebook_size=16", "retrieval.models="]:
        cmd += ["--set", over]
    for over in ["retrieval.sasrec=false", "retrieval.content_knn=false"]:
        cmd += ["--set", over]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    log = (tmp_path / "stderr.txt").open("w")  # not a pipe: progress bars would fill it
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    seed0 = out / "stages" / "seed0" / "tokenize-rq-vae"
    seed1 = out / "stages" / "seed1" / "tokenize-rq-vae"
    try:
        deadline = time.time() + 300
        while not (seed1 / "checkpoints" / "tokenizer.pt").exists():  # seed 1 is training
            assert p.poll() is None, (tmp_path / "stderr.txt").read_text()
            assert time.time() < deadline, "the run never reached seed 1"
            time.sleep(0.05)
        # freeze the holder (alive, still holding the lock) so that every file change below
        # could only come from the refused second run, not from the holder's own checkpoints
        os.kill(p.pid, signal.SIGSTOP)
        before = {f: f.stat().st_mtime_ns for f in out.rglob("*") if f.is_file()}
        with pytest.raises(ConfigError, match=f"in use by mmsid process {p.pid}"):
            run(cfg, overwrite=True, progress=False)
        after = {f: f.stat().st_mtime_ns for f in out.rglob("*") if f.is_file()}
        assert after == before  # nothing written, touched, added or removed
        assert (out / LOCK).exists()
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        log.close()
    assert artefacts.check(seed0) == []  # finished before the kill: intact
    r = run(cfg, progress=False)
    status = {s["stage"]: s["status"] for s in r["stages"]}
    assert status["seed0/tokenize-rq-vae"] == "cached" and status["seed1/tokenize-rq-vae"] == "ran"
    assert r["complete"] and not (out / LOCK).exists()
    assert not [f for f in out.rglob("*") if TEMP.match(f.name)]
    for rec in out.rglob(artefacts.RECORD):
        assert artefacts.check(rec.parent) == [], rec
