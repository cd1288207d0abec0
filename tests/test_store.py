"""The SQLite ID store: unique full SIDs, idempotent re-assignment, refused changes, all-or-
nothing batches, prefix lookups, two concurrent writers, a writer killed mid-batch."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mmsid.errors import DataError
from mmsid.store import IDStore, content_hash


def _store(tmp_path):
    s = IDStore(tmp_path / "ids.sqlite")
    s.add_version("v1", levels=2, codebook_size=4)
    return s


def test_collisions_are_allocated_and_reassignment_is_idempotent(tmp_path):
    s = _store(tmp_path)
    codes = np.array([[1, 2], [1, 2], [3, 0]])
    sids = s.assign("v1", ["a", "b", "c"], codes, ["ha", "hb", "hc"])
    assert sids.tolist() == [[1, 2, 0], [1, 2, 1], [3, 0, 0]]
    assert s.assign("v1", ["a"], codes[:1], ["ha"]).tolist() == [[1, 2, 0]]  # same content
    assert s.sid("v1", "b") == (1, 2, 1) and s.sid("v1", "zzz") is None
    assert s.items("v1", [1]) == ["a", "b"] and s.items("v1", [1, 2, 1]) == ["b"]
    assert s.items("v1", []) == ["a", "b", "c"]
    assert s.versions()[0]["items"] == 3


def test_changed_content_is_refused_and_a_bad_batch_writes_nothing(tmp_path):
    s = _store(tmp_path)
    s.assign("v1", ["a"], np.array([[1, 2]]), ["ha"])
    with pytest.raises(DataError, match="replace"):
        s.assign("v1", ["new", "a"], np.array([[0, 0], [3, 3]]), ["hn", "changed"])
    assert s.sid("v1", "new") is None  # the batch's first item was rolled back
    assert s.assign("v1", ["a"], np.array([[3, 3]]), ["changed"], replace=True).tolist() == [
        [3, 3, 0]
    ]
    with pytest.raises(DataError, match="levels of 4 codes"):
        s.assign("v1", ["x"], np.array([[4, 0]]), ["hx"])
    with pytest.raises(DataError, match="unknown version"):
        s.assign("v2", ["x"], np.array([[0, 0]]), ["hx"])
    with pytest.raises(DataError, match="twice"):
        s.assign("v1", ["x", "x"], np.array([[0, 0], [0, 0]]), ["h", "h"])
    with pytest.raises(DataError, match="exists with 2 levels"):
        s.add_version("v1", levels=3, codebook_size=4)
    assert content_hash(np.ones(3)) == content_hash(np.ones(3, np.float64))


def _writer(path, tag, n):
    s = IDStore(path)
    for i in range(n):  # every item on the same codes: only the collision index differs
        s.assign("v1", [f"{tag}{i}"], np.array([[0, 0]]), [f"h{tag}{i}"])
    s.close()


def test_two_concurrent_writers_never_share_a_full_sid(tmp_path):
    _store(tmp_path).close()
    path = tmp_path / "ids.sqlite"
    procs = [mp.get_context("spawn").Process(target=_writer, args=(path, t, 40)) for t in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    s = IDStore(path)
    sids = [s.sid("v1", f"{t}{i}") for t in "ab" for i in range(40)]
    assert len(set(sids)) == 80 and sorted(x[-1] for x in sids) == list(range(80))


KILLED = """
import sys, numpy as np
from mmsid.store import IDStore
s = IDStore(sys.argv[1])
b = 0
while True:  # batches of 50 items, each batch one transaction
    items = [f"b{b}_{i}" for i in range(50)]
    s.assign("v1", items, np.zeros((50, 2), int), items)
    print(b, flush=True)
    b += 1
"""


def test_a_writer_killed_mid_batch_leaves_only_whole_batches(tmp_path):
    _store(tmp_path).close()
    path = tmp_path / "ids.sqlite"
    p = subprocess.Popen(
        [sys.executable, "-c", KILLED, str(path)], stdout=subprocess.PIPE, text=True
    )
    done = [p.stdout.readline() for _ in range(5)]  # at least 5 batches committed
    time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    s = IDStore(path)
    n = s.versions()[0]["items"]
    assert n % 50 == 0 and n >= 50 * len(done)  # whole batches only, none lost
    coll = sorted(s.sid("v1", it)[-1] for it in s.items("v1", [0, 0]))
    assert coll == list(range(n))
