"""The tokenizer contract: ``fit(features)``, ``transform(features) -> codes``, ``save``/``load``.

A saved tokenizer is one torch file: format tag + version, mmsid version, method, config,
input dimension, module state and training history. Loading a file of another format version
raises :class:`~mmsid.errors.VersionError`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from mmsid import __version__
from mmsid.errors import DataError, VersionError
from mmsid.io import load_torch, save_torch, stable_hash
from mmsid.quantizers.rows import Rows, nonfinite_rows

FORMAT = "mmsid-tokenizer"
FORMAT_VERSION = 1
_REGISTRY: dict[str, type[Tokenizer]] = {}


def check_features(
    x: np.ndarray | torch.Tensor, *, source: str = "features", dim: int | None = None
) -> torch.Tensor:
    """Validate a (N, d) feature matrix; return it as a float32 tensor.

    Raises DataError for a wrong shape or dimension, NaN/inf rows, or zero variance.
    """
    t = torch.as_tensor(
        np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32
    )
    if t.ndim != 2:
        raise DataError(f"{source}: expected a 2-D (items, dim) array, got shape {tuple(t.shape)}")
    if dim is not None and t.shape[1] != dim:
        raise DataError(
            f"{source}: dimension {t.shape[1]} but the tokenizer was fitted on "
            f"dimension {dim}; use the same features (modalities, encoders) as in fit"
        )
    bad = nonfinite_rows(t)
    if bad.any():
        raise DataError(
            f"{source}: row {int(bad.nonzero()[0])} holds NaN or inf "
            f"({int(bad.sum())} rows in all); clean or mask those items first"
        )
    return t


class Tokenizer:
    """Base class. Subclasses set ``method`` and ``Config`` and implement ``_fit`` and
    ``_encode``; ``self.module`` holds every learned tensor."""

    method: ClassVar[str]
    Config: ClassVar[type]

    def __init__(self, cfg: Any | None = None) -> None:
        self.cfg = cfg if cfg is not None else self.Config()
        self.input_dim: int | None = None
        self.module: torch.nn.Module | None = None
        self.history: list[dict[str, float]] = []
        # (L, K) relabelling applied to every code the tokenizer emits (stable IDs across
        # retrains: mmsid.align); None = the identity
        self.code_map: np.ndarray | None = None

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if getattr(cls, "method", None):
            _REGISTRY[cls.method] = cls

    @property
    def levels(self) -> int:
        return self.cfg.levels

    @property
    def codebook_size(self) -> int:
        return self.cfg.codebook_size

    def config_hash(self) -> str:
        return stable_hash({"method": self.method, **dataclasses.asdict(self.cfg)})

    def fit(self, x: np.ndarray | torch.Tensor | str | Path | Rows, **kw: Any) -> Tokenizer:
        """Fit on (N, d) features: an array, or a ``.npy`` path / :class:`Rows` for a catalogue
        larger than memory (read a chunk at a time; tokenizers with ``_fit_rows``)."""
        if isinstance(x, (str, Path, Rows)):
            return self._fit_stream(x if isinstance(x, Rows) else Rows(x), **kw)
        t = check_features(x)
        n = t.shape[0]
        if n < self.cfg.codebook_size:
            # Decision: an error, not a silent K change — SID length/vocabulary must stay what
            # the user asked for, since downstream models are sized from it.
            raise DataError(
                f"{n} items but codebook_size={self.cfg.codebook_size}: k-means needs "
                f"at least one item per code; pass --codebook-size {n} or smaller"
            )
        if float(t.var(dim=0).sum()) <= 1e-12:
            raise DataError(
                "features have zero variance (every item identical); check the "
                "modality columns / encoder output"
            )
        self.input_dim = t.shape[1]
        self.code_map = None  # a refit invalidates any relabelling
        self._fit(t, **kw)
        return self

    def _fit_stream(self, rows: Rows, **kw: Any) -> Tokenizer:
        if not hasattr(self, "_fit_rows"):
            raise DataError(
                f"{self.method} fits in memory: load {rows.path} into an array (tokenizers "
                "that fit a chunk at a time: rq-kmeans, rq-vae)"
            )
        rows.validate()
        if len(rows) < self.cfg.codebook_size:
            raise DataError(
                f"{rows.path}: {len(rows)} items but codebook_size={self.cfg.codebook_size}"
            )
        self.input_dim = rows.dim
        self.code_map = None
        self._fit_rows(rows, **kw)
        return self

    def transform(
        self, x: np.ndarray | torch.Tensor | str | Path | Rows, *, device: str = "cpu"
    ) -> np.ndarray:
        """(N, d) features -> (N, L) int64 codes (no collision level; see mmsid.ids). A
        ``.npy`` path or :class:`Rows` is encoded a chunk at a time."""
        if self.module is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() or load()")
        self.module.eval()
        if isinstance(x, (str, Path, Rows)):
            rows = x if isinstance(x, Rows) else Rows(x)
            if rows.dim != self.input_dim:
                raise DataError(
                    f"{rows.path}: dimension {rows.dim} but the tokenizer was fitted on "
                    f"dimension {self.input_dim}; use the same features as in fit"
                )
            codes = np.empty((len(rows), self.levels), dtype=np.int64)
            for s, chunk in rows.chunks():
                t = check_features(chunk, source=f"{rows.path or 'features'} (rows from {s})")
                with torch.no_grad():
                    codes[s : s + len(chunk)] = self._encode(t.to(device)).cpu().numpy()
        else:
            t = check_features(x, dim=self.input_dim)
            with torch.no_grad():
                codes = self._encode(t.to(device)).cpu().numpy()
        if self.code_map is not None:
            codes = np.take_along_axis(self.code_map.T, codes, axis=0)  # (N, L)
        return codes

    def _fit(self, x: torch.Tensor, **kw: Any) -> None:
        raise NotImplementedError

    def _warm_state(self, warm_start: Tokenizer | None) -> dict[str, torch.Tensor] | None:
        """The weights of ``warm_start`` (a fitted tokenizer of the same method and shapes)
        to start this fit from, or None: stable IDs across retrains (mmsid.align), where the
        new fit grows out of the previous one so that code j stays near code j. Call after
        ``_build``."""
        if warm_start is None:
            return None
        if warm_start.method != self.method or warm_start.module is None:
            raise DataError(
                f"warm start: a fitted {self.method} tokenizer is needed, got "
                f"{warm_start.method}{'' if warm_start.module is not None else ' (not fitted)'}"
            )
        mine, theirs = self.module.state_dict(), warm_start.module.state_dict()
        diff = set(mine) ^ set(theirs) or {k for k in mine if mine[k].shape != theirs[k].shape}
        if diff:
            raise DataError(
                f"warm start: the previous {self.method} has other shapes ({sorted(diff)[0]}); "
                "retrain with the previous run's settings and features, or drop --align-to"
            )
        return {k: v.detach().clone() for k, v in theirs.items()}

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _build(self) -> None:
        """Create ``self.module`` from ``cfg`` and ``input_dim`` (used by load)."""
        raise NotImplementedError

    # ---- persistence ---------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        save_torch(
            path,
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "mmsid_version": __version__,
                "method": self.method,
                "config": dataclasses.asdict(self.cfg),
                "input_dim": self.input_dim,
                "state": self.module.state_dict(),
                "history": self.history,
                "code_map": None if self.code_map is None else self.code_map.tolist(),
            },
        )

    @staticmethod
    def load(path: str | Path) -> Tokenizer:
        path = Path(path)
        blob = load_torch(path)
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            raise VersionError(f"{path}: not an mmsid tokenizer file")
        if blob.get("format_version") != FORMAT_VERSION:
            raise VersionError(
                f"{path}: tokenizer format version {blob.get('format_version')} (written by "
                f"mmsid {blob.get('mmsid_version')}), this mmsid reads version "
                f"{FORMAT_VERSION}; re-fit with `mmsid tokenize` or install mmsid "
                f"{blob.get('mmsid_version')}"
            )
        cls = _REGISTRY.get(blob["method"])
        if cls is None:
            raise VersionError(f"{path}: unknown tokenizer method '{blob['method']}'")
        tok = cls(cls.Config(**blob["config"]))
        tok.input_dim = blob["input_dim"]
        tok._build()
        tok.module.load_state_dict(blob["state"])
        tok.history = blob.get("history", [])
        if blob.get("code_map") is not None:
            tok.code_map = np.asarray(blob["code_map"], dtype=np.int64)
        return tok


def tokenizer_for(method: str, **cfg: Any) -> Tokenizer:
    if method not in _REGISTRY:
        raise DataError(f"unknown tokenizer method '{method}'; known: {sorted(_REGISTRY)}")
    cls = _REGISTRY[method]
    return cls(cls.Config(**cfg))
