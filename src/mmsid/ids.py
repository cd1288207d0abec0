"""Semantic-ID tables: TIGER's collision level, Parquet save/load (atomic).

A table has one row per item: ``item_id``, ``sid`` (list of ints, the L codes then the
collision index), one column per level ``c0..c{L-1}`` plus ``collision``, and the tokenizer's
config hash as ``config_hash`` (also stored in the file's metadata).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mmsid.artefacts import check_file
from mmsid.errors import DataError
from mmsid.io import atomic_path


def collision_index(codes: np.ndarray, *, cap: int | None = None) -> np.ndarray:
    """TIGER's extra level: 0, 1, 2, ... among items that share all L codes (in item order).

    Args:
        codes: (N, L) int.
        cap: the largest allowed group size (collision values run 0..cap-1), e.g. the codebook
            size so the extra token fits the same vocabulary. None = no cap.
    Returns:
        (N,) int64.
    Raises:
        DataError when a group is larger than ``cap``.
    """
    if codes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    _, inverse = np.unique(codes, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")  # items grouped by SID, item order within
    sorted_inv = inverse[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_inv)) + 1]
    group_start = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    out = np.empty(len(order), dtype=np.int64)
    out[order] = np.arange(len(order)) - group_start
    if cap is not None and out.max() >= cap:
        worst = codes[int(np.argmax(out))].tolist()
        raise DataError(
            f"{int(out.max()) + 1} items share the SID prefix {worst}, more than the collision "
            f"cap {cap}; use more levels or a larger codebook (or raise the cap)"
        )
    return out


def collision_rate(codes: np.ndarray) -> float:
    """Share of items whose full L-code SID is shared with another item."""
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    return float((counts[inverse.reshape(-1)] > 1).mean())


@dataclass
class SIDTable:
    item_ids: np.ndarray  # (N,)
    codes: np.ndarray  # (N, L) before the collision level
    collision: np.ndarray  # (N,)
    config_hash: str = ""
    codebook_size: int = 0

    @property
    def sids(self) -> np.ndarray:
        """(N, L+1): codes then the collision index."""
        return np.concatenate([self.codes, self.collision[:, None]], axis=1)

    @classmethod
    def from_codes(
        cls,
        codes: np.ndarray,
        item_ids: np.ndarray | None = None,
        *,
        config_hash: str = "",
        codebook_size: int = 0,
        collision_cap: int | None = None,
    ) -> SIDTable:
        codes = np.asarray(codes, dtype=np.int64)
        ids = np.arange(len(codes)) if item_ids is None else np.asarray(item_ids)
        return cls(
            ids, codes, collision_index(codes, cap=collision_cap), config_hash, codebook_size
        )

    def to_frame(self) -> pd.DataFrame:
        df = pd.DataFrame({"item_id": self.item_ids, "sid": list(self.sids)})
        for lvl in range(self.codes.shape[1]):
            df[f"c{lvl}"] = self.codes[:, lvl]
        df["collision"] = self.collision
        df["config_hash"] = self.config_hash
        return df

    def save(self, path: str | Path) -> None:
        table = pa.Table.from_pandas(self.to_frame(), preserve_index=False)
        meta = {
            **(table.schema.metadata or {}),
            b"mmsid.levels": str(self.codes.shape[1]).encode(),
            b"mmsid.codebook_size": str(self.codebook_size).encode(),
            b"mmsid.config_hash": self.config_hash.encode(),
        }
        with atomic_path(path) as tmp:
            pq.write_table(table.replace_schema_metadata(meta), tmp)

    @classmethod
    def load(cls, path: str | Path) -> SIDTable:
        path = Path(path)
        if not path.exists():
            raise DataError(f"{path}: SID table not found; create it with `mmsid tokenize`")
        check_file(path)
        table = pq.read_table(path)
        meta = table.schema.metadata or {}
        df = table.to_pandas()
        for col in ("item_id", "collision"):
            if col not in df.columns:
                raise DataError(f"{path}: missing column '{col}'; not an mmsid SID table")
        levels = int(meta.get(b"mmsid.levels", b"0")) or sum(
            c.startswith("c") and c[1:].isdigit() for c in df.columns
        )
        codes = df[[f"c{i}" for i in range(levels)]].to_numpy(np.int64)
        return cls(
            df["item_id"].to_numpy(),
            codes,
            df["collision"].to_numpy(np.int64),
            meta.get(b"mmsid.config_hash", b"").decode(),
            int(meta.get(b"mmsid.codebook_size", b"0")),
        )


def save_sid_sets(path: str | Path, sets: dict[str, SIDTable]) -> None:
    """One Parquet file with several named SID sets over the same items (e.g. PSRQ's modal-
    joint set ``joint`` and one modal-specific set per modality): columns ``item_id`` and, per
    set, ``{name}.sid``, ``{name}.c0..``, ``{name}.collision``; the sets' levels, codebook sizes
    and config hashes in the file metadata under ``mmsid.sets``."""
    import json

    names = list(sets)
    base = sets[names[0]].item_ids
    for n in names[1:]:
        if not np.array_equal(sets[n].item_ids, base):
            raise DataError(f"SID set '{n}' covers other items than '{names[0]}'")
    df = pd.DataFrame({"item_id": base})
    for n, t in sets.items():
        f = t.to_frame().drop(columns=["item_id", "config_hash"])
        df = pd.concat([df, f.add_prefix(f"{n}.")], axis=1)
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = {
        n: {
            "levels": int(t.codes.shape[1]),
            "codebook_size": int(t.codebook_size),
            "config_hash": t.config_hash,
        }
        for n, t in sets.items()
    }
    with atomic_path(path) as tmp:
        pq.write_table(
            table.replace_schema_metadata(
                {**(table.schema.metadata or {}), b"mmsid.sets": json.dumps(meta).encode()}
            ),
            tmp,
        )


def load_sid_sets(path: str | Path) -> dict[str, SIDTable]:
    """Every SID set in ``path``: a multi-set file gives all its sets, a single-set table
    (``SIDTable.save``) gives {"joint": table}."""
    import json

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: SID table not found; create it with `mmsid tokenize`")
    meta = pq.read_schema(path).metadata or {}
    if b"mmsid.sets" not in meta:
        return {"joint": SIDTable.load(path)}  # which checks the file's recorded bytes
    check_file(path)
    df = pq.read_table(path).to_pandas()
    out = {}
    for n, m in json.loads(meta[b"mmsid.sets"]).items():
        codes = df[[f"{n}.c{i}" for i in range(m["levels"])]].to_numpy(np.int64)
        out[n] = SIDTable(
            df["item_id"].to_numpy(),
            codes,
            df[f"{n}.collision"].to_numpy(np.int64),
            m["config_hash"],
            m["codebook_size"],
        )
    return out


def table_codes(
    t: SIDTable, path: str | Path, n_items: int, *, with_collision: bool = False
) -> tuple[np.ndarray, int]:
    """A table's codes in catalogue order: (n_items, L) (or (n_items, L+1) with the collision
    level), and the codebook size. Raises DataError when the table misses catalogue items or
    holds an item twice (it was written for another data set)."""
    ids = np.asarray(t.item_ids)
    missing = np.setdiff1d(np.arange(n_items), ids)
    if len(missing):
        raise DataError(
            f"{path}: SID table misses {len(missing)} catalogue item(s) (first "
            f"{missing[:5].tolist()}); tokenize the same data set"
        )
    if len(ids) != n_items or len(np.unique(ids)) != n_items:
        raise DataError(
            f"{path}: SID table has {len(ids)} rows for {n_items} items (duplicated or "
            "unknown item ids); use the table written by `mmsid tokenize` for this data set"
        )
    src = t.sids if with_collision else t.codes
    codes = np.empty_like(src)
    codes[ids] = src
    K = t.codebook_size or int(t.codes.max()) + 1
    return codes, K
