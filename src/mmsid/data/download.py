"""Where a data set's files live: ``MMSID_DATA_DIR`` / ``--data-dir``, or a verified download.

Every file of every built-in data set is listed in ``manifest.json`` with its SHA-256 and size
(taken from the reference copy). Resolution order:

1. an explicit ``data_dir`` argument, else the ``MMSID_DATA_DIR`` environment variable: the
   folder holds one sub-folder per data set (``ml100k-mm/``, ``lfm2k-mm/``, ``amazon-beauty/``);
   mmsid reads it and never writes inside it;
2. else the cache (``MMSID_CACHE_DIR``, default ``~/.cache/mmsid``) ``datasets/<name>/``,
   filled by :func:`download` from the public sources, each file checked against its SHA-256.

Offline, or for a file without a public direct URL, the error says which files to place where.
Either way, the files a loader reads are checked against the manifest's SHA-256 before it
reads them (once per file version in a process): a damaged, cut-short or other-version file is
refused with a message naming it, rather than loaded as different data. ``MMSID_DATA_VERIFY=0``
turns the check off (for a deliberately changed copy; its errors then come from the parsers).
"""

from __future__ import annotations

import io
import json
import os
import urllib.request
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from mmsid.errors import DataError
from mmsid.io import atomic_path, sha256_file

ENV_DATA_DIR = "MMSID_DATA_DIR"
ENV_CACHE_DIR = "MMSID_CACHE_DIR"
ENV_VERIFY = "MMSID_DATA_VERIFY"


@dataclass(frozen=True)
class Source:
    """A public location for some of a data set's files.

    ``url`` is either a zip archive (``members`` maps our relative path -> member name) or a
    URL template with ``{path}`` for files fetched one by one (``paths`` = which ones, by
    prefix or exact name; each may be renamed with ``remote``).
    """

    url: str
    members: dict[str, str] | None = None
    prefixes: tuple[str, ...] = ()
    remote: dict[str, str] | None = None


_GL = "https://files.grouplens.org/datasets"
_GP = "https://raw.githubusercontent.com/giuspillo/extending_sota_data_mm_feat/HEAD/"
_LF = "2_data_processing/hetrec2011-lastfm-2k/"
_SR = "https://raw.githubusercontent.com/sadhana937/Movie-recommender-system/HEAD/data/"

# Public sources named in the data README. amazon-beauty (TIGER's preprocessing of the 2014
# Amazon review dump) has no stable direct URL: place its two files by hand.
SOURCES: dict[str, list[Source]] = {
    "ml100k-mm": [
        Source(
            f"{_GL}/movielens/ml-100k.zip",
            members={
                **{
                    f"u.{n}": f"ml-100k/u.{n}"
                    for n in ("data", "item", "user", "genre", "occupation")
                },
                "MOVIELENS_README": "ml-100k/README",
            },
        ),
        Source(
            _SR + "{path}",
            prefixes=("posters/", "items_tmdb.csv"),
            remote={"items_tmdb.csv": "items.csv"},
        ),
    ],
    "lfm2k-mm": [
        Source(
            f"{_GL}/hetrec2011/hetrec2011-lastfm-2k.zip",
            members={
                "artists.dat": "artists.dat",
                "tags.dat": "tags.dat",
                "user_artists.dat": "user_artists.dat",
                "user_friends.dat": "user_friends.dat",
                "HETREC_README.txt": "readme.txt",
            },
        ),
        Source(
            _GP + "{path}",
            prefixes=(
                "lfm2k.inter",
                "lfm2k_og_ids.inter",
                "lfm2k_text.tsv",
                "vggish.npy",
                "whisper.npy",
                "all-MiniLM-L6-v2.npy",
                "lfm2k_song_extended_mapping.tsv",
            ),
            remote={
                "lfm2k.inter": _LF + "processed_data/lfm2k.inter",
                "lfm2k_og_ids.inter": _LF + "processed_data/lfm2k_og_ids.inter",
                "lfm2k_text.tsv": _LF + "lfm2k_text.tsv",
                "vggish.npy": "3_data_processing/hetrec2011-lastfm-2k/multimodal_features/"
                "mmrec_npy/vggish.npy",
                "whisper.npy": "3_mmrec/data/lfm2k/whisper.npy",
                "all-MiniLM-L6-v2.npy": "4_mmrec/data/lfm2k/all-MiniLM-L6-v2.npy",
                "lfm2k_song_extended_mapping.tsv": (
                    "1_learn_mm_feat/lfm2k/lfm2k_song_extended_mapping.tsv"
                ),
            },
        ),
    ],
    "amazon-beauty": [],
}


@cache
def manifest() -> dict[str, dict[str, dict]]:
    """dataset -> relative path -> {sha256, size}."""
    return json.loads((Path(__file__).with_name("manifest.json")).read_text())


def cache_dir() -> Path:
    return Path(os.environ.get(ENV_CACHE_DIR, Path.home() / ".cache" / "mmsid")).expanduser()


def _missing(folder: Path, required: list[str]) -> list[str]:
    return [r for r in required if not (folder / r).exists()]


def resolve_data_dir(
    name: str,
    required: list[str],
    data_dir: str | os.PathLike | None = None,
    *,
    download_missing: bool = True,
    optional: tuple[str, ...] = (),
) -> Path:
    """Return the folder that holds data set ``name`` with every file in ``required``.

    Raises:
        DataError: the folder lacks files (naming them and where to put them), or the download
            failed (offline) with the same instructions.
    """
    root = data_dir if data_dir is not None else os.environ.get(ENV_DATA_DIR)
    if root:
        folder = Path(root).expanduser() / name
        if not Path(root).expanduser().is_dir():
            raise DataError(
                f"data folder {root} (from {'--data-dir' if data_dir else ENV_DATA_DIR}) does "
                f"not exist; point it at the folder that holds '{name}/'"
            )
        missing = _missing(folder, required)
        if missing:
            raise DataError(
                f"{folder}: missing {len(missing)} file(s) of data set '{name}': "
                f"{', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}. Place them "
                f"there, or unset {ENV_DATA_DIR} to download them into {cache_dir()}"
            )
        present = [*required, *_present(folder, optional)]
        verify(name, folder, present, fix="restore the published file")
        return folder
    folder = cache_dir() / "datasets" / name
    if _missing(folder, required) and download_missing:
        download(name, folder)
    missing = _missing(folder, required)
    if missing:
        raise DataError(_offline_message(name, folder, missing))
    verify(
        name,
        folder,
        [*required, *_present(folder, optional)],
        fix="delete it and run again to download it anew",
    )
    return folder


def _present(folder: Path, optional: tuple[str, ...]) -> list[str]:
    return [r for r in optional if (folder / r).exists()]


_digests: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> SHA-256


def _digest(path: Path) -> str:
    """SHA-256 of ``path``, computed once per file version in a process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _digests:
        _digests[key] = sha256_file(path)
    return _digests[key]


def verify(name: str, folder: Path, files: list[str], *, fix: str) -> None:
    """Check ``files`` of data set ``name`` in ``folder`` against the manifest's SHA-256
    (skipped when ``MMSID_DATA_VERIFY=0``); a file the manifest does not list is not checked."""
    if os.environ.get(ENV_VERIFY, "1") == "0":
        return
    wanted = manifest().get(name, {})
    for rel in files:
        meta = wanted.get(rel)
        if meta is None:
            continue
        path = folder / rel
        got = _digest(path)
        if got != meta["sha256"]:
            raise DataError(
                f"{path}: not the published file of data set '{name}' "
                f"({path.stat().st_size} bytes, expected {meta['size']}; SHA-256 {got[:12]}..., "
                f"expected {meta['sha256'][:12]}... from mmsid/data/manifest.json): it is "
                f"damaged, cut short or another version. Fix: {fix}; or, for a copy you changed on "
                f"purpose, set {ENV_VERIFY}=0"
            )


def _offline_message(name: str, folder: Path, missing: list[str]) -> str:
    return (
        f"data set '{name}' is not available: {len(missing)} file(s) missing "
        f"({', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}). Either set "
        f"{ENV_DATA_DIR}=/path/to/datasets (a folder holding '{name}/' with those files, e.g. the "
        f"project's ../shared/datasets) or pass --data-dir, or place the files in {folder} "
        f"(their SHA-256 sums are in mmsid/data/manifest.json)."
    )


def _fetch(url: str, timeout: float = 60.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (fixed https URLs)
        return r.read()


def _verify_and_place(name: str, rel: str, blob: bytes, folder: Path) -> None:
    expected = manifest()[name].get(rel)
    target = folder / rel
    with atomic_path(target) as tmp:
        tmp.write_bytes(blob)
        if expected is not None and sha256_file(tmp) != expected["sha256"]:
            raise DataError(
                f"{name}/{rel}: downloaded file's SHA-256 does not match the manifest; the "
                f"source changed. Place a verified copy in {folder} or set {ENV_DATA_DIR}"
            )


def download(name: str, folder: Path | None = None) -> Path:
    """Download data set ``name`` into ``folder`` (default: the cache), verifying SHA-256.

    Files already present with the right checksum are skipped. Each file is written atomically,
    so an interrupted download leaves no partial files. Network failures raise DataError with
    the offline instructions.
    """
    from tqdm.auto import tqdm

    if name not in SOURCES:
        raise DataError(f"no download source for data set '{name}'")
    folder = folder or cache_dir() / "datasets" / name
    wanted = manifest()[name]
    todo = {
        rel
        for rel, meta in wanted.items()
        if not (folder / rel).exists() or _digest(folder / rel) != meta["sha256"]
    }
    if not todo:
        return folder
    try:
        for src in SOURCES[name]:
            if src.members:
                need = {r: m for r, m in src.members.items() if r in todo}
                if not need:
                    continue
                archive = zipfile.ZipFile(io.BytesIO(_fetch(src.url)))
                for rel, member in need.items():
                    _verify_and_place(name, rel, archive.read(member), folder)
                    todo.discard(rel)
            else:
                rels = sorted(r for r in todo if any(r.startswith(p) for p in src.prefixes))
                for rel in tqdm(rels, desc=f"download {name}", disable=len(rels) < 10):
                    remote = (src.remote or {}).get(rel, rel)
                    _verify_and_place(name, rel, _fetch(src.url.format(path=remote)), folder)
                    todo.discard(rel)
    except (OSError, zipfile.BadZipFile, KeyError) as e:
        raise DataError(
            f"download of '{name}' failed ({type(e).__name__}: {e}). "
            + _offline_message(name, folder, sorted(todo))
        ) from e
    return folder
