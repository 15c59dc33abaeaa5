"""Dependencies of the routes, as named aliases (``SessionDep``, ``QueueDep``, ...): one place that
knows where the app keeps its database, queue and settings, so tests can override them."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Hashable, Iterator
from typing import Annotated, Any, TypeVar, cast

from fastapi import Depends, HTTPException, Path, Query, Request, Response, status
from pydantic import AfterValidator, BaseModel
from sqlalchemy.orm import Session

from api.runtime.accounts import Principal
from api.runtime.settings import Settings
from api.runtime.store import JobQueue
from db.session import Database
from distill.catalog import DATASETS

# The three getters below only read app.state: ``async`` keeps them on the event loop (FastAPI runs
# a plain ``def`` dependency in its thread pool, where 200 event streams would queue behind it).
OWNER = f"api:{os.getpid()}"  # holds a sweep's lock while a request advances it
JSON = "application/json"
T = TypeVar("T")


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def get_queue(request: Request) -> JobQueue:
    queue: JobQueue = request.app.state.queue
    return queue


class SharedReads:
    """Identical reads waiting on the event loop at the same moment share one: the first lets
    the requests already received reach their route (one turn of the loop), then reads once
    for all of them. Each answer is the database as it was while its own request was open
    (read after every sharer arrived, before any is answered), so sharing changes no answer:
    it answers a burst of the same read (a page many clients poll) with one. The read is
    synchronous (``Database.loop_read``): nothing else runs on the loop meanwhile, and a
    request that arrives later reads anew. A failed read fails every sharer alike."""

    def __init__(self) -> None:
        self._open: dict[Hashable, asyncio.Future[Any]] = {}

    async def read(self, key: Hashable, read: Callable[[], T]) -> T:
        shared = self._open.get(key)
        if shared is not None:
            try:
                return cast(T, await asyncio.shield(shared))
            except asyncio.CancelledError:
                if not shared.cancelled():
                    raise  # this request went
                return read()  # the first went before it read: read alone
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._open[key] = future
        try:
            await asyncio.sleep(0)  # the requests already received join
        except asyncio.CancelledError:
            future.cancel()
            raise
        finally:
            del self._open[key]
        try:
            value = read()
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: with no sharer, nothing is left unread
            raise
        future.set_result(value)
        return value


async def get_shared_reads(request: Request) -> SharedReads:
    state = request.app.state
    if getattr(state, "shared_reads", None) is None:
        state.shared_reads = SharedReads()
    shared: SharedReads = state.shared_reads
    return shared


SharedReadsDep = Annotated[SharedReads, Depends(get_shared_reads)]


async def shared_json(
    shared: SharedReads, key: Hashable, read: Callable[[], BaseModel]
) -> Response:
    """The JSON of ``read()``'s model as the route's answer, read and serialised once for the
    identical reads waiting with it (``SharedReads``; ``key`` names the read, its caller
    included)."""
    body = await shared.read(key, lambda: read().model_dump_json())
    return Response(body, media_type=JSON)


def json_response(model: BaseModel, *, status_code: int = 200) -> Response:
    """``model`` as the route's answer, serialised once: FastAPI would validate a returned model
    again against the route's ``response_model`` (on its thread pool, for a plain ``def``
    route), then serialise it. The route keeps its ``response_model`` for the OpenAPI document."""
    return Response(model.model_dump_json(), status_code=status_code, media_type=JSON)


def get_session(db: Annotated[Database, Depends(get_db)]) -> Iterator[Session]:
    with db.session(readonly=True) as s:  # routes that write go through the queue
        yield s


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_db)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]
SessionDep = Annotated[Session, Depends(get_session)]


async def principal(request: Request) -> Principal:
    """The caller, as the Guard authenticated its credential (a token-less service's callers
    without a key are the local admin)."""
    who: Principal | None = getattr(request.state, "principal", None)
    if who is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "a bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return who


PrincipalDep = Annotated[Principal, Depends(principal)]

AUTH = [Depends(principal)]  # the Guard middleware checks first (before any body is read)

# Ids and offsets fit a signed 64-bit integer (SQLite's and PostgreSQL's); larger ones are a 422.
MAX_ID = 2**63 - 1
JobId = Annotated[int, Path(ge=1, le=MAX_ID, description="a job's id")]
SweepId = Annotated[int, Path(ge=1, le=MAX_ID, description="a sweep's id")]
KeyId = Annotated[int, Path(ge=1, le=MAX_ID, description="an API key's id")]
Offset = Annotated[int, Query(ge=0, le=MAX_ID, description="rows to skip")]


def _known_dataset(name: str | None) -> str | None:
    if name is not None and name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    return name


# A dataset filter: an unknown name is a 422 naming it, not an empty answer.
DatasetFilter = Annotated[
    str | None,
    AfterValidator(_known_dataset),
    Query(
        max_length=64, description="a dataset's name", json_schema_extra={"enum": list(DATASETS)}
    ),
]


def _problem(description: str) -> dict[str, Any]:
    from api.http.schemas import Problem

    return {"model": Problem, "description": description}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error responses of a route, for the OpenAPI schema (401 drops out of the schema of a
    service without a token)."""
    from api.http.schemas import ValidationProblem

    known: dict[int, dict[str, Any]] = {
        400: _problem("the request cannot be carried out as asked"),
        401: _problem("no bearer token (a token is configured)"),
        403: _problem(
            "a wrong, revoked or expired key; a role or owner that may not do this; or a "
            "cross-site request that would change state"
        ),
        404: _problem("no such job, sweep or artifact"),
        409: _problem("it clashes with what is stored (a name taken, a job still running)"),
        413: _problem("the request body is too large, or its JSON too many members"),
        415: _problem("an upload sent as another media type than the route's"),
        421: _problem("an unknown Host header"),
        422: {
            "model": ValidationProblem,
            "description": "invalid fields; each error's loc names one",
        },
        429: _problem("too many event streams from this client"),
        503: _problem("the database is unavailable, or the service holds its most streams"),
    }
    return {code: known[code] for code in (401, 403, 421, 503, *codes)}
