"""Feature rows read a chunk at a time, for catalogues larger than memory.

A tokenizer given a ``.npy`` path (or :class:`Rows`) instead of an array never holds the whole
matrix: it validates, samples, trains and encodes chunk by chunk (``Tokenizer.fit`` /
``transform``). The file is read with positioned reads (``os.preadv``), not memory-mapped:
pages of a mapping that a pass touches count toward the process's resident memory, so a
mapped 15 GB file read end to end shows as 15 GB of RSS; reads go through the page cache and
leave the process at the size of its chunk. Storage may be float16 (half the disk and I/O);
rows are always handed out as float32.

    np.save("items.npy", features.astype(np.float16))   # or write it in pieces: write_npy
    tok = tokenizer_for("rq-kmeans").fit("items.npy")
    codes = tok.transform("items.npy")                  # (N, L), chunk by chunk
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from mmsid.errors import DataError

CHUNK = 32768  # rows per chunk: 32768 x 768 float32 = 96 MiB


class Rows:
    """(N, d) rows of an in-memory array or of a ``.npy`` file (C order, float16/32/64)."""

    def __init__(self, source: np.ndarray | str | Path) -> None:
        self.path: Path | None = None
        self._array: np.ndarray | None = None
        if isinstance(source, np.ndarray):
            if source.ndim != 2:
                raise DataError(f"features: expected (items, dim), got shape {source.shape}")
            self._array = source
            self.shape, self.dtype = source.shape, source.dtype
            return
        self.path = Path(source)
        if not self.path.is_file():
            raise DataError(f"{self.path}: no such feature file (a .npy of shape (items, dim))")
        with open(self.path, "rb") as f:
            try:
                major, _ = np.lib.format.read_magic(f)
                read = {1: np.lib.format.read_array_header_1_0}.get(
                    major, np.lib.format.read_array_header_2_0
                )
                shape, fortran, dtype = read(f)
            except ValueError as e:
                raise DataError(f"{self.path}: not a .npy file ({e})") from None
            self._offset = f.tell()
        if len(shape) != 2 or fortran or dtype.kind != "f" or dtype.hasobject:
            raise DataError(
                f"{self.path}: need a C-order float array of shape (items, dim); got shape "
                f"{shape}, dtype {dtype}{', Fortran order' if fortran else ''}"
            )
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def dim(self) -> int:
        return self.shape[1]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as float32."""
        stop = min(stop, len(self))
        if self._array is not None:
            return np.asarray(self._array[start:stop], dtype=np.float32)
        out = np.empty((max(0, stop - start), self.dim), dtype=self.dtype)
        self._pread(memoryview(out).cast("B"), start)
        return out.astype(np.float32, copy=False)

    def take(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` (any order, repeats allowed) as float32, one read per row."""
        idx = np.asarray(idx, dtype=np.int64)
        if self._array is not None:
            return np.asarray(self._array[idx], dtype=np.float32)
        out = np.empty((len(idx), self.dim), dtype=self.dtype)
        flat = memoryview(out).cast("B")
        row = self.dim * self.dtype.itemsize
        with open(self.path, "rb", buffering=0) as f:
            fd = f.fileno()
            for j, i in enumerate(idx.tolist()):
                os.preadv(fd, [flat[j * row : (j + 1) * row]], self._offset + i * row)
        return out.astype(np.float32, copy=False)

    def _pread(self, buf: memoryview, start: int) -> None:
        row = self.dim * self.dtype.itemsize
        with open(self.path, "rb", buffering=0) as f:
            got = os.preadv(f.fileno(), [buf], self._offset + start * row)
        if got != len(buf):
            raise DataError(f"{self.path}: file ends early (truncated .npy?)")

    def chunks(self, size: int = CHUNK) -> Iterator[tuple[int, np.ndarray]]:
        """(start row, float32 rows) for consecutive chunks of ``size`` rows."""
        for s in range(0, len(self), size):
            yield s, self.read(s, s + size)

    def validate(self, *, source: str = "features", dim: int | None = None) -> None:
        """Check what ``check_features`` checks, a chunk at a time: the dimension, finite
        values, and (for fitting, ``dim`` None) non-zero variance."""
        source = str(self.path) if self.path is not None else source
        if dim is not None and self.dim != dim:
            raise DataError(
                f"{source}: dimension {self.dim} but the tokenizer was fitted on dimension "
                f"{dim}; use the same features (modalities, encoders) as in fit"
            )
        if len(self) == 0:
            raise DataError(f"{source}: no rows")
        shift = self.read(0, 1)[0].astype(np.float64)  # sums around one row: no cancellation
        total, sq = np.zeros(self.dim), np.zeros(self.dim)
        for s, x in self.chunks():
            bad = nonfinite_rows(torch.from_numpy(x)).numpy()
            if bad.any():
                raise DataError(
                    f"{source}: row {s + int(np.flatnonzero(bad)[0])} holds NaN or inf "
                    f"({int(bad.sum())} rows in this chunk); clean or mask those items first"
                )
            c = x - shift
            total, sq = total + c.sum(0), sq + (c * c).sum(0)
        n = len(self)
        if dim is None and float((sq / n - (total / n) ** 2).sum()) <= 1e-12:
            raise DataError(
                f"{source}: features have zero variance (every item identical); check the "
                "modality columns / encoder output"
            )


def nonfinite_rows(t: torch.Tensor) -> torch.Tensor:
    """(N, d) -> (N,) bool: rows holding a NaN or an inf.

    Fast path: a NaN or an inf makes its row's sum NaN or inf, so finite row sums clear every
    row with one reduction (a fifth of assignment time went to the element-wise test). The
    exact element-wise test runs only when some sum is not finite, which also happens for
    finite rows whose sum overflows; those rows come out clean there.
    """
    if t.numel() == 0 or bool(torch.isfinite(t.sum(dim=1)).all()):
        return torch.zeros(t.shape[0], dtype=torch.bool, device=t.device)
    return ~torch.isfinite(t).all(dim=1)


def batch_reader(x, device) -> tuple[int, Callable]:
    """(row count, ``get(idx) -> (B, d) float32 tensor on device``) for a training loop over
    an in-memory tensor (moved to ``device`` once) or :class:`Rows` (each batch read from the
    file: the same seeded batches, so the same fit)."""
    if isinstance(x, Rows):

        def get(idx):
            return torch.from_numpy(x.take(idx.cpu().numpy())).to(device)

        return len(x), get
    x = x.to(device)
    return x.shape[0], x.__getitem__


def write_npy(path: str | Path, shape: tuple[int, int], dtype, chunks: Iterable[np.ndarray]):
    """Write a (N, d) ``.npy`` from row chunks, without holding it (atomically, as every mmsid
    file). The chunks must add up to ``shape``."""
    from mmsid.io import atomic_path

    dtype = np.dtype(dtype)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False}
        np.lib.format.write_array_header_2_0(f, {**header, "shape": tuple(shape)})
        rows = 0
        for c in chunks:
            c = np.ascontiguousarray(c, dtype=dtype)
            if c.ndim != 2 or c.shape[1] != shape[1]:
                raise ValueError(f"chunk of shape {c.shape} for a file of shape {shape}")
            f.write(c.tobytes())
            rows += len(c)
        if rows != shape[0]:
            raise ValueError(f"chunks hold {rows} rows, the header says {shape[0]}")
