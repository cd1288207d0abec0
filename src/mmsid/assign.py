"""IDs for new items without retraining: a tokenize run's own encoders, input preprocessing
and fitted tokenizer give an item its codes; the run's ID store allocates its collision index.

What a tokenize run folder holds for this (written by :func:`write_inputs` and
:func:`seed_store` at tokenize time):

* ``tokenizer.pt``: the fitted tokenizer. Its *version* in the store is the first 16 hex of
  the file's SHA-256, so a refit (even with the same settings) is a new version.
* ``inputs.npz``: the modalities in input order, their kind (text, image, embedding), width,
  encoder, and the centering means when the run centred its input.
* ``ids.sqlite``: the :class:`~mmsid.store.IDStore`, seeded with every catalogue item of the
  run (so new items' collision indices continue the catalogue's, in the same order
  :func:`mmsid.ids.collision_index` gives).

New items come as a table with an ``item`` column and one column per text modality (the text
as the data set's loader composes it, e.g. ml100k-mm's "title | genres") or image modality (a
file path). Any modality may instead be given as a precomputed vector from the run's encoder
(``embeddings={name: (N, d)}``); an embedding-only modality (lfm2k-mm's audio) must be. Each
item needs at least one modality. An item's content hash is computed from this raw content
(:func:`mmsid.features.item_content_hashes`), so assigning the same item with the same content
again returns its SID, and different content is refused unless ``replace``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mmsid.data.base import Modality
from mmsid.errors import DataError
from mmsid.features import embed_modality, item_content_hashes
from mmsid.io import sha256_file
from mmsid.store import IDStore

INPUTS = "inputs.npz"
STORE = "ids.sqlite"
TOKENIZER = "tokenizer.pt"
KINDS = ("text", "image", "embedding")


@dataclass
class RunInputs:
    """How a run builds a tokenizer input row: modalities in order, each L2-normalised,
    centred with the fitted mean (when ``means`` has it) and re-normalised, concatenated."""

    names: list[str]
    kinds: list[str]
    dims: list[int]
    encoders: list[str]
    means: dict[str, np.ndarray] = field(default_factory=dict)

    def save(self, path: str | Path) -> None:
        from mmsid.io import save_npz

        arrays = {
            "names": np.asarray(self.names, dtype=str),
            "kinds": np.asarray(self.kinds, dtype=str),
            "dims": np.asarray(self.dims, dtype=np.int64),
            "encoders": np.asarray(self.encoders, dtype=str),
        }
        for i, n in enumerate(self.names):
            if n in self.means:
                arrays[f"mean{i}"] = np.asarray(self.means[n], dtype=np.float32)
        save_npz(path, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> RunInputs:
        from mmsid.artefacts import check_file

        check_file(path)  # the bytes the tokenize run recorded
        try:
            with np.load(path, allow_pickle=False) as z:
                names = [str(n) for n in z["names"]]
                means = {n: z[f"mean{i}"] for i, n in enumerate(names) if f"mean{i}" in z}
                return cls(
                    names,
                    [str(k) for k in z["kinds"]],
                    [int(d) for d in z["dims"]],
                    [str(e) for e in z["encoders"]],
                    means,
                )
        except (OSError, ValueError, KeyError) as e:
            raise DataError(f"{path}: unreadable run inputs ({e}); re-run `mmsid tokenize`") from e

    def row(self, blocks: dict[str, tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """{name: (emb (N, d) L2-normalised, zero where absent; mask (N,))} -> (N, sum d),
        built by the tokenize stage's own :func:`~mmsid.features.inputs.concat_features`."""
        from mmsid.features import ItemFeatures
        from mmsid.features.inputs import concat_features

        feats = ItemFeatures(
            {n: e for n, (e, _) in blocks.items()}, {n: m for n, (_, m) in blocks.items()}
        )
        return concat_features(feats, self.names, means=self.means)[0].astype(np.float32)


def tokenizer_version(run: str | Path) -> str:
    return sha256_file(Path(run) / TOKENIZER)[:16]


def seed_store(
    run: Path,
    item_ids: np.ndarray,
    codes: np.ndarray,
    hashes: list[str],
    *,
    codebook_size: int,
    cap: int,
    note: str,
    previous: str | Path | None = None,
) -> str:
    """Register the run's tokenizer in ``run/ids.sqlite`` and give every catalogue item its SID
    (one transaction; idempotent when re-run); ``previous``: a run whose store's versions are
    imported first (aligned retrains). Returns the version."""
    version = tokenizer_version(run)
    with IDStore(run / STORE) as store:
        if previous is not None:
            store.import_versions(Path(previous) / STORE)
        store.add_version(version, int(codes.shape[1]), codebook_size, note=note)
        store.assign(version, [str(i) for i in item_ids], codes, hashes, collision_cap=cap)
    return version


class Assigner:
    """A tokenize run folder, opened for assigning IDs to new items.

    Args:
        run: the folder `mmsid tokenize` wrote (or a pipeline stage folder
            ``stages/seed<S>/tokenize-<method>``).
        device: where the text/image encoders and the tokenizer run.
    """

    def __init__(self, run: str | Path, *, device: str = "cpu") -> None:
        import yaml

        from mmsid.quantizers import Tokenizer

        self.run = Path(run)
        for f in (TOKENIZER, INPUTS, STORE, "config.yaml"):
            if not (self.run / f).is_file():
                raise DataError(
                    f"{self.run}: no {f}; RUN must be a folder written by `mmsid tokenize` (or "
                    "a pipeline stage folder stages/seed<S>/tokenize-<method>)"
                )
        cfg = yaml.safe_load((self.run / "config.yaml").read_text())
        self.tok = Tokenizer.load(self.run / TOKENIZER)
        self.inputs = RunInputs.load(self.run / INPUTS)
        self.version = tokenizer_version(self.run)
        self.cap = int(cfg.get("collision_cap") or cfg["codebook_size"])
        self.store = IDStore(self.run / STORE)
        if self.version not in {v["version"] for v in self.store.versions()}:
            raise DataError(
                f"{self.run / STORE}: holds no version {self.version} (tokenizer.pt was "
                "replaced after the store was seeded); re-run `mmsid tokenize`"
            )
        self.device = device
        self._encoders: dict = {}

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Assigner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- inputs ------------------------------------------------------------------------

    def modalities(
        self,
        items: pd.DataFrame,
        embeddings: dict[str, np.ndarray] | None = None,
        *,
        source: str = "items",
        base: Path | None = None,
    ) -> list[Modality | None]:
        """One Modality per run modality (None where nothing was given for any item), read
        from ``items`` columns and ``embeddings``; every error names the column and the fix."""
        embeddings = embeddings or {}
        if "item" not in items.columns:
            raise DataError(f"{source}: no 'item' column (the item ids to assign)")
        if items["item"].isna().any():
            raise DataError(
                f"{source}: 'item' is empty in row {int(items['item'].isna().argmax())}"
            )
        ids = items["item"].astype(str)
        if ids.duplicated().any():
            raise DataError(f"{source}: item '{ids[ids.duplicated()].iloc[0]}' appears twice")
        unknown = sorted(set(embeddings) - set(self.inputs.names))
        if unknown:
            raise DataError(
                f"embeddings for {unknown}: the run's modalities are {self.inputs.names}"
            )
        n = len(items)
        mods: list[Modality | None] = []
        for name, kind, dim in zip(self.inputs.names, self.inputs.kinds, self.inputs.dims):
            if name in embeddings:
                if name in items.columns:
                    raise DataError(f"{source}: '{name}' given both as a column and as embeddings")
                e = np.asarray(embeddings[name], dtype=np.float32)
                if e.ndim != 2 or e.shape != (n, dim):
                    raise DataError(
                        f"embeddings '{name}': shape {e.shape}, expected ({n}, {dim}) (one row "
                        f"per item, in the order of {source})"
                    )
                if not np.isfinite(e).all():
                    raise DataError(f"embeddings '{name}': NaN or inf values")
                present = np.linalg.norm(e, axis=1) > 0  # an all-zero row: absent
                mods.append(Modality(name, "embedding", e, present, source=f"embeddings '{name}'"))
            elif name in items.columns and kind in ("text", "image"):
                col = items[name]
                raw: list = [None if pd.isna(v) or str(v) == "" else str(v) for v in col]
                if kind == "image":
                    raw = [None if r is None else _image_path(r, base, source, name) for r in raw]
                mods.append(Modality(name, kind, raw, source=f"{source}, column '{name}'"))
            elif name in items.columns:
                raise DataError(
                    f"{source}: column '{name}' is a precomputed embedding modality; give it as "
                    f"embeddings ({name}=FILE.npy, ({n}, {dim}) float rows in item order)"
                )
            else:
                mods.append(None)
        given = [m for m in mods if m is not None]
        if not given:
            raise DataError(
                f"{source}: no content for any of the run's modalities {self.inputs.names} "
                f"({', '.join(f'{a}: {k}' for a, k in zip(self.inputs.names, self.inputs.kinds))})"
            )
        empty = ~np.logical_or.reduce([m.mask for m in given])
        if empty.any():
            raise DataError(
                f"{source}: item '{ids.iloc[int(np.argmax(empty))]}' has no content in any "
                f"modality ({int(empty.sum())} such rows); an ID needs content"
            )
        return mods

    def embed(
        self, items: pd.DataFrame, mods: list[Modality | None]
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{modality: (emb (N, d) L2-normalised, zero where absent; mask (N,))} of every run
        modality, encoded with the run's encoders; ``self.inputs.row`` of it is the tokenizer
        input, built as at tokenize time."""
        blocks = {}
        for name, kind, dim, mod in zip(
            self.inputs.names, self.inputs.kinds, self.inputs.dims, mods
        ):
            if mod is None:
                blocks[name] = (np.zeros((len(items), dim), np.float32), np.zeros(len(items), bool))
                continue
            if mod.kind != "embedding" and kind != mod.kind:
                raise DataError(f"modality '{name}' is {kind} in the run, not {mod.kind}")
            e, m, _ = embed_modality(
                mod, device=self.device, progress=False, encoders=self._encoders
            )
            if e.shape[1] != dim:
                raise DataError(f"modality '{name}': width {e.shape[1]}, the run's is {dim}")
            blocks[name] = (e, m)
        return blocks

    # ---- assignment --------------------------------------------------------------------

    def assign(
        self,
        items: pd.DataFrame,
        embeddings: dict[str, np.ndarray] | None = None,
        *,
        replace: bool = False,
        source: str = "items",
        base: Path | None = None,
    ) -> pd.DataFrame:
        """SIDs for ``items`` (see the module docstring), written to the store in one
        transaction. Returns a frame: item, sid ("c0-c1-...-collision"), c0..c{L-1},
        collision."""
        return self.assign_embedded(items, embeddings, replace=replace, source=source, base=base)[0]

    def assign_embedded(
        self,
        items: pd.DataFrame,
        embeddings: dict[str, np.ndarray] | None = None,
        *,
        replace: bool = False,
        source: str = "items",
        base: Path | None = None,
    ) -> tuple[pd.DataFrame, dict[str, tuple[np.ndarray, np.ndarray]]]:
        """:meth:`assign`, and the items' per-modality embeddings it encoded (:meth:`embed`),
        for a caller that needs their content too (content fusion in mmsid.serve)."""
        mods = self.modalities(items, embeddings, source=source, base=base)
        blocks = self.embed(items, mods)
        codes = self.tok.transform(self.inputs.row(blocks), device=self.device)
        hashes = item_content_hashes([m for m in mods if m is not None])
        ids = items["item"].astype(str).tolist()
        sids = self.store.assign(
            self.version, ids, codes, hashes, replace=replace, collision_cap=self.cap
        )
        return sid_frame(ids, sids), blocks

    def catalogue(self) -> tuple[list[str], np.ndarray]:
        """Every item of this version, in the order it was assigned, and its (N, L) codes."""
        return self.store.catalogue(self.version)


def sid_frame(ids: list[str], sids: np.ndarray) -> pd.DataFrame:
    L = sids.shape[1] - 1
    df = pd.DataFrame({"item": ids, "sid": ["-".join(map(str, r)) for r in sids.tolist()]})
    for lvl in range(L):
        df[f"c{lvl}"] = sids[:, lvl]
    df["collision"] = sids[:, L]
    return df


def _image_path(value: str, base: Path | None, source: str, column: str) -> Path:
    p = Path(value)
    if not p.is_absolute() and base is not None:
        p = base / p
    if not p.is_file():
        raise DataError(f"{source}, column '{column}': image file {p} not found")
    return p


def read_items(path: str | Path) -> pd.DataFrame:
    """A CSV or Parquet table of new items (ids read as text)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: items file not found")
    try:
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
        elif path.suffix in (".csv", ".tsv"):
            df = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",", dtype={"item": str})
        else:
            raise DataError(f"{path}: items must be .csv, .tsv or .parquet")
    except DataError:
        raise
    except Exception as e:  # pandas/pyarrow raise many types for a damaged file
        raise DataError(f"{path}: unreadable items table ({type(e).__name__}: {e})") from e
    if df.empty:
        raise DataError(f"{path}: no rows")
    return df


def read_embeddings(spec: str) -> tuple[str, np.ndarray]:
    """``NAME=FILE.npy`` -> (name, float32 array); the rows are checked against the run later."""
    if "=" not in spec:
        raise DataError(f"--embeddings {spec!r}: expected NAME=FILE.npy")
    name, file = spec.split("=", 1)
    try:
        arr = np.load(file, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"{file}: unreadable .npy ({e})") from e
    if arr.dtype.kind not in "fiu":
        raise DataError(f"{file}: holds {arr.dtype} values, not numbers")
    return name, arr.astype(np.float32)
