"""/v1/jobs: submit, list, show, cancel, watch (Server-Sent Events) and download artifacts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, StreamingResponse

from api.http import queries, schemas
from api.http.deps import AUTH, OWNER, DatabaseDep, QueueDep, SessionDep, SettingsDep
from api.runtime import sweeps
from api.runtime.store import TERMINAL, JobKind, JobState

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=AUTH)


@router.post(
    "",
    response_model=schemas.JobPublic,
    status_code=201,
    responses={422: {"description": "the config is invalid; `detail` names the field"}},
)
def submit(body: schemas.JobCreate, q: QueueDep, db: DatabaseDep) -> schemas.JobPublic:
    job_id = queries.submit(q, body)  # a ConfigError is a 422 (see main.py)
    with db.session(readonly=True) as s:
        return queries.get_job(s, job_id)


@router.get("", response_model=schemas.JobList)
def list_jobs(
    s: SessionDep,
    state: JobState | None = None,
    kind: JobKind | None = None,
    dataset: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> schemas.JobList:
    return queries.list_jobs(s, state=state, kind=kind, dataset=dataset, limit=limit, offset=offset)


@router.get("/{job_id}", response_model=schemas.JobPublic)
def get_job(job_id: int, s: SessionDep) -> schemas.JobPublic:
    return queries.get_job(s, job_id)


@router.post("/{job_id}/cancel", response_model=schemas.JobPublic)
def cancel(job_id: int, q: QueueDep, db: DatabaseDep) -> schemas.JobPublic:
    if q.cancel(job_id=job_id) is None:
        raise queries.NotFound(f"job {job_id} not found")
    with db.session(readonly=True) as s:
        job = queries.get_job(s, job_id)
    if job.sweep_id is not None and job.state == "cancelled":  # a trial: the sweep goes on
        sweeps.advance(db, q, job.sweep_id, owner=OWNER)
    return job


@router.get("/{job_id}/events")
def events(job_id: int, db: DatabaseDep) -> StreamingResponse:
    """Server-Sent Events: the job (as GET /v1/jobs/{id}) whenever it changes, until it ends."""
    with db.session(readonly=True) as s:
        queries.get_job(s, job_id)  # 404 before the stream starts

    def stream() -> Iterator[str]:
        last = None
        while True:
            with db.session(readonly=True) as s:
                job = queries.get_job(s, job_id)
            text = job.model_dump_json()
            if text != last:
                yield f"event: job\ndata: {text}\n\n"
                last = text
            if job.state in TERMINAL:
                yield "event: end\ndata: {}\n\n"
                return
            time.sleep(0.5)

    return StreamingResponse(stream(), media_type="text/event-stream")


@router.get("/{job_id}/artifacts/{name:path}")
def artifact(job_id: int, name: str, s: SessionDep, settings: SettingsDep) -> FileResponse:
    path = queries.artifact_path(s, job_id=job_id, name=name, root=settings.artifact_root)
    return FileResponse(path, filename=name.replace("/", "_"))
