"""The durable ID store: item -> semantic ID, per tokenizer version, in one SQLite file (WAL).

A *version* is one fitted tokenizer (its codes' meaning); an *assignment* gives an item of that
version its codes plus a collision index that makes the full SID unique within the version
(TIGER's extra level), the hash of the content it was computed from, and when. Every write is
one transaction taken with ``BEGIN IMMEDIATE`` (one writer at a time, across processes), so:

* a batch is all-or-nothing: an error (or a kill) anywhere leaves none of it;
* two writers never give two items the same full SID (the collision index is allocated inside
  the writer's transaction, and a UNIQUE constraint backs it);
* re-assigning an item with the same content returns its existing SID (idempotent); with
  different content it is refused unless ``replace=True``.

The interface (``add_version``, ``assign``, ``sid``, ``items``, ``versions``) is small enough
for a server database to stand behind it later; only SQLite is built.

Codes are stored as text ``"12-4-200"``, so a SID prefix lookup is an index range scan.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmsid.errors import DataError

SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    version TEXT PRIMARY KEY,
    levels INTEGER NOT NULL,
    codebook_size INTEGER NOT NULL,
    created REAL NOT NULL,
    note TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS sids (
    version TEXT NOT NULL REFERENCES versions(version),
    item TEXT NOT NULL,
    codes TEXT NOT NULL,
    collision INTEGER NOT NULL,
    content TEXT NOT NULL,
    assigned REAL NOT NULL,
    PRIMARY KEY (version, item),
    UNIQUE (version, codes, collision)
);
"""


class SIDConflict(DataError):
    """An item already has a SID in the version, from other content (``replace`` not given)."""


def content_hash(x: np.ndarray | bytes | str) -> str:
    """A stable hash of what an item's codes were computed from (its feature row, or text)."""
    if isinstance(x, str):
        x = x.encode()
    if isinstance(x, np.ndarray):
        x = np.ascontiguousarray(x, dtype=np.float32).tobytes()
    return hashlib.sha256(x).hexdigest()[:32]


def _key(codes: Sequence[int]) -> str:
    return "-".join(str(int(c)) for c in codes)


class IDStore:
    def __init__(self, path: str | Path, *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # one connection; a caller that shares it between threads serialises its calls (the
        # HTTP service holds a lock), so SQLite's same-thread check is off
        self.db = sqlite3.connect(
            self.path, timeout=timeout, isolation_level=None, check_same_thread=False
        )
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # a committed write survives a crash
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> IDStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- writes ------------------------------------------------------------------------

    def add_version(self, version: str, levels: int, codebook_size: int, note: str = "") -> None:
        """Register a tokenizer version (idempotent for the same shape)."""
        row = self.db.execute(
            "SELECT levels, codebook_size FROM versions WHERE version = ?", (version,)
        ).fetchone()
        if row is not None:
            if tuple(row) != (levels, codebook_size):
                raise DataError(
                    f"{self.path}: version '{version}' exists with {row[0]} levels x "
                    f"{row[1]} codes, not {levels} x {codebook_size}; pick a new version name"
                )
            return
        self.db.execute(
            "INSERT INTO versions VALUES (?, ?, ?, ?, ?)",
            (version, levels, codebook_size, time.time(), note),
        )

    def assign(
        self,
        version: str,
        items: Sequence[str],
        codes: np.ndarray,
        content: Sequence[str],
        *,
        replace: bool = False,
        collision_cap: int | None = None,
    ) -> np.ndarray:
        """Give each item its codes (N, L) and a collision index; returns (N, L+1) SIDs.

        One transaction: if any item is refused (changed content without ``replace``, codes
        out of range, a duplicate item in the batch, more than ``collision_cap`` items on one
        code tuple) nothing of the batch is written."""
        codes = np.asarray(codes)
        if codes.ndim != 2 or len(codes) != len(items) or len(content) != len(items):
            raise DataError(
                f"assign: {len(items)} items, codes of shape {codes.shape} and "
                f"{len(content)} content hashes must agree"
            )
        if len(set(items)) != len(items):
            raise DataError("assign: an item appears twice in the batch")
        shape = self.db.execute(
            "SELECT levels, codebook_size FROM versions WHERE version = ?", (version,)
        ).fetchone()
        if shape is None:
            raise DataError(f"{self.path}: unknown version '{version}'; add_version first")
        L, K = shape
        if codes.shape[1] != L or (len(codes) and (codes.min() < 0 or codes.max() >= K)):
            raise DataError(
                f"assign: version '{version}' has {L} levels of {K} codes; got codes of shape "
                f"{codes.shape} in [{codes.min(initial=0)}, {codes.max(initial=0)}]"
            )
        out = np.empty((len(items), L + 1), dtype=np.int64)
        now = time.time()
        cur = self.db.cursor()
        cur.execute("BEGIN IMMEDIATE")  # the one writer from here to COMMIT
        try:
            for i, (item, c, h) in enumerate(zip(items, codes, content)):
                key = _key(c)
                old = cur.execute(
                    "SELECT codes, collision, content FROM sids WHERE version = ? AND item = ?",
                    (version, str(item)),
                ).fetchone()
                if old is not None and old[2] == h:
                    out[i, :L] = [int(v) for v in old[0].split("-")]
                    out[i, L] = old[1]
                    continue
                if old is not None and not replace:
                    raise SIDConflict(
                        f"item '{item}' already has a SID in version '{version}' from other "
                        "content; pass replace=True (--replace) to re-assign it"
                    )
                if old is not None:
                    cur.execute(
                        "DELETE FROM sids WHERE version = ? AND item = ?", (version, str(item))
                    )
                (nxt,) = cur.execute(
                    "SELECT COALESCE(MAX(collision) + 1, 0) FROM sids "
                    "WHERE version = ? AND codes = ?",
                    (version, key),
                ).fetchone()
                if collision_cap is not None and nxt >= collision_cap:
                    raise DataError(
                        f"item '{item}': {nxt + 1} items would share the codes {key} in version "
                        f"'{version}', more than the collision cap {collision_cap}"
                    )
                cur.execute(
                    "INSERT INTO sids VALUES (?, ?, ?, ?, ?, ?)",
                    (version, str(item), key, nxt, h, now),
                )
                out[i, :L], out[i, L] = c, nxt
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return out

    def import_versions(self, other: str | Path) -> None:
        """Copy every version and assignment of another store into this one (one
        transaction; versions already here are left as they are)."""
        if not Path(other).is_file():
            raise DataError(f"{other}: no ID store to import")
        self.db.execute("ATTACH DATABASE ? AS other", (str(other),))
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.execute("INSERT OR IGNORE INTO versions SELECT * FROM other.versions")
                self.db.execute("INSERT OR IGNORE INTO sids SELECT * FROM other.sids")
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        finally:
            self.db.execute("DETACH DATABASE other")

    def changes(self, old: str, new: str) -> list[tuple[str, str, str]]:
        """(item, old SID, new SID) for every item of both versions ("c0-c1-...-collision")."""
        rows = self.db.execute(
            "SELECT a.item, a.codes || '-' || a.collision, b.codes || '-' || b.collision "
            "FROM sids a JOIN sids b ON a.item = b.item "
            "WHERE a.version = ? AND b.version = ? ORDER BY a.rowid",
            (old, new),
        )
        return [tuple(r) for r in rows]

    # ---- reads -------------------------------------------------------------------------

    def sid(self, version: str, item: str) -> tuple[int, ...] | None:
        """The item's full SID (codes then collision index), or None."""
        row = self.db.execute(
            "SELECT codes, collision FROM sids WHERE version = ? AND item = ?",
            (version, str(item)),
        ).fetchone()
        return None if row is None else (*map(int, row[0].split("-")), row[1])

    def items(self, version: str, prefix: Sequence[int]) -> list[str]:
        """Items whose SID starts with ``prefix`` (codes, optionally then the collision index),
        ordered by their stored code text, then collision index."""
        L = self._levels(version)
        codes, coll = list(prefix[:L]), list(prefix[L:])
        if len(codes) == L:
            q = "SELECT item FROM sids WHERE version = ? AND codes = ?"
            args: tuple = (version, _key(codes))
            if coll:
                q, args = q + " AND collision = ?", (*args, int(coll[0]))
        else:
            pre = _key(codes) + "-" if codes else ""
            q = "SELECT item FROM sids WHERE version = ? AND codes >= ? AND codes < ?"
            args = (version, pre, pre + "\uffff")
        return [r[0] for r in self.db.execute(q + " ORDER BY codes, collision", args)]

    def catalogue(self, version: str) -> tuple[list[str], np.ndarray]:
        """Every item of ``version`` in the order it was (last) assigned, and its (N, L)
        codes: the catalogue a retriever scores."""
        L = self._levels(version)
        rows = self.db.execute(
            "SELECT item, codes FROM sids WHERE version = ? ORDER BY rowid", (version,)
        ).fetchall()
        codes = np.array([[int(c) for c in r[1].split("-")] for r in rows], dtype=np.int64)
        return [r[0] for r in rows], codes.reshape(len(rows), L)

    def versions(self) -> list[dict]:
        rows = self.db.execute(
            "SELECT v.version, v.levels, v.codebook_size, v.created, COUNT(s.item) "
            "FROM versions v LEFT JOIN sids s ON s.version = v.version GROUP BY v.version "
            "ORDER BY v.created"
        )
        keys = ("version", "levels", "codebook_size", "created", "items")
        return [dict(zip(keys, r)) for r in rows]

    def _levels(self, version: str) -> int:
        row = self.db.execute(
            "SELECT levels FROM versions WHERE version = ?", (version,)
        ).fetchone()
        if row is None:
            raise DataError(f"{self.path}: unknown version '{version}'")
        return int(row[0])


def parse_prefix(text: str) -> list[int]:
    """A SID or SID prefix as text, codes joined by '-': "12-4" -> [12, 4]; "" -> []."""
    import re

    if text == "":
        return []
    if not re.fullmatch(r"[0-9]{1,9}(-[0-9]{1,9})*", text):
        raise DataError(f"SID prefix {text!r}: expected codes joined by '-', e.g. 12-4")
    return [int(p) for p in text.split("-")]
