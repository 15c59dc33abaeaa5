"""The HTTP API (FastAPI, under /v1). Routes are thin: services do the work.

Auth: with a token configured, every route but /v1/health needs ``Authorization: Bearer <token>``
(401 without it, 403 with a wrong one). Without a token the server binds 127.0.0.1 only
(``reskd serve`` refuses anything else).
"""

import os
import secrets
import time
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api import schemas, services, sweeps
from api.queue import TERMINAL, JobQueue, open_queue
from api.settings import Settings
from db.session import Database
from search.sweep import SweepSpec

bearer = HTTPBearer(auto_error=False)
OWNER = f"api:{os.getpid()}"  # holds a sweep's lock while a request advances it


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    db = Database(settings.url)
    db.migrate()
    queue = open_queue(db)
    app = FastAPI(
        title="ResKD architecture-search service",
        version="1",
        description="Submit ResKD, search, fine-tune and distillation jobs; watch them; query the "
        "Pareto front of accuracy against MFLOPs.",
    )
    app.state.settings, app.state.db, app.state.queue = settings, db, queue

    def get_session() -> Iterator[Session]:
        with db.session(readonly=True) as s:  # routes that write go through the queue
            yield s

    def authorize(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if settings.token is None:
            return
        if credentials is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "a bearer token is required",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not secrets.compare_digest(credentials.credentials, settings.token):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "wrong token")

    SessionDep = Annotated[Session, Depends(get_session)]
    QueueDep = Annotated[JobQueue, Depends(lambda: queue)]
    auth = [Depends(authorize)]

    @app.exception_handler(services.NotFound)
    def not_found(_: Request, exc: services.NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(sweeps.SweepNotFound)
    def sweep_not_found(_: Request, exc: sweeps.SweepNotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(services.Refused)
    def refused(_: Request, exc: services.Refused) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.get("/v1/health", response_model=schemas.Health, tags=["service"])
    def health(s: SessionDep) -> schemas.Health:
        return services.health(s, settings.url)

    @app.post(
        "/v1/jobs",
        response_model=schemas.JobPublic,
        status_code=201,
        dependencies=auth,
        tags=["jobs"],
        responses={422: {"description": "the config is invalid; `detail` names the field"}},
    )
    def submit(body: schemas.JobCreate, q: QueueDep) -> schemas.JobPublic:
        try:
            job_id = services.submit(q, body)
        except ValueError as exc:
            field, _, message = str(exc).partition(": ")
            raise HTTPException(
                422,
                [
                    {
                        "loc": ["body", "config", *field.split(".")],
                        "msg": message or str(exc),
                        "type": "value_error",
                    }
                ],
            ) from exc
        with db.session(readonly=True) as s:
            return services.get_job(s, job_id)

    @app.get("/v1/jobs", response_model=schemas.JobList, dependencies=auth, tags=["jobs"])
    def list_jobs(
        s: SessionDep,
        state: schemas.JobState | None = None,
        kind: schemas.JobKind | None = None,
        dataset: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> schemas.JobList:
        return services.list_jobs(
            s, state=state, kind=kind, dataset=dataset, limit=limit, offset=offset
        )

    @app.get(
        "/v1/jobs/{job_id}", response_model=schemas.JobPublic, dependencies=auth, tags=["jobs"]
    )
    def get_job(job_id: int, s: SessionDep) -> schemas.JobPublic:
        return services.get_job(s, job_id)

    @app.post(
        "/v1/jobs/{job_id}/cancel",
        response_model=schemas.JobPublic,
        dependencies=auth,
        tags=["jobs"],
    )
    def cancel(job_id: int, q: QueueDep) -> schemas.JobPublic:
        if q.cancel(job_id=job_id) is None:
            raise services.NotFound(f"job {job_id} not found")
        with db.session(readonly=True) as s:
            job = services.get_job(s, job_id)
        if job.sweep_id is not None and job.state == "cancelled":  # a trial: the sweep goes on
            sweeps.advance(db, q, job.sweep_id, owner=OWNER)
        return job

    @app.get("/v1/jobs/{job_id}/events", dependencies=auth, tags=["jobs"])
    def events(job_id: int) -> StreamingResponse:
        """Server-Sent Events: the job (as GET /v1/jobs/{id}) whenever it changes, until it ends."""
        with db.session(readonly=True) as s:
            services.get_job(s, job_id)  # 404 before the stream starts

        def stream() -> Iterator[str]:
            last = None
            while True:
                with db.session(readonly=True) as s:
                    job = services.get_job(s, job_id)
                text = job.model_dump_json()
                if text != last:
                    yield f"event: job\ndata: {text}\n\n"
                    last = text
                if job.state in TERMINAL:
                    yield "event: end\ndata: {}\n\n"
                    return
                time.sleep(0.5)

        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.get("/v1/jobs/{job_id}/artifacts/{name:path}", dependencies=auth, tags=["jobs"])
    def artifact(job_id: int, name: str, s: SessionDep) -> FileResponse:
        path = services.artifact_path(s, job_id=job_id, name=name, root=settings.artifact_root)
        return FileResponse(path, filename=name.replace("/", "_"))

    @app.get(
        "/v1/architectures",
        response_model=schemas.ArchitectureList,
        dependencies=auth,
        tags=["architectures"],
    )
    def architectures(
        s: SessionDep,
        dataset: str | None = None,
        teacher: str | None = None,
        limit: Annotated[int, Query(ge=1, le=10000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> schemas.ArchitectureList:
        return services.list_architectures(
            s, dataset=dataset, teacher=teacher, limit=limit, offset=offset
        )

    @app.get(
        "/v1/pareto",
        response_model=schemas.ParetoPublic,
        dependencies=auth,
        tags=["architectures"],
    )
    def pareto(
        s: SessionDep,
        dataset: str | None = None,
        teacher: str | None = None,
        cost: schemas.Cost = "mflops",
        include_teacher: bool = False,
    ) -> schemas.ParetoPublic:
        """The non-dominated architectures: accuracy (higher) against ``cost`` (lower)."""
        return services.pareto(
            s, dataset=dataset, teacher=teacher, cost=cost, include_teacher=include_teacher
        )

    # -- sweeps -----------------------------------------------------------------------------------

    @app.post(
        "/v1/sweeps",
        response_model=schemas.SweepPublic,
        status_code=201,
        dependencies=auth,
        tags=["sweeps"],
        responses={422: {"description": "the sweep is invalid; `detail` names the field"}},
    )
    def create_sweep(body: schemas.SweepCreate, q: QueueDep) -> schemas.SweepPublic:
        """Start an Optuna sweep: its trials are ResKD jobs on the queue (ask/tell)."""
        try:
            spec = SweepSpec.from_dict(body.model_dump())
        except ValueError as exc:
            field, _, message = str(exc).partition(": ")
            raise HTTPException(
                422,
                [
                    {
                        "loc": ["body", *field.split(".")],
                        "msg": message or str(exc),
                        "type": "value_error",
                    }
                ],
            ) from exc
        sweep_id = sweeps.create(db, q, spec, owner=OWNER)
        with db.session(readonly=True) as s:
            return sweeps.get(s, db.url, sweep_id)

    @app.get("/v1/sweeps", response_model=schemas.SweepList, dependencies=auth, tags=["sweeps"])
    def list_sweeps(
        s: SessionDep,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> schemas.SweepList:
        return schemas.SweepList(sweeps=sweeps.list_sweeps(s, limit=limit, offset=offset))

    @app.get(
        "/v1/sweeps/{sweep_id}",
        response_model=schemas.SweepPublic,
        dependencies=auth,
        tags=["sweeps"],
    )
    def get_sweep(sweep_id: int, s: SessionDep) -> schemas.SweepPublic:
        return sweeps.get(s, db.url, sweep_id)

    @app.get(
        "/v1/sweeps/{sweep_id}/trials",
        response_model=list[schemas.TrialPublic],
        dependencies=auth,
        tags=["sweeps"],
    )
    def sweep_trials(sweep_id: int, s: SessionDep) -> list[schemas.TrialPublic]:
        return sweeps.trials(s, db.url, sweep_id)

    @app.get(
        "/v1/sweeps/{sweep_id}/pareto",
        response_model=schemas.SweepPareto,
        dependencies=auth,
        tags=["sweeps"],
    )
    def sweep_pareto(sweep_id: int, s: SessionDep) -> schemas.SweepPareto:
        """The sweep's non-dominated trials (as Optuna's ``study.best_trials``)."""
        return sweeps.pareto(s, db.url, sweep_id)

    @app.post(
        "/v1/sweeps/{sweep_id}/cancel",
        response_model=schemas.SweepPublic,
        dependencies=auth,
        tags=["sweeps"],
    )
    def cancel_sweep(sweep_id: int, q: QueueDep) -> schemas.SweepPublic:
        sweeps.cancel(db, q, sweep_id, owner=OWNER)
        with db.session(readonly=True) as s:
            return sweeps.get(s, db.url, sweep_id)

    return app
