"""Shared fixtures. Real-data tests read ``$MMSID_DATA_DIR`` (CI: ../shared/datasets)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def data_dir() -> Path | None:
    env = os.environ.get("MMSID_DATA_DIR")
    if env:
        return Path(env).resolve()
    default = REPO.parent / "shared" / "datasets"
    return default if default.is_dir() else None


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    d = data_dir()
    if d is None or not d.is_dir():
        pytest.skip("real data not found: set MMSID_DATA_DIR to the datasets folder")
    # code under test that reads the data set by name (the benches) finds the same folder
    os.environ.setdefault("MMSID_DATA_DIR", str(d))
    return d


@pytest.fixture(scope="session")
def ml100k(real_data_dir):
    from mmsid.data import load_dataset

    return load_dataset("ml100k-mm", real_data_dir)


@pytest.fixture(scope="session")
def lfm2k(real_data_dir):
    from mmsid.data import load_dataset

    return load_dataset("lfm2k-mm", real_data_dir)


@pytest.fixture(scope="session")
def beauty(real_data_dir):
    from mmsid.data import load_dataset

    return load_dataset("amazon-beauty", real_data_dir)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never write to the user's cache from tests."""
    monkeypatch.setenv("MMSID_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
