"""The built-in loaders on damaged copies of the real files: every file a loader reads,
emptied, cut short, garbled or replaced by foreign text, is refused by its SHA-256 with a
message naming it; with that check off (MMSID_DATA_VERIFY=0) it loads or ends in a DataError
naming the file, never another exception (fuzzed with hypothesis, derandomized)."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmsid.data import beauty, lastfm, load_dataset, movielens
from mmsid.errors import DataError

LOADERS = {
    movielens.NAME: movielens.REQUIRED,
    lastfm.NAME: [*lastfm.REQUIRED, "artists.dat"],
    beauty.NAME: beauty.REQUIRED,
}


def _damage(blob: bytes, kind: str, at: float, n: int) -> bytes:
    i = int(at * len(blob))
    if kind == "empty":
        return b""
    if kind == "cut":
        return blob[:i]
    if kind == "text":
        return b"this is not the file you are looking for\n"
    if kind == "garble":
        out = bytearray(blob)
        for j in range(i, min(i + n, len(out))):
            out[j] ^= 0xA5
        return bytes(out)
    raise AssertionError(kind)


def _copy_with(src, dst, name: str, damaged: bytes) -> None:
    """dst mirrors src through symlinks, except ``name``, which holds ``damaged``."""
    for entry in os.listdir(src):
        if entry != name:
            os.symlink(src / entry, dst / entry)
    (dst / name).write_bytes(damaged)


@pytest.mark.parametrize("verify", [True, False], ids=["sha256", "parsers"])
@pytest.mark.parametrize("dataset", list(LOADERS))
def test_damaged_files_of_builtin_sets_end_in_a_data_error(
    real_data_dir, dataset, verify, tmp_path, monkeypatch
):
    monkeypatch.setenv("MMSID_DATA_VERIFY", "1" if verify else "0")
    import itertools

    src = real_data_dir / dataset
    seen: list[str] = []
    cases = itertools.count()

    @settings(
        max_examples=16, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
    )
    @given(
        name=st.sampled_from(LOADERS[dataset]),
        kind=st.sampled_from(["empty", "cut", "text", "garble"]),
        at=st.floats(0.0, 0.999),
        n=st.integers(1, 64),
    )
    def check(name, kind, at, n):
        root = tmp_path / f"case{next(cases)}"  # a data dir holding the one data set
        (root / dataset).mkdir(parents=True)
        _copy_with(src, root / dataset, name, _damage((src / name).read_bytes(), kind, at, n))
        try:
            load_dataset(dataset, root)
            seen.append("loaded")
        except DataError as e:
            assert name in str(e), str(e)  # names the damaged file
            seen.append("refused")

    check()
    if verify:  # every damage changes the bytes: every case is refused
        assert set(seen) == {"refused"}
    else:  # the damage is real: the parsers refuse some cases too
        assert "refused" in seen
