"""PQ / OPQ: long, parallel semantic IDs (Jegou et al. 2011; Ge et al. 2013), fitted by faiss.

The input ``x`` (d) is rotated by an orthogonal matrix ``A`` (OPQ; the identity for plain PQ)
into ``d_out = m * d_sub`` dimensions, cut into ``m`` sub-vectors, and each sub-vector gets the
index of its nearest centroid in its own codebook of ``K`` (256) codes:

    y = A x                          (d_out,)  d_out = ceil(d / m) * m (zero rows pad A)
    code_j = argmin_c || y[j d_sub : (j+1) d_sub] - C_j[c] ||^2       j = 0 .. m-1

The ``m`` codes are unordered (no residual chain): the parallel-SID retriever reads them all
at once; RPG (Hou et al., KDD 2025) uses such OPQ IDs with 16 to 64 codes.

Optional PCA first (``pca_dim`` > 0; the RPG authors' released tokenizer does this): the
input is centred on its mean over the fitted items and projected on its top ``p`` principal
axes, each scaled to unit variance when ``pca_whiten`` (RPG: sklearn's ``PCA(whiten=True)``,
768 -> 128 dims for sentence-T5, 3072 -> 512 for OpenAI's embeddings), so that every kept
direction gets the same share of the codes whatever its variance:

    z = P (x - mu)                   (p,)   P = diag(1 / s_k) V_k   (V_k: top-p right singular
                                             vectors of the centred X, s_k their std)
    x_hat = mu + V_k^T diag(s_k) z_hat      (reconstruction back in the input space)

and OPQ runs on ``z``. With ``pca_dim`` 0 (the default) ``mu`` = 0 and ``P`` = I.

Fitting (non-parametric OPQ, Ge et al. 2013, as faiss's ``OPQMatrix``): start from the
identity, then alternate ``opq_iters`` times (a) a few k-means rounds per sub-space on
``Y = X A^T`` (warm-started) and (b) the orthogonal Procrustes step: with
``U S V^T = svd(Yhat^T X)``, ``A = U V^T`` minimises ``||X A^T - Yhat||`` over matrices with
orthonormal columns; then a full k-means per sub-space. ``backend="torch"`` (default) runs
this with mmsid's k-means; ``backend="faiss"`` calls faiss's ``OPQMatrix`` and
``ProductQuantizer``. The torch path is the default because faiss's OPQ, run in the same
process as torch's training, aborted twice with a glibc heap-corruption error on this project's
machine (two OpenMP runtimes in one process); the tests check the torch encoder against
faiss's PQ encoder and the rotation against the PQ baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mmsid.errors import ConfigError
from mmsid.quantizers.base import sq_distances
from mmsid.quantizers.kmeans import KMeansConfig, kmeans
from mmsid.quantizers.tokenizer import Tokenizer


@dataclass(frozen=True)
class OPQConfig:
    levels: int = 32  # m: codes per item (sub-vectors)
    codebook_size: int = 256  # K per sub-vector, a power of 2 (faiss stores log2 K bits)
    rotate: bool = True  # OPQ (learned rotation); False = plain PQ on the input axes
    opq_iters: int = 20  # OPQ's alternating rotation / PQ rounds
    inner_iters: int = 4  # k-means rounds per sub-space inside each OPQ round (faiss: 4)
    kmeans_iters: int = 25  # k-means iterations per sub-quantizer, final fit
    backend: str = "torch"  # torch | faiss (see the module docstring)
    pca_dim: int = 0  # > 0: OPQ on the top pca_dim principal axes (RPG's tokenizer); 0: off
    pca_whiten: bool = True  # with pca_dim: each axis scaled to unit variance (RPG's)
    seed: int = 0


class ProductCodes(nn.Module):
    """The fitted rotation (d_out, p) and codebooks (m, K, d_sub); with PCA (``p`` > 0) also
    the input's mean (d_in,), its projection P (p, d_in) and P's inverse (p, d_in)."""

    def __init__(self, d_in: int, m: int, K: int, p: int = 0) -> None:
        super().__init__()
        self.pca = p > 0
        d_out = -(-(p or d_in) // m) * m
        if self.pca:
            self.register_buffer("mean", torch.zeros(d_in))
            self.register_buffer("project", torch.zeros(p, d_in))  # z = (x - mu) P^T
            self.register_buffer("unproject", torch.zeros(p, d_in))  # x - mu ~ z @ this
        self.register_buffer("rotation", torch.zeros(d_out, p or d_in))
        self.register_buffer("codebooks", torch.zeros(m, K, d_out // m))

    def to_pca(self, x: torch.Tensor) -> torch.Tensor:
        """(N, d_in) -> (N, p) the input OPQ quantizes (``x`` itself without PCA)."""
        return (x - self.mean) @ self.project.T if self.pca else x

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(N, d_in) -> (N, m) codes."""
        return pq_encode(self.to_pca(x) @ self.rotation.T, self.codebooks)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(N, m) codes -> (N, d_in) reconstruction (A has orthonormal columns)."""
        z = pq_decode(codes, self.codebooks) @ self.rotation  # (N, p)
        return self.mean + z @ self.unproject if self.pca else z


def fit_pca(x: torch.Tensor, p: int, whiten: bool) -> tuple[torch.Tensor, ...]:
    """(N, d) -> mean (d,), P (p, d), P's inverse on its row space (p, d): the top ``p``
    principal axes of ``x`` (each scaled to unit variance over ``x`` when ``whiten``)."""
    mu = x.mean(0)
    _, s, vt = torch.linalg.svd(x - mu, full_matrices=False)  # s: (min(N, d),), vt: (., d)
    std = (s[:p] / max(len(x) - 1, 1) ** 0.5).clamp_min(1e-12)  # (p,) std along each axis
    if not whiten:
        return mu, vt[:p], vt[:p]
    return mu, vt[:p] / std[:, None], vt[:p] * std[:, None]


def pq_encode(y: torch.Tensor, books: torch.Tensor) -> torch.Tensor:
    """(N, m d_sub) rotated vectors, (m, K, d_sub) codebooks -> (N, m) nearest codes."""
    m, _, ds = books.shape
    ys = y.view(len(y), m, ds)  # (N, m, d_sub)
    return torch.stack([sq_distances(ys[:, j], books[j]).argmin(1) for j in range(m)], 1)


def pq_decode(codes: torch.Tensor, books: torch.Tensor) -> torch.Tensor:
    """(N, m) codes -> (N, m d_sub) concatenated centroids (in the rotated space)."""
    return torch.cat([books[j][codes[:, j]] for j in range(books.shape[0])], 1)


class OPQTokenizer(Tokenizer):
    method = "opq"
    Config = OPQConfig

    def _build(self) -> None:
        K, p = self.cfg.codebook_size, self.cfg.pca_dim
        if K < 2 or K & (K - 1):
            raise ConfigError(f"opq: codebook_size {K} must be a power of 2 (faiss stores bits)")
        if not 0 <= p <= self.input_dim:
            raise ConfigError(
                f"opq: pca_dim {p} must be between 0 (off) and the input dimension {self.input_dim}"
            )
        self.module = ProductCodes(self.input_dim, self.cfg.levels, K, p)

    def _fit(self, x: torch.Tensor, *, warm_start: Tokenizer | None = None, **_: object) -> None:
        """``warm_start``: a fitted (O)PQ of the same shapes whose rotation and codebooks start
        this fit (stable IDs across retrains, mmsid.align). faiss's OPQ takes no initial
        rotation or codebooks, so a warm start always runs the torch fit (the same
        alternation: k-means per subspace, then the orthogonal Procrustes rotation). A warm
        start keeps the previous fit's PCA, so its rotation and codebooks stay in their space."""
        self._build()
        if self.cfg.backend not in ("torch", "faiss"):
            raise ConfigError(f"opq: backend '{self.cfg.backend}' is not torch or faiss")
        if self.cfg.pca_dim > len(x):
            raise ConfigError(f"opq: pca_dim {self.cfg.pca_dim} exceeds the {len(x)} items")
        state = self._warm_state(warm_start)
        if state is not None:  # the previous fit whole: its PCA, rotation and codebooks
            self.module.load_state_dict(state)
        elif self.module.pca:
            pca = fit_pca(x, self.cfg.pca_dim, self.cfg.pca_whiten)
            for buf, value in zip(
                (self.module.mean, self.module.project, self.module.unproject), pca
            ):
                buf.copy_(value)
        z = self.module.to_pca(x)  # (N, p)
        if state is not None:
            rot, books = self._fit_torch(z, init=(state["rotation"], state["codebooks"]))
        elif self.cfg.backend == "faiss":
            rot, books = self._fit_faiss(z)
        else:
            rot, books = self._fit_torch(z)
        self.module.rotation.copy_(rot)
        self.module.codebooks.copy_(books)
        err = float(((self.reconstruct(x) - x) ** 2).sum(1).mean())
        self.history = [{"reconstruction_sq_error": err}]

    def _fit_torch(
        self, x: torch.Tensor, init: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x``: (N, p) the input after PCA (mmsid's input itself without it). ``init``:
        (rotation (d_out, p), codebooks (m, K, d_sub)) to start from."""
        m, K = self.cfg.levels, self.cfg.codebook_size
        d_out, d_in = self.module.rotation.shape
        rot = torch.eye(d_out, d_in)  # (d_out, d_in): zero rows pad d_in up to m * d_sub
        books = None
        if init is not None:
            rot, books = init[0].clone(), init[1].clone()

        def fit_books(y: torch.Tensor, iters: int, init: torch.Tensor | None) -> torch.Tensor:
            ys = y.view(len(y), m, -1)  # (N, m, d_sub)
            return torch.stack(
                [
                    kmeans(
                        ys[:, j].contiguous(),
                        KMeansConfig(k=K, iters=iters, seed=self.cfg.seed + j),
                        None if init is None else init[j],
                    )
                    for j in range(m)
                ]
            )  # (m, K, d_sub)

        if self.cfg.rotate:
            for _ in range(self.cfg.opq_iters):
                y = x @ rot.T  # (N, d_out)
                books = fit_books(y, self.cfg.inner_iters, books)
                y_hat = pq_decode(pq_encode(y, books), books)  # (N, d_out)
                u, _, vt = torch.linalg.svd(y_hat.T @ x, full_matrices=False)
                rot = u @ vt  # (d_out, d_in), orthonormal columns
        return rot, fit_books(x @ rot.T, self.cfg.kmeans_iters, books)

    def _fit_faiss(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        import faiss

        xs = np.ascontiguousarray(x.numpy(), dtype=np.float32)
        d_out = self.module.rotation.shape[0]
        m, nbits = self.cfg.levels, int(np.log2(self.cfg.codebook_size))
        if self.cfg.rotate:
            opq = faiss.OPQMatrix(xs.shape[1], m, d_out)
            opq.niter = self.cfg.opq_iters
            opq.niter_pq = self.cfg.inner_iters
            inner = faiss.ProductQuantizer(d_out, m, nbits)  # kept alive: opq holds a pointer
            inner.cp.seed = self.cfg.seed
            inner.cp.min_points_per_centroid = 1  # small catalogues: no faiss warning spam
            opq.pq = inner
            opq.train(xs)
            rot = faiss.vector_to_array(opq.A).reshape(d_out, xs.shape[1])
        else:
            rot = np.eye(d_out, xs.shape[1], dtype=np.float32)
        y = np.ascontiguousarray(xs @ rot.T)
        pq = faiss.ProductQuantizer(d_out, m, nbits)
        pq.cp.seed = self.cfg.seed
        pq.cp.niter = self.cfg.kmeans_iters
        pq.cp.min_points_per_centroid = 1
        pq.train(y)
        books = faiss.vector_to_array(pq.centroids).reshape(m, -1, d_out // m)
        return torch.from_numpy(rot), torch.from_numpy(books)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.module.to(x.device).encode(x)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.module.decode(self.module.encode(x))
