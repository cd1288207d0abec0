"""What a finished stage wrote, by content: a record of every file's SHA-256, checked on read.

When a stage (a pipeline stage, or ``mmsid tokenize|retrieve|rank --out``) finishes, its
folder is *sealed*: ``files.json`` lists every file it holds with its SHA-256. From then on

* the pipeline checks a finished stage's files before it reuses the stage: a file that is
  missing or whose bytes changed (a disk error, a hand edit, a partial copy) makes the stage
  run again, and every stage that read it; the changed files are removed first (they are
  mmsid's own, listed in the record), so nothing stale is resumed from;
* a reader given such a file directly (``SIDTable.load``, ``Tokenizer.load``, a model or a
  checkpoint through ``io.load_torch``) refuses it with a message naming the file;
* a stage that starts again in its folder (``--out`` of a finished run, resumed with other
  settings) first drops the files that no longer match, then the record, and seals anew
  when it finishes.

Files that legitimately change after a run are not sealed: the ID store (``ids.sqlite`` and
SQLite's companions, written by ``mmsid ids assign``), ``stage.json`` and the record itself.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
from pathlib import Path

from mmsid.errors import DataError, MMSIDError
from mmsid.io import TEMP, sha256_file, write_json

RECORD = "files.json"
UNSEALED = ("stage.json", RECORD, ".mmsid.lock")
UNSEALED_PREFIXES = ("ids.sqlite",)  # the ID store and its -wal / -shm / -journal files


def _sealed(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return not (
        rel in UNSEALED or name.startswith(UNSEALED_PREFIXES) or TEMP.match(name) is not None
    )


def digests(folder: str | os.PathLike) -> dict[str, str]:
    """SHA-256 of every sealed file under ``folder``, by path relative to it (sorted)."""
    folder = Path(folder)
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and not p.is_symlink() and _sealed(rel):
            out[rel] = sha256_file(p)
    return out


def seal(folder: str | os.PathLike) -> dict[str, str]:
    """Write ``folder/files.json`` with the SHA-256 of every file the folder holds now."""
    d = digests(folder)
    write_json(Path(folder) / RECORD, {"sha256": d})
    return d


def record(folder: str | os.PathLike) -> dict[str, str] | None:
    """The sealed digests, or None when the folder has no (readable) record."""
    path = Path(folder) / RECORD
    try:
        rec = json.loads(path.read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return rec if isinstance(rec, dict) else None


def check(folder: str | os.PathLike) -> list[str] | None:
    """Files of a sealed folder that are missing or changed: each as "REL: why". [] when all
    match; None when the folder has no readable record (it was never sealed, or the record
    itself is damaged)."""
    folder = Path(folder)
    rec = record(folder)
    if rec is None:
        return None
    problems = []
    for rel, want in rec.items():
        p = folder / rel
        if not p.is_file():
            problems.append(f"{rel}: missing")
        elif sha256_file(p) != want:
            problems.append(f"{rel}: changed since mmsid wrote it (SHA-256 differs)")
    return problems


def reopen(folder: str | os.PathLike, *, quiet: bool = False) -> list[str]:
    """Before a stage writes into ``folder`` again: remove the recorded files that no longer
    match the record (so nothing damaged is resumed from), then the record. Returns the
    problems found (also printed to stderr unless ``quiet``)."""
    folder = Path(folder)
    problems = check(folder)
    if problems is None:
        (folder / RECORD).unlink(missing_ok=True)  # unreadable record: nothing to trust
        return []
    for line in problems:
        rel = line.split(": ", 1)[0]
        if not quiet:
            print(f"mmsid: {folder / rel}: {line.split(': ', 1)[1]}; recomputing", file=sys.stderr)
        (folder / rel).unlink(missing_ok=True)
    (folder / RECORD).unlink(missing_ok=True)
    return problems


def check_file(path: str | os.PathLike) -> None:
    """Refuse a file that a sealed folder (its own, or the one above: ``checkpoints/``)
    records with other bytes. A file no record lists is not checked (a user's own file)."""
    path = Path(path)
    for folder in (path.parent, path.parent.parent):
        rec = record(folder)
        if rec is None:
            continue
        rel = path.resolve().relative_to(folder.resolve()).as_posix()
        want = rec.get(rel)
        if want is not None and path.is_file() and sha256_file(path) != want:
            raise DataError(
                f"{path}: changed since mmsid wrote it (its SHA-256 differs from the one in "
                f"{folder / RECORD}); it is damaged or was edited. Re-run the stage that wrote "
                "it (`mmsid run ... --resume` recomputes it), or restore the file"
            )
        return


def sealing(run):
    """Decorate a stage function ``run(cfg, ...)``: when it returns, rank 0 seals ``cfg.out``.
    When it stops on bad input (an MMSIDError, e.g. a setting only checkable once the features
    are built) in a folder this call created, before any checkpoint was written, rank 0 removes
    that folder and the missing parents it made: nothing half-written is left, and nothing
    resumable is lost."""

    @functools.wraps(run)
    def wrapper(cfg, *args, **kwargs):
        from mmsid import distributed

        out = Path(cfg.out)
        # the topmost folder this call creates (start_run makes the missing parents too)
        created = next((d for d in [*reversed(out.parents), out] if not d.exists()), None)
        try:
            result = run(cfg, *args, **kwargs)
        except MMSIDError:
            main = distributed.context().main
            if created is not None and main and not (out / "checkpoints").exists():
                shutil.rmtree(created, ignore_errors=True)
            raise
        if distributed.context().main:
            seal(cfg.out)
        return result

    return wrapper
