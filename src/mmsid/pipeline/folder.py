"""The run folder's guard: only mmsid's own files are ever removed, one live run per folder,
and everything checkable is checked before the folder is touched."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

from mmsid.errors import ConfigError
from mmsid.pipeline.config import PipelineConfig
from mmsid.pipeline.plots import PLOT_FILES

# what a run folder holds that mmsid wrote: --overwrite removes these and nothing else
RUN_FILES = ("config.yaml", "run.json", "results.json", "report.md", *PLOT_FILES)


def marker_info(path: Path) -> dict:
    """run.json, checked to be one an mmsid run wrote."""
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"{path}: unreadable ({e}); this folder is not a usable mmsid run; choose another "
            "--out (mmsid deletes nothing it cannot show it wrote)"
        ) from e
    if not isinstance(info, dict) or "config_hash" not in info:
        raise ConfigError(
            f"{path} was not written by an mmsid run (no config_hash); choose another --out "
            "(mmsid deletes nothing it cannot show it wrote)"
        )
    return info


LOCK = ".mmsid.lock"  # "pid host" of the run working in the folder


def check_lock(out: Path) -> None:
    """Refuse a folder another live mmsid run holds; remove a stale lock (its process is gone)."""
    import os
    import socket

    lock = out / LOCK
    if not lock.exists():
        return
    try:
        pid_s, host = lock.read_text().split()
        pid = int(pid_s)
    except (OSError, ValueError):
        pid, host = -1, "?"
    here = socket.gethostname()
    alive = False
    if host == here and pid > 0:
        try:
            os.kill(pid, 0)  # signal 0: only asks whether the process exists
            alive = True
        except ProcessLookupError:
            pass
        except PermissionError:  # it exists, under another user
            alive = True
    if alive or (host not in (here, "?")):
        raise ConfigError(
            f"{out} is in use by mmsid process {pid} on {host} ({lock}); wait for it to end or "
            "choose another --out (if that process is gone, delete the lock file)"
        )
    lock.unlink(missing_ok=True)  # stale: left by a run that was killed


@contextlib.contextmanager
def locked(out: Path):
    import os
    import socket

    try:
        fd = os.open(out / LOCK, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        raise ConfigError(
            f"{out} was just taken by another mmsid run; choose another --out"
        ) from None
    with os.fdopen(fd, "w") as f:
        f.write(f"{os.getpid()} {socket.gethostname()}\n")
    try:
        yield
    finally:
        (out / LOCK).unlink(missing_ok=True)


def clear_run(out: Path) -> None:
    """Remove what an mmsid run wrote in ``out`` (its files and ``stages/``); anything else
    in the folder stays, and the folder itself too."""
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    if (out / "stages").is_dir():
        shutil.rmtree(out / "stages")


def check_before_writing(cfg: PipelineConfig, out: Path) -> None:
    """Everything that can be checked before the folder is touched."""
    from mmsid.data import REGISTRY

    if cfg.dataset not in REGISTRY:
        from mmsid.data import load_dataset

        load_dataset(cfg.dataset, cfg.data_dir)  # raises DataError naming the known sets
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder")
