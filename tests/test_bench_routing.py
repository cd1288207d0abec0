"""bench_mmq_routing: it fits a missing MMQ tokenizer with bench_parallel_ids's fit, reads a
finished one, and refuses a spec that is not MMQ's before anything is fitted."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.fixture
def short_fits(tmp_path, monkeypatch):
    """bench_parallel_ids' fits under tmp_path, at 2 + 1 epochs (the fit itself is real)."""
    import bench_parallel_ids as b
    from bench_parallel_loss import tokenize

    short = {"epochs": 2, "finetune_epochs": 1, "finetune_pairs": 1000}

    def quick(*a, settings=None, **kw):
        return tokenize(*a, settings={**short, **(settings or {})}, **kw)

    monkeypatch.setattr(b, "RUNS", tmp_path / "parallel_ids")
    monkeypatch.setattr(b, "tokenize", quick)
    return tmp_path / "parallel_ids"


def test_the_routing_bench_fits_a_missing_tokenizer_then_reads_it(real_data_dir, short_fits):
    import bench_mmq_routing as r
    import bench_parallel_ids as b

    spec = "mmq-ft:1,sharpness=0"
    assert not b.tokenizer_dir("lfm2k-mm", spec).exists()
    got = r.fit_rows("lfm2k-mm", spec)
    pt = b.tokenizer_dir("lfm2k-mm", spec) / "tokenizer.pt"
    assert pt.exists()
    assert pt.parent.parent.name == "mmq-ft-1-sharpness0"
    groups = {}
    for e in got["experts"]:
        groups.setdefault(e["expert"].split("/")[0], []).append(e["routed_share"])
    assert set(groups) == set(got["gate_entropy"]) and len(groups) >= 2
    for shares in groups.values():  # every item is routed to exactly one expert of its group
        assert len(shares) >= 2 and np.isclose(sum(shares), 1.0)
    assert all(0.0 <= v <= 1.0 for v in got["gate_entropy"].values())
    made = pt.stat().st_mtime_ns
    assert r.fit_rows("lfm2k-mm", spec) == got  # the finished fit is read, not refitted
    assert pt.stat().st_mtime_ns == made


def test_the_routing_bench_refuses_a_non_mmq_spec_before_fitting_anything(
    real_data_dir, short_fits, monkeypatch
):
    import bench_mmq_routing as r

    argv = ["bench_mmq_routing.py", "--fit", "lfm2k-mm", "mmq-ft:1", "--fit", "lfm2k-mm", "opq:8"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit, match="opq:8: not an MMQ spec"):
        r.main()
    assert not short_fits.exists()
