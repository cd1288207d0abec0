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
