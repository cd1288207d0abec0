"""Content features: raw text/images -> embeddings with real offline encoders; precomputed
arrays passed through. Cached on disk by a content hash of the inputs + encoder."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmsid.data.base import Modality, RecDataset
from mmsid.data.download import cache_dir
from mmsid.errors import DataError
from mmsid.io import atomic_path, sha256_file

CACHE_VERSION = 1


@dataclass
class ItemFeatures:
    """One embedding matrix per modality, row ``i`` = item ``i``.

    Rows of items that lack a modality are zero **and** flagged False in ``masks``; every
    consumer must read the mask (the reconstruction losses skip those rows, the baselines
    concatenate only what is present).
    """

    embeddings: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    encoders: dict[str, str] = field(default_factory=dict)
    cached: dict[str, bool] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return len(next(iter(self.masks.values())))

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in self.embeddings.items()}


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def _content_key(mod: Modality, encoder_id: str, normalize: bool) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION}|{encoder_id}|{mod.kind}|norm={normalize}".encode())
    if mod.kind in ("text", "image"):
        for i in range(len(mod.raw)):
            h.update(_item_bytes(mod, i))
    else:
        h.update(np.ascontiguousarray(mod.raw, dtype=np.float32).tobytes())
    return h.hexdigest()[:20]


def _item_bytes(mod: Modality, i: int) -> bytes:
    """What item ``i``'s content of ``mod`` is hashed as: the text, the image file's SHA-256,
    or the float32 vector; a marker where it is absent."""
    r = mod.raw[i]
    if mod.kind == "text":
        return b"\x00" if r is None else str(r).encode() + b"\x01"
    if mod.kind == "image":
        return b"\x00" if r is None else sha256_file(r).encode()
    return np.ascontiguousarray(r, dtype=np.float32).tobytes() if mod.mask[i] else b"\x00"


def _encode(mod: Modality, encoders: dict, device: str, progress: bool) -> tuple[np.ndarray, str]:
    idx = np.flatnonzero(mod.mask)
    if mod.kind == "embedding":
        # a copy: normalising in place would change the caller's (the data set's) arrays
        return np.array(mod.raw, dtype=np.float32, copy=True), "precomputed"
    if mod.kind == "text":
        from mmsid.features.text import DIM, TextEncoder

        if "text" not in encoders:
            encoders["text"] = TextEncoder(device=device)
        enc = encoders["text"]
        # encode each distinct string once (Beauty's category view: 12,101 items, 254 strings)
        uniq, inverse = np.unique(
            np.asarray([mod.raw[i] for i in idx], dtype=object), return_inverse=True
        )
        out = np.zeros((len(mod.raw), DIM), dtype=np.float32)
        out[idx] = enc.encode(list(uniq), progress=progress)[inverse]
        return out, enc.encoder_id
    if mod.kind == "image":
        from mmsid.features.image import DIM, ImageEncoder

        if "image" not in encoders:
            encoders["image"] = ImageEncoder(device=device)
        enc = encoders["image"]
        out = np.zeros((len(mod.raw), DIM), dtype=np.float32)
        out[idx] = enc.encode([mod.raw[i] for i in idx], progress=progress)
        return out, enc.encoder_id
    raise DataError(f"modality '{mod.name}': unknown kind '{mod.kind}'")


def embed_modality(
    mod: Modality,
    *,
    normalize: bool = True,
    device: str = "cpu",
    progress: bool = True,
    encoders: dict | None = None,
) -> tuple[np.ndarray, np.ndarray, str]:
    """One modality's raw content -> (emb (N, d) float32, mask (N,), encoder id), uncached:
    what :func:`build_features` computes for a data set, and what new items get
    (mmsid.assign). Rows without the modality are zero; NaN/inf output is refused."""
    emb, enc_id = _encode(mod, {} if encoders is None else encoders, device, progress)
    mask = mod.mask.copy()
    if not np.isfinite(emb[mask]).all():
        raise DataError(f"{mod.source}: modality '{mod.name}' gave NaN/inf embeddings")
    if normalize:
        emb[mask] = l2_normalize(emb[mask])
    emb[~mask] = 0.0
    return emb, mask, enc_id


def item_content_hashes(mods: list[Modality]) -> list[str]:
    """Per item, a SHA-256 (32 hex) of everything a tokenizer input row is computed from:
    each modality's name and raw content (text, the image file's bytes, or the float32
    vector), a marker where it is absent. Equal content gives equal hashes on any machine,
    unlike a hash of the encoders' floating-point output."""
    n = len(mods[0].mask) if mods else 0
    hs = [hashlib.sha256() for _ in range(n)]
    for mod in mods:
        for i, h in enumerate(hs):
            h.update(mod.name.encode() + b"\x02" + _item_bytes(mod, i))
    return [h.hexdigest()[:32] for h in hs]


def _encoder_id(kind: str) -> str:
    if kind == "text":
        from mmsid.features.text import ENCODER_ID

        return ENCODER_ID
    if kind == "image":
        from mmsid.features.image import ENCODER_ID

        return ENCODER_ID
    return "precomputed"


def build_features(
    ds: RecDataset,
    *,
    modalities: list[str] | None = None,
    normalize: bool = True,
    device: str = "cpu",
    cache: str | Path | None = None,
    progress: bool = True,
) -> ItemFeatures:
    """Embed every requested modality of ``ds`` (default: all), reading the cache when the
    content hash + encoder match.

    Args:
        normalize: L2-normalise each present row (the spec's setting; default on).
        cache: folder for cached arrays (default ``$MMSID_CACHE_DIR/features``).
    Returns:
        ItemFeatures with float32 ``(n_items, d)`` arrays and bool ``(n_items,)`` masks.
    """
    names = list(ds.modalities) if modalities is None else modalities
    unknown = [m for m in names if m not in ds.modalities]
    if unknown:
        raise DataError(f"{ds.name}: no modality {unknown}; available: {list(ds.modalities)}")
    folder = Path(cache) if cache is not None else cache_dir() / "features"
    encoders: dict = {}
    feats = ItemFeatures({}, {})
    for name in names:
        mod = ds.modalities[name]
        t0 = time.perf_counter()
        enc_id = _encoder_id(mod.kind)
        key = _content_key(mod, enc_id, normalize)
        path = folder / ds.name / f"{name}-{key}.npz"
        if path.exists():
            with np.load(path) as z:
                emb, mask = z["embedding"], z["mask"]
            feats.cached[name] = True
        else:
            emb, mask, enc_id = embed_modality(
                mod, normalize=normalize, device=device, progress=progress, encoders=encoders
            )
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, embedding=emb, mask=mask)
            feats.cached[name] = False
        feats.embeddings[name] = emb.astype(np.float32, copy=False)
        feats.masks[name] = mask.astype(bool, copy=False)
        feats.encoders[name] = enc_id
        feats.seconds[name] = time.perf_counter() - t0
    return feats
