"""The benches' asked ``--pair`` comparisons: in bench_retrievers, a comparison that an asked pair
makes on all users is printed once, in the order asked, and not again (with the opposite sign)
among the table's own; bench_parallel_ids refuses a pair it cannot or already does compare."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_an_asked_pair_replaces_the_tables_own_comparison_of_the_same_rows():
    from bench_retrievers import asked_pairs, comparisons

    names = ["SASRec", "SASRec + content"]
    for ids in ("a:1", "b:8", "c:8"):
        names += [f"parallel-sid ({ids})", f"parallel-sid ({ids}) + content"]
    a, b, c = "parallel-sid (a:1)", "parallel-sid (b:8)", "parallel-sid (c:8)"
    table = comparisons(names)  # b and c each against a (the first ID type), alone and fused
    assert (b, a) in table and (b + " + content", a + " + content") in table
    for asked in (["a:1", "b:8"], ["b:8", "a:1"]):  # either order: the table's line goes
        left = comparisons(names, asked=[asked])
        assert (b, a) not in left and (a, b) not in left
        assert (b + " + content", a + " + content") not in left
        assert len(left) == len(table) - 2 and (c, a) in left
        x, y = (f"parallel-sid ({i})" for i in asked)
        assert (x, y, "all") in asked_pairs([asked])  # ... and the asked one stays, as asked
    assert comparisons(names, asked=[["b:8", "c:8"]]) == table  # not in the table: all stay
    assert len(asked_pairs([["b:8", "c:8"]])) == 6


def test_bench_parallel_ids_refuses_a_pair_it_cannot_or_already_does_compare(monkeypatch):
    """``--pair X Y`` of bench_parallel_ids: both among --ids and not the first (each type is
    compared with it already); refused before anything trains or is written."""
    from bench_parallel_ids import main

    ids = ["--ids", "rq-vae:6", "mmq-ft:1", "mmq-ctl:1", "--only", "rq-vae:6"]
    for pair, says in (
        (["mmq-ft:1", "opq:8"], "of --ids rq-vae:6 mmq-ft:1 mmq-ctl:1"),
        (["mmq-ft:1", "mmq-ft:1"], "two different ID types"),
        (["mmq-ft:1", "rq-vae:6"], "already compared with the first, rq-vae:6"),
    ):
        argv = ["bench_parallel_ids.py", "--datasets", "no-such-data", *ids, "--pair", *pair]
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit, match=says):
            main()
