"""PSRQ: alpha = 0 is RQ-KMeans exactly; fit assignments equal transform; prefix keeps meaning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmsid.quantizers import PSRQConfig, PSRQTokenizer, RQKMeansConfig, RQKMeansTokenizer, Tokenizer


def _x(n=2000, d=24, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 5])
def test_alpha_zero_reproduces_rq_kmeans(seed):
    x = _x(seed=seed)
    a = PSRQTokenizer(PSRQConfig(levels=3, codebook_size=32, alpha=0.0, seed=seed)).fit(x)
    b = RQKMeansTokenizer(RQKMeansConfig(levels=3, codebook_size=32, seed=seed)).fit(x)
    np.testing.assert_array_equal(a.transform(x), b.transform(x))


def test_level_one_is_plain_kmeans_and_deeper_levels_differ():
    x = _x()
    a = PSRQTokenizer(PSRQConfig(levels=3, codebook_size=32, alpha=1.0)).fit(x).transform(x)
    b = RQKMeansTokenizer(RQKMeansConfig(levels=3, codebook_size=32)).fit(x).transform(x)
    np.testing.assert_array_equal(a[:, 0], b[:, 0])
    assert (a[:, 1:] != b[:, 1:]).any()


def test_transform_matches_reference_and_round_trips(tmp_path):
    x = _x()
    tok = PSRQTokenizer(PSRQConfig(levels=3, codebook_size=16)).fit(x)
    codes = tok.transform(x)
    # slow reference: per item, per level, brute force over [r ; alpha (x - r)]
    m, d = tok.module, x.shape[1]
    for i in range(0, 2000, 97):
        xi = torch.from_numpy(x[i])
        r = xi.clone()
        for lvl in range(3):
            f = r if lvl == 0 else torch.cat([r, xi - r])
            C = m.codebooks[lvl, :, : f.shape[0]]
            k = int(((C - f) ** 2).sum(1).argmin())
            assert k == codes[i, lvl]
            r = r - m.codebooks[lvl, k, :d]
    tok.save(tmp_path / "p.pt")
    np.testing.assert_array_equal(Tokenizer.load(tmp_path / "p.pt").transform(x), codes)
