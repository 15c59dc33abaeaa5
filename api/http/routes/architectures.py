"""/v1/architectures, /v1/pareto and /v1/health."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse

from api.http import schemas
from api.http.access import access
from api.http.deps import (
    DatabaseDep,
    DatasetFilter,
    Offset,
    SessionDep,
    SettingsDep,
    responses,
)
from api.http.kept import ParetoKey, ParetoResponses, pareto_response
from api.http.queries import architectures as queries
from api.http.queries import health as health_queries

router = APIRouter(prefix="/v1", tags=["architectures"])


@router.get(
    "/health",
    response_model=schemas.Health,
    tags=["service"],
    responses={
        503: {
            "model": schemas.Health,
            "description": "the service cannot store what it makes (``problems`` says what)",
        },
        421: responses()[421],
    },
    **access("public"),
)
async def health(request: Request, db: DatabaseDep, settings: SettingsDep) -> JSONResponse:
    """On the event loop (its reads on the loop's own connection, the write probe on a thread
    outside the routes' limit): it answers while every thread of the routes waits for a lock."""
    by_state = db.loop_read(health_queries.counts)
    state = request.app.state
    if getattr(state, "probes", None) is None:
        state.probes = anyio.CapacityLimiter(1)  # one probe at a time, whatever else runs
    problems = await anyio.to_thread.run_sync(
        health_queries.storage_problems, db, settings, limiter=state.probes
    )
    if not db.is_sqlite and not db.loop_read(health_queries.writable):
        problems.append("database: the server takes no writes (a read-only transaction)")
    body = health_queries.health(db, settings, by_state, problems)
    return JSONResponse(body.model_dump(), status_code=503 if problems else 200)


@router.get(
    "/architectures",
    response_model=schemas.ArchitectureList,
    **access("read"),
    responses=responses(422),
)
def architectures(
    s: SessionDep,
    dataset: DatasetFilter = None,
    teacher: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    offset: Offset = 0,
) -> schemas.ArchitectureList:
    return queries.list_architectures(
        s, dataset=dataset, teacher=teacher, limit=limit, offset=offset
    )


@router.get(
    "/architectures/groups",
    response_model=schemas.ArchitectureGroups,
    **access("read"),
)
def architecture_groups(s: SessionDep) -> schemas.ArchitectureGroups:
    """Every (dataset, teacher identity) with stored architectures, newest first, and the one a
    view shows unless told (the latest job's): accuracies of different groups are not compared,
    so the dashboard and ``reskd pareto`` show one group at a time."""
    return queries.architecture_groups(s)


@router.get(
    "/architectures/points",
    response_model=schemas.ArchitecturePoints,
    **access("read"),
    responses=responses(422),
)
def architecture_points(
    s: SessionDep,
    dataset: DatasetFilter = None,
    teacher: Annotated[str | None, Query(max_length=200)] = None,
    cost: schemas.Cost = "mflops",
    limit: Annotated[int, Query(ge=1, le=100_000)] = 100_000,
) -> schemas.ArchitecturePoints:
    """Every student architecture's D_v and test accuracy and cost as columns (the dashboard's
    Pareto chart draws those with a D_v accuracy)."""
    return queries.architecture_points(s, dataset=dataset, teacher=teacher, cost=cost, limit=limit)


@router.get(
    "/pareto",
    response_model=schemas.ParetoPublic,
    **access("read"),
    responses={
        **responses(422),
        304: {"description": "the front named by If-None-Match is still the current one"},
    },
)
async def pareto(
    request: Request,
    db: DatabaseDep,
    dataset: DatasetFilter = None,
    teacher: Annotated[str | None, Query(max_length=200)] = None,
    cost: schemas.Cost = "mflops",
    include_teacher: bool = False,
    if_none_match: Annotated[str | None, Header(max_length=1000)] = None,
) -> Response:
    """The non-dominated architectures: D_v accuracy (higher) against ``cost`` (lower); test
    accuracy is carried beside it, never ranked on. Rows stored before D_v accuracy was recorded
    are on no front. Give a dataset and a teacher (``GET /v1/architectures/groups`` lists them):
    without them the front spans groups whose accuracies are not comparable.

    The response carries an ETag that changes whenever any stored front does; sent back as
    If-None-Match it gets a 304 while the front is unchanged. A query repeated between stored
    results is answered from the API's last response after one read of the fronts' revision."""
    kept: ParetoResponses = request.app.state.pareto
    # On the event loop, on its own connection: the revision and the stored front are short,
    # bounded reads, and a hop to the thread pool (and back) cost more than them under load.
    key: ParetoKey = (dataset, teacher, cost, include_teacher)
    tag, body = db.loop_read(lambda conn: kept.read(conn, key, if_none_match))
    kept.validated(request.scope["query_string"], key)  # next time answered before the route
    return pareto_response(tag, body)
