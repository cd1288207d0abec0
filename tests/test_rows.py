"""Catalogues larger than memory: feature rows read from a .npy a chunk at a time
(mmsid.quantizers.rows), and tokenizers that fit and encode from them as they do in memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmsid.errors import DataError
from mmsid.quantizers import tokenizer_for
from mmsid.quantizers.rows import Rows, nonfinite_rows, write_npy


def _x(n=600, d=12, seed=0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_rows_read_take_and_chunks_equal_the_array(tmp_path, dtype):
    x = _x(1000, 7).astype(dtype)
    path = tmp_path / "x.npy"
    write_npy(path, x.shape, dtype, np.array_split(x, 3))  # written in pieces
    assert np.array_equal(np.load(path), x)
    r = Rows(path)
    assert (len(r), r.dim, r.dtype) == (1000, 7, np.dtype(dtype))
    want = x.astype(np.float32)
    assert np.array_equal(r.read(990, 2000), want[990:])
    idx = np.array([999, 0, 5, 5, 512])
    assert np.array_equal(r.take(idx), want[idx])
    got = np.concatenate([c for _, c in r.chunks(size=300)])
    assert np.array_equal(got, want)
    assert [s for s, _ in r.chunks(size=300)] == [0, 300, 600, 900]


def test_bad_feature_files_are_named_with_the_fix(tmp_path):
    (tmp_path / "text.npy").write_text("not numpy")
    with pytest.raises(DataError, match="not a .npy"):
        Rows(tmp_path / "text.npy")
    np.save(tmp_path / "cube.npy", np.zeros((2, 3, 4), np.float32))
    with pytest.raises(DataError, match="shape \\(items, dim\\)"):
        Rows(tmp_path / "cube.npy")
    np.save(tmp_path / "f.npy", np.asfortranarray(_x(10, 4)))
    with pytest.raises(DataError, match="Fortran"):
        Rows(tmp_path / "f.npy")
    with pytest.raises(DataError, match="no such feature file"):
        Rows(tmp_path / "missing.npy")
    np.save(tmp_path / "cut.npy", _x(100, 4))
    blob = (tmp_path / "cut.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(blob[:-40])
    with pytest.raises(DataError, match="truncated"):
        Rows(tmp_path / "cut.npy").read(0, 100)
    x = _x(50_000, 4)
    x[40_123, 2] = np.nan  # in the second chunk
    np.save(tmp_path / "nan.npy", x)
    with pytest.raises(DataError, match="row 40123 holds NaN"):
        tokenizer_for("rq-kmeans", levels=2, codebook_size=8).fit(tmp_path / "nan.npy")
    np.save(tmp_path / "same.npy", np.ones((300, 4), np.float32))
    with pytest.raises(DataError, match="zero variance"):
        tokenizer_for("rq-kmeans", levels=2, codebook_size=8).fit(tmp_path / "same.npy")
    with pytest.raises(DataError, match="fits in memory"):
        tokenizer_for("psrq", levels=2, codebook_size=8).fit(tmp_path / "nan.npy")


@pytest.mark.parametrize("seed", range(5))
def test_nonfinite_rows_is_the_element_wise_test(seed):
    """The row-sum fast path flags exactly the rows the element-wise test flags: NaN, +inf,
    -inf, +inf beside -inf (sum NaN), and not a finite row whose sum overflows to inf."""
    g = np.random.default_rng(seed)
    x = g.normal(size=(300, 9)).astype(np.float32)
    rows = g.choice(300, 12, replace=False)
    for r, v in zip(rows[:9], [np.nan, np.inf, -np.inf] * 3, strict=True):
        x[r, g.integers(9)] = v
    x[rows[9], :2] = [np.inf, -np.inf]
    x[rows[10]] = 3e38  # finite; its sum overflows
    x[rows[11]] = -3e38
    want = ~np.isfinite(x).all(1)
    assert want.sum() == 10
    got = nonfinite_rows(torch.from_numpy(x)).numpy()
    assert np.array_equal(got, want)
    clean = np.delete(x, rows[:10], axis=0)
    assert not nonfinite_rows(torch.from_numpy(clean)).any()  # overflowing rows included
    assert nonfinite_rows(torch.empty(0, 9)).shape == (0,)


def test_rqkmeans_from_a_file_is_the_in_memory_fit(tmp_path):
    """Up to ``sample_per_code`` rows per code the sample is every row, in order: the same
    k-means input as in memory, so the same codebooks."""
    x = _x()
    np.save(tmp_path / "x.npy", x)
    kw = dict(levels=3, codebook_size=16, seed=2)
    mem = tokenizer_for("rq-kmeans", **kw).fit(x)
    disk = tokenizer_for("rq-kmeans", **kw).fit(tmp_path / "x.npy")
    assert torch.equal(mem.module.codebooks, disk.module.codebooks)
    assert np.array_equal(mem.transform(x), disk.transform(tmp_path / "x.npy"))
    for a, b in zip(mem.history, disk.history, strict=True):
        assert abs(a["residual_mse"] - b["residual_mse"]) < 1e-5


def test_rqkmeans_from_a_file_samples_and_measures_every_row(tmp_path):
    x = _x(2000, 8)
    np.save(tmp_path / "x.npy", x.astype(np.float16))
    tok = tokenizer_for("rq-kmeans", levels=2, codebook_size=8, sample_per_code=10, seed=1)
    tok.fit(tmp_path / "x.npy")
    assert tok.history[0]["fit_rows"] == 80
    # residual MSE over all 2000 rows, as a direct in-memory computation gives it
    xf = torch.from_numpy(x.astype(np.float16).astype(np.float32))
    codes = torch.from_numpy(tok.transform(xf.numpy()))
    r = xf.clone()
    for lvl in range(2):
        r = r - tok.module.codebooks.detach()[lvl, codes[:, lvl]]
        want = float((r * r).sum(1).mean())
        assert abs(tok.history[lvl]["residual_mse"] - want) < 1e-5
    assert np.array_equal(tok.transform(tmp_path / "x.npy"), codes.numpy())


def test_rqvae_from_a_file_is_the_in_memory_fit(tmp_path):
    """The same seeded batches, each read from the file: the same weights."""
    x = _x(500, 16)
    np.save(tmp_path / "x.npy", x)
    kw = dict(levels=2, codebook_size=16, epochs=3, batch_size=64, hidden=(32,), latent_dim=8)
    mem = tokenizer_for("rq-vae", **kw).fit(x, progress=False)
    disk = tokenizer_for("rq-vae", **kw).fit(tmp_path / "x.npy", progress=False)
    for k, v in mem.module.state_dict().items():
        assert torch.equal(v, disk.module.state_dict()[k]), k
    assert np.array_equal(mem.transform(x), disk.transform(tmp_path / "x.npy"))


def test_transform_from_a_file_refuses_another_dimension(tmp_path):
    tok = tokenizer_for("rq-kmeans", levels=2, codebook_size=8).fit(_x(300, 6))
    np.save(tmp_path / "wide.npy", _x(300, 7))
    with pytest.raises(DataError, match="dimension 7 but the tokenizer was fitted on"):
        tok.transform(tmp_path / "wide.npy")


def test_mmq_from_a_file_is_the_in_memory_fit_and_finetune(tmp_path):
    """Stage 1 and behavior fine-tuning read each seeded batch from the file: the same model."""
    x = _x(300, 11)
    np.save(tmp_path / "x.npy", x)
    kw = dict(
        modality_dims=(6, 5),
        codebook_size=8,
        latent_dim=4,
        hidden=(16,),
        epochs=2,
        finetune_epochs=1,
        batch_size=64,
        finetune_batch_size=32,
    )
    pairs = np.random.default_rng(0).integers(300, size=(100, 2))
    mem = tokenizer_for("mmq", **kw).fit(x, progress=False)
    disk = tokenizer_for("mmq", **kw).fit(tmp_path / "x.npy", progress=False)
    a = mem.finetune(x, pairs, progress=False)
    b = disk.finetune(tmp_path / "x.npy", pairs, progress=False)
    assert a == b
    for k, v in mem.module.state_dict().items():
        assert torch.equal(v, disk.module.state_dict()[k]), k
    assert np.array_equal(mem.transform(x), disk.transform(tmp_path / "x.npy"))
