"""The HTTP service over a tokenize run: its ID store, new-item assignment and, with a trained
parallel-SID retriever, recommendations that score the catalogue as it is in the store (items
assigned after training included).

    mmsid serve RUN [--retriever RETRIEVE_RUN] [--host 127.0.0.1] [--port 8000]

Endpoints (OpenAPI schema at ``/openapi.json``, pages at ``/docs``):

* ``GET /health``: the version, catalogue size, SID shape, whether a retriever is loaded.
* ``GET /items/{item}``: the item's SID (404 when it has none).
* ``GET /sids/{prefix}``: items whose SID starts with ``prefix`` ("12-4"), at most ``limit``.
* ``POST /items``: assign SIDs to new items (:class:`mmsid.assign.Assigner`), all or none;
  with a token configured it needs ``Authorization: Bearer <token>``.
* ``POST /recommend``: a history of item ids -> the top-k items.
* ``POST /rank``: a history and candidate items -> click probabilities from a ``din-sid``
  ranker trained on the run's IDs (an item added later: no id embedding, its SID's).

Bad input gets a 4xx whose ``detail`` names the field; a request body over ``max_body`` bytes
gets 413 before it is parsed. The service holds one store connection behind a lock (requests
run in FastAPI's thread pool); other processes may write the same store (SQLite serialises
writers) and are seen after the next write here or a restart.

Images are not accepted as file paths over HTTP (a client could name any server file): send
the image modality as a vector from the run's encoder (``embeddings``) instead.
"""

from __future__ import annotations

import hmac
import threading
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import torch
from fastapi import Depends, FastAPI, Header, HTTPException, Query
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field, create_model

from mmsid.assign import Assigner
from mmsid.errors import DataError
from mmsid.store import SIDConflict, parse_prefix

MAX_ITEMS_PER_REQUEST = 1000
MAX_K = 1000
SID_PATTERN = r"^[0-9]{1,9}(-[0-9]{1,9})*$"  # codes joined by '-', as parse_prefix reads


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
        """A `mmsid rank --model din-sid` run trained on this run's IDs (one SID set)."""
        from mmsid.io import load_torch
        from mmsid.ranking.din import DIN

        f = folder / "model.pt"
        if not f.is_file():
            raise DataError(f"{folder}: no model.pt; train it with `mmsid rank`")
        saved = load_torch(f)
        cfg = saved["config"]
        if cfg.get("model") != "din-sid" or len(cfg.get("sids") or {}) != 1:
            raise DataError(
                f"{f}: a {cfg.get('model')} model over {len(cfg.get('sids') or {})} SID set(s); "
                "ranking items added after training needs din-sid over this run's one SID table"
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
        model = DIN(n, sids={name: codes}, codebook_size=K)
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
        from mmsid.io import load_torch
        from mmsid.retrieval.parallel import ParallelSID, ParallelSIDConfig

        f = folder / "model.pt"
        if not f.is_file():
            raise DataError(f"{folder}: no model.pt; train it with `mmsid retrieve`")
        saved = load_torch(f)
        cfg = saved["config"]
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
        """Click probabilities of ``candidates`` after ``history`` (din-sid ranker), in the
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


# ---- the HTTP layer ----------------------------------------------------------------------

ItemId = Annotated[str, Field(min_length=1, max_length=256)]


class Assigned(BaseModel):
    item: str
    sid: list[int]


class AddResponse(BaseModel):
    version: str
    assigned: list[Assigned]


class SIDResponse(BaseModel):
    item: str
    sid: list[int]
    version: str


class FindResponse(BaseModel):
    prefix: list[int]
    items: list[str]
    truncated: bool


class RecommendRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")  # no 0 -> False coercion
    history: list[ItemId] = Field(min_length=1, max_length=1000)
    k: int = Field(10, ge=1, le=MAX_K)
    exclude_history: bool = True


class Scored(BaseModel):
    item: str
    score: float
    codes: list[int]


class RecommendResponse(BaseModel):
    items: list[Scored]


class Health(BaseModel):
    status: str
    version: str
    items: int
    levels: int
    codebook_size: int
    modalities: dict[str, str]
    retriever: bool
    ranker: bool


class Problem(BaseModel):
    detail: str


class RankRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    history: list[ItemId] = Field(max_length=1000)
    candidates: list[ItemId] = Field(min_length=1, max_length=MAX_K)


class RankScore(BaseModel):
    item: str
    score: float = Field(description="predicted click probability")


class RankResponse(BaseModel):
    scores: list[RankScore]


def _add_request(service: Service) -> type[BaseModel]:
    """The body of POST /items, typed from the run: ``content`` takes the run's text
    modalities, ``embeddings`` any modality as a vector of exactly its width; other names
    are refused by the schema. What a schema cannot say is checked by the service (422):
    each item needs at least one modality."""
    inp = service.assigner.inputs
    texts = {
        n: (Annotated[str, Field(max_length=100_000)] | None, None)
        for n, k in zip(inp.names, inp.kinds)
        if k == "text"
    }
    vectors = {
        n: (Annotated[list[float], Field(min_length=d, max_length=d)] | None, None)
        for n, d in zip(inp.names, inp.dims)
    }
    forbid = ConfigDict(strict=True, extra="forbid")
    Content = create_model("Content", __config__=forbid, **texts)
    Embeddings = create_model("Embeddings", __config__=forbid, **vectors)
    NewItem = create_model(
        "NewItem",
        __config__=forbid,
        item=(ItemId, ...),
        content=(Content, Field(default_factory=Content, description="modality -> text")),
        embeddings=(
            Embeddings,
            Field(default_factory=Embeddings, description="modality -> vector (run's encoder)"),
        ),
    )
    return create_model(
        "AddRequest",
        __config__=forbid,
        items=(list[NewItem], Field(min_length=1, max_length=MAX_ITEMS_PER_REQUEST)),
        replace=(bool, False),
    )


def create_app(service: Service, *, token: str | None = None, max_body: int = 1 << 20) -> FastAPI:
    """The FastAPI app over ``service``. ``token``: the bearer token writes need (None: none);
    ``max_body``: request bodies over this many bytes get 413 (FastAPI's own limit)."""
    app = FastAPI(
        title="mmsid",
        summary="Semantic IDs of one tokenize run: look up, assign, recommend.",
        version=service.assigner.version,
        max_body_size=max_body,
    )
    version = service.assigner.version
    AddRequest = _add_request(service)

    def writer(authorization: Annotated[str | None, Header()] = None) -> None:
        if token is None:
            return
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "writes need 'Authorization: Bearer <token>'")

    # the reads are microseconds of SQLite: served on the event loop, no thread hop
    @app.get("/health", response_model=Health)
    async def health():
        return service.health()

    @app.get("/items/{item}", response_model=SIDResponse, responses={404: {"model": Problem}})
    async def get_sid(item: Annotated[str, PathParam(min_length=1, max_length=256)]):
        sid = service.sid(item)
        if sid is None:
            raise HTTPException(404, f"item '{item}' has no SID in version {version}")
        return {"item": item, "sid": sid, "version": version}

    @app.get("/sids/{prefix}", response_model=FindResponse, responses={422: {}})
    async def find(
        prefix: Annotated[str, PathParam(max_length=200, pattern=SID_PATTERN)],
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ):
        try:
            items, truncated = service.find(prefix, limit)
        except DataError as e:
            raise HTTPException(422, str(e)) from None
        return {"prefix": parse_prefix(prefix), "items": items, "truncated": truncated}

    def add(req):
        items = [it.model_dump(exclude_none=True) for it in req.items]
        try:
            out = service.add(items, replace=req.replace)
        except SIDConflict as e:
            raise HTTPException(409, str(e)) from None
        except DataError as e:
            raise HTTPException(422, str(e)) from None
        return {"version": version, "assigned": out}

    add.__annotations__ = {"req": AddRequest}  # a model built at run time, not a name
    app.post(
        "/items",
        response_model=AddResponse,
        dependencies=[Depends(writer)],
        responses={
            400: {"model": Problem, "description": "the body is not JSON"},
            401: {"model": Problem},
            409: {"model": Problem},
            413: {"description": "body over the size limit"},
            422: {},
        },
    )(add)

    @app.post(
        "/recommend",
        response_model=RecommendResponse,
        responses={
            400: {"model": Problem, "description": "the body is not JSON"},
            404: {"model": Problem},
            409: {"model": Problem},
        },
    )
    def recommend(req: RecommendRequest):
        try:
            out = service.recommend(req.history, req.k, exclude_history=req.exclude_history)
        except KeyError as e:  # an unknown history item
            raise HTTPException(404, e.args[0]) from None
        except LookupError as e:  # no retriever loaded
            raise HTTPException(409, str(e)) from None
        return {"items": out}

    @app.post(
        "/rank",
        response_model=RankResponse,
        responses={
            400: {"model": Problem, "description": "the body is not JSON"},
            404: {"model": Problem},
            409: {"model": Problem},
        },
    )
    def rank(req: RankRequest):
        try:
            out = service.rank(req.history, req.candidates)
        except KeyError as e:  # an unknown item
            raise HTTPException(404, e.args[0]) from None
        except LookupError as e:  # no ranker loaded
            raise HTTPException(409, str(e)) from None
        return {"scores": out}

    return app
