"""RQ-KMeans: level 1 k-means on x; level l k-means on the residual x - sum_{k<l} c_k(x).

No gradient training: the fitted centroids sit in a :class:`ResidualQuantizer` so encoding
shares the GEMM path of every other residual tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from mmsid.errors import DataError
from mmsid.quantizers.residual import ResidualQuantizer, ResidualQuantizerConfig
from mmsid.quantizers.rows import Rows
from mmsid.quantizers.tokenizer import Tokenizer


@dataclass(frozen=True)
class RQKMeansConfig:
    levels: int = 3
    codebook_size: int = 256
    kmeans_iters: int = 25
    backend: Literal["torch", "faiss"] = "torch"
    seed: int = 0
    # a catalogue fitted a chunk at a time (Tokenizer.fit on a .npy path): rows sampled per
    # code (k-means subsamples to 256 per centroid in memory too: faiss's default rule)
    sample_per_code: int = 256


class RQKMeansTokenizer(Tokenizer):
    method = "rq-kmeans"
    Config = RQKMeansConfig

    def _build(self) -> None:
        self.module = ResidualQuantizer(
            cfg=ResidualQuantizerConfig(
                levels=self.cfg.levels,
                codebook_size=self.cfg.codebook_size,
                dim=self.input_dim,
                kmeans_init=False,
                kmeans_iters=self.cfg.kmeans_iters,
                seed=self.cfg.seed,
            )
        )

    def _fit(self, x: torch.Tensor, *, warm_start: Tokenizer | None = None, **_: object) -> None:
        """``warm_start``: a fitted RQ-KMeans of the same shape whose codebooks start each
        level's k-means (stable IDs across retrains, mmsid.align)."""
        self._build()
        init = self._warm(warm_start)
        mse = self.module.init_from_data(x, backend=self.cfg.backend, init=init)
        self.history = [{"level": lvl, "residual_mse": m} for lvl, m in enumerate(mse)]

    def _fit_rows(self, rows: Rows, *, warm_start: Tokenizer | None = None, **_: object) -> None:
        """A catalogue read a chunk at a time. Each level's k-means fits on a seeded sample of
        ``sample_per_code`` rows per code (what k-means subsamples to in memory as well, so
        an in-memory fit of a catalogue above that size differs only in which rows it draws);
        the residual MSE of every level is then measured on all rows, chunk by chunk. Memory:
        the sample and one chunk."""
        self._build()
        init = self._warm(warm_start)
        n = len(rows)
        m = min(n, self.cfg.codebook_size * self.cfg.sample_per_code)
        idx = np.sort(np.random.default_rng(self.cfg.seed).choice(n, m, replace=False))
        self.module.init_from_data(
            torch.from_numpy(rows.take(idx)), backend=self.cfg.backend, init=init
        )
        C = self.module.codebooks.detach()  # (L, K, d)
        tables = self.module.lookup_tables()
        sq = np.zeros(self.cfg.levels)
        for _, chunk in rows.chunks():
            r = torch.from_numpy(chunk)
            codes = self.module.encode(r, tables=tables)  # (B, L)
            for lvl in range(self.cfg.levels):
                r = r - C[lvl, codes[:, lvl]]
                sq[lvl] += float((r * r).sum())
        self.history = [
            {"level": lvl, "residual_mse": float(sq[lvl] / n), "fit_rows": int(m)}
            for lvl in range(self.cfg.levels)
        ]

    def _warm(self, warm_start: Tokenizer | None) -> torch.Tensor | None:
        """The previous fit's codebooks (L, K, d) to start each level's k-means from."""
        state = self._warm_state(warm_start)  # same method and shapes, or DataError
        if state is None:
            return None
        if self.cfg.backend != "torch":
            raise DataError(
                "warm start: RQ-KMeans starts from given codebooks on the torch backend only"
            )
        return state["codebooks"]

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.module.to(x.device).encode(x)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.module.decode(self.module.encode(x))
