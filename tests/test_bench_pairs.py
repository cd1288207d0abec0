"""bench_retrievers' paired lines: each comparison the table makes is printed once, so an asked
``--pair`` that repeats one of them (in either order) adds only its slice lines."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_an_asked_pair_already_in_the_table_is_not_printed_again_either_way():
    from bench_retrievers import asked_pairs, comparisons

    names = ["SASRec", "SASRec + content"]
    for ids in ("a:1", "b:8", "c:8"):
        names += [f"parallel-sid ({ids})", f"parallel-sid ({ids}) + content"]
    done = comparisons(names)  # b and c each against a (the first ID type), alone and fused
    a, b, c = "parallel-sid (a:1)", "parallel-sid (b:8)", "parallel-sid (c:8)"
    assert (b, a) in done and (c, b) not in done and (b, c) not in done
    for asked in (["a:1", "b:8"], ["b:8", "a:1"]):  # the table has b vs a: slices only
        got = asked_pairs([asked], done)
        assert [sl for *_, sl in got] == ["cold", "long_tail"] * 2
    got = asked_pairs([["b:8", "c:8"]], done)  # not in the table: every line
    assert (b, c, "all") in got and (b + " + content", c + " + content", "all") in got
    assert len(got) == 6
    assert len(asked_pairs([["a:1", "b:8"]])) == 6  # nothing done: nothing left out
