"""What the endpoints call, usable without HTTP: the store's catalogue in memory, new-item
assignment, a parallel-SID retriever (with the content fusion its run chose on validation) and
a din-sid or mcca ranker over the catalogue as it grows.

Content fusion (mmsid.retrieval.fusion) needs every catalogue item's content: the training
catalogue's comes from the retriever's data set (read through MMSID_DATA_DIR or its
``data_dir``), an item added through :meth:`Service.add` brings its own (the fusion modalities
among those it is given). An item added in an earlier service session has none in memory (the
store keeps codes, not content): it gets the new-item prior but no content term until it is
added again."""

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
        ranker: a `mmsid rank --model din-sid|mcca` folder trained on ``run``'s IDs.
        fusion: content fusion of the retriever's scores (mmsid.retrieval.fusion): "auto" =
            the (w, b) its run chose on validation (none recorded, or (0, 0): the model
            alone), "off" = the model alone, or "W,B" = these weights.
    """

    def __init__(
        self,
        run: str | Path,
        *,
        retriever: str | Path | None = None,
        ranker: str | Path | None = None,
        device: str = "cpu",
        fusion: str = "auto",
    ):
        self.assigner = Assigner(run, device=device)
        self.lock = threading.Lock()
        self.device = device
        self.model = self.ranker = self.fused = None
        self.max_history = 0
        self._load_catalogue()
        if retriever is not None:
            self._load_retriever(Path(retriever), device, fusion)
        if ranker is not None:
            self._load_ranker(Path(ranker), device)

    def _load_catalogue(self) -> None:
        self.names, self.codes = self.assigner.catalogue()  # (N,), (N, L)
        self.index = {n: i for i, n in enumerate(self.names)}
        if self.model is not None:
            self.model.set_catalogue(self.codes)

    def _update_catalogue(self, res: pd.DataFrame, content: np.ndarray | None = None) -> None:
        """Fold assigned rows into the in-memory catalogue (no re-read of the store): new items
        are appended, replaced ones take their new codes (and ``content`` rows, in ``res``'s
        order, when fusion reads content)."""
        L = self.codes.shape[1]
        codes = res[[f"c{lvl}" for lvl in range(L)]].to_numpy()
        rows = []  # each assigned item's catalogue index
        for name, c in zip(res["item"], codes):
            if name not in self.index:
                self.index[name] = len(self.names)
                self.names.append(name)
            rows.append(self.index[name])
        rows_ = np.asarray(rows, dtype=np.int64)
        grown = np.zeros((len(self.names), L), dtype=np.int64)
        grown[: len(self.codes)] = self.codes
        grown[rows_] = codes
        self.codes = grown
        if self.model is not None:
            self.model.set_catalogue(self.codes)  # items added now are not trainable
        if self.fused is not None:
            x = np.zeros((len(self.names), self.content.shape[1]), np.float32)
            x[: len(self.content)] = self.content
            x[rows_] = content
            self._set_content(x)
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

    def _load_retriever(self, folder: Path, device: str, fusion: str) -> None:
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
        ids = self._check_trained_ids(folder, cfg["sids"])
        model = ParallelSID(self.codes, K, pcfg)
        model.load_state_dict(saved["state"])
        self.model = model.to(device).eval()
        self.max_history = pcfg.max_history
        w, b = _fusion_weights(folder, fusion)
        if w or b:
            self._load_fusion(cfg, ids, w, b)

    def _load_fusion(self, cfg: dict, ids: np.ndarray, w: float, b: float) -> None:
        """Fusion at (w, b): the training catalogue's content from the retriever's data set
        (as the retrieve stage read it), and the items its softmax trained on (the protocol's
        warm items; every other item, cold or added, is new)."""
        from mmsid.data import load_dataset
        from mmsid.protocol import ProtocolConfig, build_protocol
        from mmsid.retrieval.baselines import item_content

        try:
            ds = load_dataset(cfg["dataset"], cfg.get("data_dir"))  # read once for both
            x, widths, means = item_content(
                cfg["dataset"], None, cfg.get("modalities") or [], cfg["center"], ds=ds
            )
            proto = build_protocol(ds, ProtocolConfig(**cfg["protocol"]))
        except (OSError, KeyError) as e:
            raise DataError(
                f"content fusion needs the retriever's data set '{cfg.get('dataset')}' ({e}); "
                "set MMSID_DATA_DIR, or serve with fusion off (--fusion off)"
            ) from e
        if len(x) <= int(ids.max()):
            raise DataError(
                f"{cfg['dataset']}: {len(x)} items, but the retriever's SID table has item "
                f"{int(ids.max())}; serve with the data set it was trained on, or --fusion off"
            )
        run = dict(zip(self.assigner.inputs.names, self.assigner.inputs.dims))
        for name, d in widths.items():
            if name in run and run[name] != d:
                raise DataError(
                    f"modality '{name}': {d}-wide in the retriever's content, {run[name]}-wide "
                    f"in {self.assigner.run}'s inputs (another encoder?); serve with --fusion off"
                )
        at = np.asarray([self.index[str(i)] for i in ids])  # table item -> catalogue index
        content = np.zeros((len(self.names), x.shape[1]), np.float32)
        content[at] = x[ids]
        trained = np.zeros(len(self.names), bool)
        trained[at] = ~proto.is_cold[ids]
        self.model.trainable = torch.as_tensor(trained, device=self.model.trainable.device)
        self.fusion = {"weight": w, "new_item_bias": b, "widths": widths, "means": means}
        self._set_content(content)

    def _set_content(self, content: np.ndarray) -> None:
        from mmsid.retrieval.fusion import ContentFusion

        self.content = content
        f = self.fusion
        self.fused = ContentFusion(self.model, content, f["weight"], f["new_item_bias"])
        self.fused.to(self.device).eval()

    def _fusion_content(self, blocks: dict[str, tuple[np.ndarray, np.ndarray]], n: int):
        """(n, d) fusion content of items just embedded by the assigner: the fusion
        modalities among the run's, absent ones zero, centred as the retriever's were."""
        from mmsid.features import ItemFeatures
        from mmsid.features.inputs import concat_features

        widths = self.fusion["widths"]
        emb, mask = {}, {}
        for name, d in widths.items():
            e, m = blocks.get(name, (None, None))
            if e is None:  # a modality the tokenize run does not read: new items lack it
                e, m = np.zeros((n, d), np.float32), np.zeros(n, bool)
            emb[name], mask[name] = e, m
        x = concat_features(ItemFeatures(emb, mask), list(widths), means=self.fusion["means"])[0]
        return x.astype(np.float32)

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
            "fusion": None
            if self.fused is None
            else {k: self.fusion[k] for k in ("weight", "new_item_bias")},
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
            res, blocks = self.assigner.assign_embedded(frame, emb, replace=replace, source="items")
            content = None if self.fused is None else self._fusion_content(blocks, len(frame))
            self._update_catalogue(res, content)
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
            scorer = self.model if self.fused is None else self.fused
            scores = scorer.score(seq)[0].float()  # (N,) fp32
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


def _fusion_weights(folder: Path, setting: str) -> tuple[float, float]:
    """(w, b) of content fusion for ``setting`` ("auto": the run's validation choice in
    ``metrics.json``, (0, 0) when it made none; "off"; or "W,B")."""
    import json

    if setting == "off":
        return 0.0, 0.0
    if setting == "auto":
        f = folder / "metrics.json"
        fused = json.loads(f.read_text()).get("fused") if f.is_file() else None
        return (0.0, 0.0) if not fused else (float(fused["weight"]), float(fused["new_item_bias"]))
    try:
        w, b = (float(v) for v in setting.split(","))
    except ValueError:
        w = b = float("nan")
    if not (np.isfinite(w) and np.isfinite(b)) or w < 0:
        raise DataError(
            f"fusion {setting!r}: write auto, off, or W,B (a weight >= 0 and a new-item prior)"
        )
    return w, b


def _saved_model(folder: Path, command: str) -> tuple[Path, dict, dict]:
    """(path, saved blob, its config) of a trained run's ``model.pt``; a clear error if the
    folder has none."""
    from mmsid.io import load_torch

    f = folder / "model.pt"
    if not f.is_file():
        raise DataError(f"{folder}: no model.pt; train it with `{command}`")
    saved = load_torch(f)
    return f, saved, saved["config"]
