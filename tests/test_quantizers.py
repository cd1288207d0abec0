"""Quantizer properties on small generated tensors (fast path vs slow reference, STE, k-means)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmsid.quantizers import (
    KMeansConfig,
    ResidualQuantizer,
    ResidualQuantizerConfig,
    kmeans,
    nearest,
)
from mmsid.quantizers.base import nearest_reference, sq_distances


@pytest.mark.parametrize("n,k,d", [(1, 1, 1), (50, 7, 3), (300, 64, 16), (257, 256, 5)])
def test_nearest_matches_brute_force(n, k, d):
    g = torch.Generator().manual_seed(n + k + d)
    x, c = torch.randn(n, d, generator=g), torch.randn(k, d, generator=g)
    fast, ref = nearest(x, c, chunk=37), nearest_reference(x, c)
    # ties are measure-zero for Gaussian data; compare distances to be robust anyway
    d_fast = ((x - c[fast]) ** 2).sum(1)
    d_ref = ((x - c[ref]) ** 2).sum(1)
    torch.testing.assert_close(d_fast, d_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sq_distances(x, c), torch.cdist(x, c) ** 2, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("levels", [1, 2, 4])
def test_encode_matches_reference_and_decode(levels, backend, monkeypatch):
    monkeypatch.setenv("MMSID_CPU_ENCODE", backend)
    g = torch.Generator().manual_seed(levels)
    rq = ResidualQuantizer(
        cfg=ResidualQuantizerConfig(levels=levels, codebook_size=16, dim=8, kmeans_init=False)
    )
    x = torch.randn(200, 8, generator=g)
    codes = rq.encode(x, chunk=64)
    assert torch.equal(codes, rq.encode_reference(x))
    # decoding the codes gives back what the quantizer outputs
    rq.eval()
    out = rq(x)
    assert torch.equal(out.codes, codes)
    torch.testing.assert_close(out.quantized, rq.decode(codes), rtol=1e-5, atol=1e-5)
    # truncated codes keep their prefix: encoding with fewer levels = prefix of the codes
    if levels > 1:
        short = ResidualQuantizer(
            cfg=ResidualQuantizerConfig(
                levels=levels - 1, codebook_size=16, dim=8, kmeans_init=False
            )
        )
        short.codebooks.data = rq.codebooks.data[:-1].clone()
        assert torch.equal(short.encode(x), codes[:, :-1])


def test_cpu_encode_backends_agree_on_any_input_dtype(monkeypatch):
    """The NumPy and torch loops give the same codes, chunk boundaries included; half-precision
    rows (memory-mapped float16 features) and rows that require grad are encoded as their
    float32 values; a misspelt backend is refused by name."""
    g = torch.Generator().manual_seed(3)
    rq = ResidualQuantizer(
        cfg=ResidualQuantizerConfig(levels=3, codebook_size=32, dim=24, kmeans_init=False)
    )
    x = torch.randn(1000, 24, generator=g)
    codes = {}
    for backend in ("numpy", "torch"):
        monkeypatch.setenv("MMSID_CPU_ENCODE", backend)
        codes[backend] = rq.encode(x, chunk=333)
    assert torch.equal(codes["numpy"], codes["torch"])
    assert torch.equal(rq.encode(x, backend="torch"), codes["torch"])
    assert torch.equal(codes["numpy"], rq.encode_reference(x))
    monkeypatch.setenv("MMSID_CPU_ENCODE", "numpy")
    half = x.to(torch.float16)
    assert torch.equal(rq.encode(half, chunk=100), rq.encode(half.float()))
    assert torch.equal(rq.encode(x.clone().requires_grad_(True)), codes["numpy"])
    assert rq.encode(x[:0]).shape == (0, 3)
    monkeypatch.setenv("MMSID_CPU_ENCODE", "blas")
    with pytest.raises(ValueError, match="MMSID_CPU_ENCODE='blas'"):
        rq.encode(x)
    with pytest.raises(ValueError, match="backend='blas'"):
        rq.encode(x, backend="blas")


def test_one_level_rq_equals_kmeans_assignment():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 6, generator=g)
    rq = ResidualQuantizer(
        cfg=ResidualQuantizerConfig(levels=1, codebook_size=10, dim=6, kmeans_iters=15, seed=4)
    )
    rq.init_from_data(x)
    centroids = kmeans(x, KMeansConfig(k=10, iters=15, seed=4))
    torch.testing.assert_close(rq.codebooks.data[0], centroids)
    assert torch.equal(rq.encode(x)[:, 0], nearest(x, centroids))


def test_more_levels_never_increase_error():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1000, 12, generator=g)
    rq = ResidualQuantizer(cfg=ResidualQuantizerConfig(levels=4, codebook_size=32, dim=12))
    rq.init_from_data(x)
    codes = rq.encode(x)
    errs = [
        float(((x - rq.decode(codes[:, :lvl]).detach()) ** 2).sum(1).mean()) for lvl in range(1, 5)
    ]
    assert all(a >= b - 1e-6 for a, b in zip(errs, errs[1:])), errs


def test_straight_through_gradients_reach_encoder_and_codebooks():
    torch.manual_seed(0)
    enc = torch.nn.Linear(5, 4)
    rq = ResidualQuantizer(cfg=ResidualQuantizerConfig(levels=2, codebook_size=8, dim=4))
    x = torch.randn(64, 5)
    out = rq(enc(x))  # first call k-means-initialises
    loss = (out.quantized**2).sum() + sum(out.losses.values())
    loss.backward()
    assert enc.weight.grad is not None and enc.weight.grad.abs().sum() > 0
    assert rq.codebooks.grad is not None and rq.codebooks.grad.abs().sum() > 0
    # the STE passes the quantized value forward
    torch.testing.assert_close(out.quantized, rq.decode(out.codes), rtol=1e-5, atol=1e-5)


def test_kmeans_deterministic_and_no_empty_clusters():
    g = torch.Generator().manual_seed(2)
    # one tight blob far away + noise: naive init leaves clusters empty
    x = torch.cat([torch.randn(400, 3, generator=g), 50 + 0.01 * torch.randn(5, 3, generator=g)])
    a = kmeans(x, KMeansConfig(k=32, iters=10, seed=7))
    b = kmeans(x, KMeansConfig(k=32, iters=10, seed=7))
    assert torch.equal(a, b)
    counts = torch.bincount(nearest(x, a), minlength=32)
    assert (counts > 0).sum() >= 30


def test_faiss_backend_agrees_on_quality():
    g = torch.Generator().manual_seed(3)
    centers = torch.randn(8, 10, generator=g) * 10
    x = centers.repeat_interleave(50, 0) + torch.randn(400, 10, generator=g)
    errs = {}
    for backend in ("torch", "faiss"):
        c = kmeans(x, KMeansConfig(k=16, iters=20, backend=backend, seed=0))
        errs[backend] = float(((x - c[nearest(x, c)]) ** 2).sum(1).mean())
    # both find the blobs (error below d * noise variance = 10), torch within 25% of faiss
    assert max(errs.values()) < 10.0 and errs["torch"] <= 1.25 * errs["faiss"], errs


def test_ema_codebooks_move_toward_data():
    torch.manual_seed(0)
    rq = ResidualQuantizer(
        cfg=ResidualQuantizerConfig(
            levels=1, codebook_size=4, dim=2, ema=True, ema_decay=0.5, kmeans_init=False
        )
    )
    x = torch.randn(256, 2) + 5.0
    before = float(((x[:, None] - rq.codebooks.data[0]) ** 2).sum(-1).min(1).values.mean())
    rq.train()
    for _ in range(20):
        out = rq(x)
    assert "codebook" not in out.losses
    after = float(((x[:, None] - rq.codebooks.data[0]) ** 2).sum(-1).min(1).values.mean())
    assert after < before / 4


def test_dead_code_restart():
    rq = ResidualQuantizer(
        cfg=ResidualQuantizerConfig(
            levels=1, codebook_size=8, dim=2, kmeans_init=False, dead_code_threshold=1
        )
    )
    rq.codebooks.data[0, 1:] = 1000.0  # only code 0 is ever used
    x = torch.randn(64, 2)
    rq.train()
    rq(x)
    assert rq.restart_dead_codes(x) == 7
    assert len(torch.unique(rq.encode(x))) > 1
    np.testing.assert_array_less(rq.codebooks.data.abs().max().item(), 100.0)
