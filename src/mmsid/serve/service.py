"""What the endpoints call, usable without HTTP: the store's catalogue in memory, new-item
assignment, a parallel-SID retriever and a din-sid or mcca ranker over the catalogue as it grows."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mmsid.assign import Assigner
from mmsid.errors import DataError
from mmsid.store import parse_prefix


class Service:
    """What the endpoints call; usable without HTTP.

    Args:
        run: a tokenize run folder (see mmsid.assign).
        retriever: a `mmsid retrieve --model parallel-sid` folder trained on ``run``'s IDs.
    """

    def __init__(
        self,
        run: str | Path,
        *,
        retriever: str | Path | None = None,
        ranker: str | Path | None = None,
        device: str = "cpu",
    ):
        self.assigner = Assigner(run, device=device)
        self.lock = threading.Lock()
        self.device = device
        self.model = self.ranker = None
        self.max_history = 0
        self._load_catalogue()
        if retriever is not None:
            self._load_retriever(Path(retriever), device)
        if ranker is not None:
            self._load_ranker(Path(ranker), device)

    def _load_catalogue(self) -> None:
        self.names, self.codes = self.assigner.catalogue()  # (N,), (N, L)
        self.index = {n: i for i, n in enumerate(self.names)}
        if self.model is not None:
            self.model.set_catalogue(self.codes)

    def _update_catalogue(self, res: pd.DataFrame) -> None:
        """Fold assigned rows into the in-memory catalogue (no re-read of the store): new items
        are appended, replaced ones take their new codes."""
        L = self.codes.shape[1]
        codes = res[[f"c{lvl}" for lvl in range(L)]].to_numpy()
        fresh = []
        for name, c in zip(res["item"], codes):
            if name in self.index:
                self.codes[self.index[name]] = c
            else:
                self.index[name] = len(self.names)
                self.names.append(name)
                fresh.append(c)
        if fresh:
            self.codes = np.concatenate([self.codes, np.asarray(fresh, dtype=np.int64)])
        if self.model is not None:
            self.model.set_catalogue(self.codes)
        if self.ranker is not None:
            self._ranker_catalogue()

    def _check_trained_ids(self, folder: Path, sids: str) -> np.ndarray:
        """The trained model's SID table must be this run's: returns its item ids."""
        from mmsid.ids import SIDTable

        trained = Path(sids)
        if not trained.is_file():
            raise DataError(f"{folder} was trained on {trained}, which is gone; cannot check it")
        t = SIDTable.load(trained)
        same = [self.index.get(str(i)) for i in t.item_ids]
        if None in same or not np.array_equal(self.codes[np.asarray(same)], t.codes):
            raise DataError(
                f"{folder} was trained on {trained}, whose IDs are not "
                f"{self.assigner.run}'s; serve the tokenize run it was trained on"
            )
        return np.asarray(t.item_ids)

    def _load_ranker(self, folder: Path, device: str) -> None:
        """A `mmsid rank --model din-sid|mcca` run trained on this run's IDs (one SID set:
        the store assigns new items one SID, so a ranker reading per-modality sets could not
        score them)."""
        from mmsid.ranking.din import DIN
        from mmsid.ranking.mcca import MCCA

        f, saved, cfg = _saved_model(folder, "mmsid rank")
        if cfg.get("model") not in ("din-sid", "mcca") or len(cfg.get("sids") or {}) != 1:
            raise DataError(
                f"{f}: a {cfg.get('model')} model over {len(cfg.get('sids') or {})} SID set(s); "
                "ranking items added after training needs din-sid or mcca over this run's one "
                "SID table (`--sids joint=RUN/sids.parquet`)"
            )
        ((name, path),) = cfg["sids"].items()
        ids = self._check_trained_ids(folder, path)
        n = int(ids.max()) + 1
        if sorted(ids.tolist()) != list(range(n)):
            raise DataError(f"{path}: item ids are not 0..{n - 1}")
        self._rank_ids = {str(i): int(i) for i in ids}  # item -> the index the model trained on
        self._rank_set = name
        K = self.assigner.tok.codebook_size
        codes = np.zeros((n, self.codes.shape[1]), dtype=np.int64)
        if cfg["model"] == "din-sid":
            model = DIN(n, sids={name: codes}, codebook_size=K)
        else:
            model = MCCA(n, {name: codes}, joint=name, codebook_size=K)
        model.load_state_dict(saved["state"])
        self.ranker = model.to(device).eval()
        self.rank_history = int(cfg["protocol"]["max_history"])
        self._ranker_catalogue()

    def _ranker_catalogue(self) -> None:
        """The ranker's item index: trained items at their trained index, items added since
        after them; their codes as the store has them now."""
        n = len(self._rank_ids)
        added = [m for m in self.names if m not in self._rank_ids]
        self._rank_index = {**self._rank_ids, **{m: n + j for j, m in enumerate(added)}}
        codes = np.empty((n + len(added), self.codes.shape[1]), dtype=np.int64)
        for m, j in self._rank_index.items():
            codes[j] = self.codes[self.index[m]]
        self.ranker.set_catalogue({self._rank_set: codes})

    def _load_retriever(self, folder: Path, device: str) -> None:
        from mmsid.retrieval.parallel import ParallelSID, ParallelSIDConfig

        f, saved, cfg = _saved_model(folder, "mmsid retrieve")
        if cfg.get("model") != "parallel-sid":
            raise DataError(
                f"{f}: a {cfg.get('model')} model; recommending over the store's catalogue "
                "(new items included) needs a parallel-sid retriever"
            )
        pcfg = ParallelSIDConfig(
            **{**cfg["parallel"], "max_history": cfg["protocol"]["max_history"]}
        )
        if pcfg.item_embedding:
            raise DataError(f"{f}: trained with item embeddings, which new items lack")
        K = self.assigner.tok.codebook_size
        self._check_trained_ids(folder, cfg["sids"])
        model = ParallelSID(self.codes, K, pcfg)
        model.load_state_dict(saved["state"])
        self.model = model.to(device).eval()
        self.max_history = pcfg.max_history

    # ---- reads -----------------------------------------------------------------------------

    def health(self) -> dict:
        return {
            "status": "ok",
            "version": self.assigner.version,
            "items": len(self.names),
            "levels": int(self.codes.shape[1]),
            "codebook_size": self.assigner.tok.codebook_size,
            "modalities": dict(zip(self.assigner.inputs.names, self.assigner.inputs.kinds)),
            "retriever": self.model is not None,
            "ranker": self.ranker is not None,
        }

    def sid(self, item: str) -> list[int] | None:
        with self.lock:
            s = self.assigner.store.sid(self.assigner.version, item)
        return None if s is None else list(s)

    def find(self, prefix: str, limit: int) -> tuple[list[str], bool]:
        codes = parse_prefix(prefix)
        if len(codes) > self.codes.shape[1] + 1:  # longer than a SID: nothing matches
            return [], False
        with self.lock:
            items = self.assigner.store.items(self.assigner.version, codes)
        return items[:limit], len(items) > limit

    # ---- writes ----------------------------------------------------------------------------

    def add(self, items: list[dict], *, replace: bool = False) -> list[dict]:
        """items: [{"item": id, "content": {modality: text}, "embeddings": {modality: [..]}}]."""
        kinds = dict(zip(self.assigner.inputs.names, self.assigner.inputs.kinds))
        frame = pd.DataFrame({"item": [it["item"] for it in items]})
        emb: dict[str, np.ndarray] = {}
        for j, it in enumerate(items):
            for name in it.get("content") or {}:
                if name not in kinds:
                    raise DataError(f"items[{j}].content.{name}: the run's modalities are {kinds}")
                if kinds[name] != "text":
                    raise DataError(
                        f"items[{j}].content.{name}: modality of kind '{kinds[name]}'; send it "
                        "as embeddings (a vector from the run's encoder)"
                    )
        for name, kind in kinds.items():
            if any(name in (it.get("content") or {}) for it in items):
                frame[name] = [(it.get("content") or {}).get(name) for it in items]
            if any(name in (it.get("embeddings") or {}) for it in items):
                dim = self.assigner.inputs.dims[self.assigner.inputs.names.index(name)]
                rows = np.zeros((len(items), dim), np.float32)
                for j, it in enumerate(items):
                    v = (it.get("embeddings") or {}).get(name)
                    if v is None:
                        continue
                    if len(v) != dim:
                        raise DataError(f"items[{j}].embeddings.{name}: {len(v)} values, not {dim}")
                    row = np.asarray(v, dtype=np.float64)
                    if not np.isfinite(row).all() or np.abs(row).max() > np.finfo(np.float32).max:
                        raise DataError(f"items[{j}].embeddings.{name}: values beyond float32")
                    rows[j] = row
                emb[name] = rows
        unknown = {n for it in items for n in (it.get("embeddings") or {})} - set(kinds)
        if unknown:
            raise DataError(f"embeddings {sorted(unknown)}: the run's modalities are {kinds}")
        with self.lock:
            res = self.assigner.assign(frame, emb, replace=replace, source="items")
            self._update_catalogue(res)
        return [
            {"item": r.item, "sid": [int(c) for c in r.sid.split("-")]} for r in res.itertuples()
        ]

    # ---- recommendation --------------------------------------------------------------------

    def recommend(self, history: list[str], k: int, *, exclude_history: bool = True) -> list[dict]:
        if self.model is None:
            raise LookupError("no retriever loaded: start the service with --retriever")
        with self.lock:
            unknown = [h for h in history if h not in self.index]
            if unknown:
                raise KeyError(f"history: item(s) {unknown[:5]} have no SID in the store")
            idx = [self.index[h] for h in history][-self.max_history :]
            seq = torch.tensor([idx], dtype=torch.long, device=self.device)  # (1, T)
            scores = self.model.score(seq)[0].float()  # (N,) fp32
            if exclude_history:
                scores[torch.tensor(sorted(set(self.index[h] for h in history)))] = -torch.inf
            top = scores.topk(min(k, len(self.names)))
            names, codes = self.names, self.codes
        return [
            {"item": names[i], "score": float(s), "codes": codes[i].tolist()}
            for i, s in zip(top.indices.tolist(), top.values.tolist())
            if np.isfinite(s)
        ]

    def rank(self, history: list[str], candidates: list[str]) -> list[dict]:
        """Click probabilities of ``candidates`` after ``history`` (din-sid or mcca), in the
        candidates' order; items added after training are scored by their SIDs."""
        if self.ranker is None:
            raise LookupError("no ranker loaded: start the service with --ranker")
        with self.lock:
            unknown = [h for h in [*history, *candidates] if h not in self._rank_index]
            if unknown:
                raise KeyError(f"item(s) {unknown[:5]} have no SID in the store")
            H = self.rank_history
            hist = [self._rank_index[h] for h in history][-H:]
            row = torch.full((len(candidates), H), -1, dtype=torch.long)
            if hist:
                row[:, : len(hist)] = torch.tensor(hist)
            batch = {
                "history": row.to(self.device),  # (C, H) oldest first, -1 padded
                "item": torch.tensor([self._rank_index[c] for c in candidates]).to(self.device),
            }
            p = self.ranker.predict(batch).float().cpu().tolist()
        return [{"item": c, "score": float(v)} for c, v in zip(candidates, p)]


def _saved_model(folder: Path, command: str) -> tuple[Path, dict, dict]:
    """(path, saved blob, its config) of a trained run's ``model.pt``; a clear error if the
    folder has none."""
    from mmsid.io import load_torch

    f = folder / "model.pt"
    if not f.is_file():
        raise DataError(f"{folder}: no model.pt; train it with `{command}`")
    saved = load_torch(f)
    return f, saved, saved["config"]
