"""The HTTP layer: request and response models (the body of POST /items typed from the run)
and the FastAPI app over a :class:`~mmsid.serve.service.Service`."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException, Query
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field, create_model

from mmsid.errors import DataError
from mmsid.serve.service import Service
from mmsid.store import SIDConflict, parse_prefix

MAX_ITEMS_PER_REQUEST = 1000
MAX_K = 1000
SID_PATTERN = r"^[0-9]{1,9}(-[0-9]{1,9})*$"  # codes joined by '-', as parse_prefix reads


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
    history: list[ItemId] = Field(min_length=1, max_length=1000, examples=[["0", "1", "2"]])
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
    # content fusion of the retriever's scores: {"weight": w, "new_item_bias": b}, or null
    fusion: dict[str, float] | None = None


class Problem(BaseModel):
    detail: str


class RankRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    history: list[ItemId] = Field(max_length=1000, examples=[["0", "1"]])
    candidates: list[ItemId] = Field(min_length=1, max_length=MAX_K, examples=[["2", "3"]])


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


def _answer(fn, *args, **kw):
    """Call the service; its errors become HTTP answers, one mapping for every endpoint:
    changed content 409, bad input 422, an unknown item 404, no model loaded 409."""
    try:
        return fn(*args, **kw)
    except SIDConflict as e:
        raise HTTPException(409, str(e)) from None
    except DataError as e:
        raise HTTPException(422, str(e)) from None
    except KeyError as e:  # an unknown item (KeyError's str() would quote the message)
        raise HTTPException(404, e.args[0]) from None
    except LookupError as e:  # the retriever / ranker the endpoint needs is not loaded
        raise HTTPException(409, str(e)) from None


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
    async def get_sid(
        item: Annotated[str, PathParam(min_length=1, max_length=256, examples=["0"])],
    ):
        sid = service.sid(item)
        if sid is None:
            raise HTTPException(404, f"item '{item}' has no SID in version {version}")
        return {"item": item, "sid": sid, "version": version}

    @app.get("/sids/{prefix}", response_model=FindResponse, responses={422: {}})
    async def find(
        prefix: Annotated[str, PathParam(max_length=200, pattern=SID_PATTERN)],
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ):
        items, truncated = _answer(service.find, prefix, limit)
        return {"prefix": parse_prefix(prefix), "items": items, "truncated": truncated}

    def add(req):
        items = [it.model_dump(exclude_none=True) for it in req.items]
        out = _answer(service.add, items, replace=req.replace)
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

    # what /recommend and /rank answer besides 200 (and the 422 FastAPI documents itself)
    SCORING_ERRORS = {
        400: {"model": Problem, "description": "the body is not JSON"},
        404: {"model": Problem},
        409: {"model": Problem},
    }

    @app.post(
        "/recommend",
        response_model=RecommendResponse,
        responses=SCORING_ERRORS,
    )
    def recommend(req: RecommendRequest):
        out = _answer(service.recommend, req.history, req.k, exclude_history=req.exclude_history)
        return {"items": out}

    @app.post(
        "/rank",
        response_model=RankResponse,
        responses=SCORING_ERRORS,
    )
    def rank(req: RankRequest):
        return {"scores": _answer(service.rank, req.history, req.candidates)}

    return app
