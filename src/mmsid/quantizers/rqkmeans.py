"""RQ-KMeans: level 1 k-means on x; level l k-means on the residual x - sum_{k<l} c_k(x).

No gradient training: the fitted centroids sit in a :class:`ResidualQuantizer` so encoding
shares the GEMM path of every other residual tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from mmsid.errors import DataError
from mmsid.quantizers.residual import ResidualQuantizer, ResidualQuantizerConfig
from mmsid.quantizers.tokenizer import Tokenizer


@dataclass(frozen=True)
class RQKMeansConfig:
    levels: int = 3
    codebook_size: int = 256
    kmeans_iters: int = 25
    backend: Literal["torch", "faiss"] = "torch"
    seed: int = 0


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
        init = None
        if warm_start is not None:
            init = warm_start.module.codebooks.data
            if init.shape != self.module.codebooks.shape or self.cfg.backend != "torch":
                raise DataError(
                    f"warm start: codebooks {tuple(init.shape)} (torch backend only) cannot "
                    f"start a fit of {tuple(self.module.codebooks.shape)}"
                )
        mse = self.module.init_from_data(x, backend=self.cfg.backend, init=init)
        self.history = [{"level": lvl, "residual_mse": m} for lvl, m in enumerate(mse)]

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.module.to(x.device).encode(x)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.module.decode(self.module.encode(x))
