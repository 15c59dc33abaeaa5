"""/v1/jobs: submit, list, show, cancel, delete, watch (Server-Sent Events) and download
artifacts."""

from __future__ import annotations

import mimetypes
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.background import BackgroundTask

from api.http import schemas
from api.http.access import access, job_owner
from api.http.deps import (
    AUTH,
    OWNER,
    DatabaseDep,
    JobId,
    Offset,
    PrincipalDep,
    QueueDep,
    SessionDep,
    SettingsDep,
    SharedReadsDep,
    json_response,
    responses,
    shared_json,
)
from api.http.errors import NotFound
from api.http.queries import jobs as queries
from api.http.removals import answered
from api.http.streams import Streams, TooManyStreams
from api.runtime import retention, sweeps
from api.runtime.accounts import record
from api.runtime.fairshare import Policy
from api.runtime.retention import Removed
from api.runtime.store import TERMINAL, JobKind, JobState

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=AUTH)

# What an artifact is served as (the system's MIME table calls .pt a SNES page table).
MEDIA_TYPES = {
    ".pt": "application/octet-stream",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".log": "text/plain; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".csv": "text/csv; charset=utf-8",
    ".onnx": "application/octet-stream",
}


@router.post(
    "",
    response_model=schemas.JobPublic,
    status_code=201,
    responses=responses(400, 413, 422),
    **access("write"),
)
def submit(
    body: schemas.JobCreate, q: QueueDep, db: DatabaseDep, settings: SettingsDep, who: PrincipalDep
) -> Response:
    job_id = queries.submit(q, body, settings, db, who)  # a ConfigError is a 422 (see main.py)
    with db.session(readonly=True) as s:
        job = queries.get_job(s, job_id, policy=Policy.of(settings))
    return json_response(job, status_code=201)


# The reads below run on the event loop, through its own connection (``Database.loop_read``):
# a few short statements each, without a hop to the thread pool and back; identical ones that
# wait at the same moment share one read (``SharedReads``).


@router.get("", response_model=schemas.JobList, responses=responses(422), **access("read"))
async def list_jobs(
    db: DatabaseDep,
    settings: SettingsDep,
    shared: SharedReadsDep,
    who: PrincipalDep,
    offset: Offset = 0,
    state: JobState | None = None,
    kind: JobKind | None = None,
    dataset: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    owner: Annotated[str | None, Query(max_length=64, description="only this user's jobs")] = None,
) -> Response:
    policy = Policy.of(settings)

    def read() -> schemas.JobList:
        return db.loop_read(
            lambda c: queries.list_jobs(
                c,
                state=state,
                kind=kind,
                dataset=dataset,
                limit=limit,
                offset=offset,
                owner=owner,
                policy=policy,
            )
        )

    key = ("jobs", who.name, state, kind, dataset, limit, offset, owner)
    return await shared_json(shared, key, read)


@router.get(
    "/{job_id}", response_model=schemas.JobPublic, responses=responses(404, 422), **access("read")
)
async def get_job(
    job_id: JobId, db: DatabaseDep, settings: SettingsDep, shared: SharedReadsDep, who: PrincipalDep
) -> Response:
    """The job with its stages, results and artifacts (``artifacts``: their listing)."""
    policy = Policy.of(settings)

    def read() -> schemas.JobPublic:
        return db.loop_read(lambda c: queries.get_job(c, job_id, policy=policy))

    return await shared_json(shared, ("job", who.name, job_id), read)


@router.get(
    "/{job_id}/metrics",
    response_model=schemas.JobMetrics,
    responses=responses(404, 422),
    **access("read"),
)
async def get_metrics(
    job_id: JobId, db: DatabaseDep, shared: SharedReadsDep, who: PrincipalDep
) -> Response:
    """Per-epoch loss, accuracy, learning rate, seconds (and E[MFLOPs] of searches) of every
    stage the job trained: what its curves are drawn from."""

    def read() -> schemas.JobMetrics:
        return db.loop_read(lambda c: queries.job_metrics(c, job_id))

    return await shared_json(shared, ("metrics", who.name, job_id), read)


@router.post(
    "/{job_id}/cancel",
    response_model=schemas.JobPublic,
    responses=responses(404, 422),
    **access("owner", job_owner),
)
def cancel(job_id: JobId, q: QueueDep, db: DatabaseDep, who: PrincipalDep) -> schemas.JobPublic:
    if q.cancel(job_id=job_id) is None:
        raise NotFound(f"job {job_id} not found")
    with db.session() as s:
        record(s, who, "job.cancel", f"job {job_id}")
    with db.session(readonly=True) as s:
        job = queries.get_job(s, job_id)
    if job.sweep_id is not None and job.state == "cancelled":  # a trial: the sweep goes on
        sweeps.advance(db, q, job.sweep_id, owner=OWNER)
    return job


@router.delete(
    "/{job_id}",
    response_model=Removed,
    responses=responses(404, 409, 422),
    **access("owner", job_owner),
)
def delete_job(job_id: JobId, db: DatabaseDep, settings: SettingsDep, who: PrincipalDep) -> Removed:
    """Delete an ended job: its rows (stages, metrics, artifacts, its architectures off the
    Pareto fronts), its folder and the stage folders no other job uses. A queued or running job
    (or a trial of a running sweep) is a 409: cancel it first."""
    with answered():
        return retention.delete_job(settings, db, job_id=job_id, who=who)


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "`event: job` with the job (as GET /v1/jobs/{id}) whenever it "
            "changes, comment lines as keep-alive, `event: end` once it has ended",
            "content": {
                "text/event-stream": {
                    "schema": {  # one event (OpenAPI 3.1: the schema of each event)
                        "type": "object",
                        "required": ["data"],
                        "properties": {
                            "event": {"type": "string", "enum": ["job", "end"]},
                            "data": {"type": "string", "contentMediaType": "application/json"},
                        },
                    }
                }
            },
        },
        **responses(404, 422, 429),
    },
    **access("read"),
)
async def events(
    job_id: JobId, request: Request, db: DatabaseDep, settings: SettingsDep
) -> StreamingResponse:
    """Server-Sent Events of one job, until it ends or the client goes."""
    policy = Policy.of(settings)

    def read(i: int) -> tuple[str, bool]:
        with db.session(readonly=True) as s:
            job = queries.get_job(s, i, policy=policy)
        return job.model_dump_json(), job.state in TERMINAL

    def exists(i: int) -> None:
        with db.session(readonly=True) as s:
            queries.job_exists(s, i)

    streams: Streams = request.app.state.streams
    await streams.exists(job_id, exists)  # 404 before the stream starts
    try:
        ticket = streams.admit(request.client.host if request.client else "?")
    except TooManyStreams as exc:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)  # type: ignore[return-value]
    return StreamingResponse(
        streams.events(job_id, ticket, read),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        background=BackgroundTask(ticket.release),
    )


@router.get(
    "/{job_id}/artifacts/{name:path}",
    response_class=FileResponse,
    responses={
        200: {"description": "the file", "content": {"application/octet-stream": {}}},
        **responses(400, 404, 422),
    },
    **access("read"),
)
def artifact(job_id: JobId, name: str, s: SessionDep, settings: SettingsDep) -> FileResponse:
    path = queries.artifact_path(s, job_id=job_id, name=name, root=settings.artifact_root)
    media = MEDIA_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0]
    return FileResponse(
        path, filename=name.replace("/", "_"), media_type=media or "application/octet-stream"
    )
