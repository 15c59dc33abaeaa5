"""/v1/sweeps: Optuna sweeps whose trials are ResKD jobs on the queue (create, list, show,
cancel, delete)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import TypeAdapter

from api.http import schemas
from api.http.access import access, sweep_owner
from api.http.deps import (
    AUTH,
    JSON,
    OWNER,
    DatabaseDep,
    Offset,
    PrincipalDep,
    QueueDep,
    SessionDep,
    SettingsDep,
    SharedReadsDep,
    SweepId,
    responses,
    shared_json,
)
from api.http.queries import sweeps as queries
from api.http.removals import answered
from api.runtime import retention, sweeps
from api.runtime.accounts import record
from api.runtime.limits import check_size
from api.runtime.retention import Removed
from distill.config import ConfigError
from search.config import RunConfig

router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"], dependencies=AUTH)
TRIALS = TypeAdapter(list[schemas.TrialPublic])


@router.post(
    "",
    response_model=schemas.SweepPublic,
    status_code=201,
    responses=responses(400, 413, 422),
    **access("write"),
)
def create_sweep(
    body: schemas.SweepCreate,
    q: QueueDep,
    db: DatabaseDep,
    settings: SettingsDep,
    who: PrincipalDep,
) -> schemas.SweepPublic:
    """Start an Optuna sweep: its trials are ResKD jobs on the queue (ask/tell)."""
    body.check()  # a ConfigError is a 422 (see main.py)
    try:  # the trials' networks are the base's (the space tunes KD and budgets)
        check_size(
            RunConfig.from_dict(body.base),
            max_params=settings.max_job_params,
            max_mflops=settings.max_job_mflops,
        )
    except ConfigError as exc:
        raise exc.within("base") from None
    sweep_id = sweeps.create(db, q, body.spec(), owner=OWNER, user=who.name, priority=body.priority)
    with db.session() as s:
        record(s, who, "sweep.submit", f"sweep {sweep_id}", trials=body.trials)
    with db.session(readonly=True) as s:
        return queries.get_sweep(s, sweep_id)


@router.get("", response_model=schemas.SweepList, responses=responses(422), **access("read"))
def list_sweeps(
    s: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Offset = 0,
) -> schemas.SweepList:
    return schemas.SweepList(sweeps=queries.list_sweeps(s, limit=limit, offset=offset))


# A sweep and its trials are read on the event loop, through its own connection
# (``Database.loop_read``): a few short statements, without a hop to the thread pool and back;
# identical reads that wait at the same moment share one (``SharedReads``).


@router.get(
    "/{sweep_id}",
    response_model=schemas.SweepPublic,
    responses=responses(404, 422),
    **access("read"),
)
async def get_sweep(
    sweep_id: SweepId,
    db: DatabaseDep,
    settings: SettingsDep,
    shared: SharedReadsDep,
    who: PrincipalDep,
) -> Response:
    dashboard = settings.optuna_dashboard_url

    def read() -> schemas.SweepPublic:
        return db.loop_read(lambda c: queries.get_sweep(c, sweep_id, dashboard))

    return await shared_json(shared, ("sweep", who.name, sweep_id), read)


@router.get(
    "/{sweep_id}/trials",
    response_model=list[schemas.TrialPublic],
    responses=responses(404, 422),
    **access("read"),
)
async def sweep_trials(
    sweep_id: SweepId, db: DatabaseDep, shared: SharedReadsDep, who: PrincipalDep
) -> Response:
    def read() -> bytes:
        return TRIALS.dump_json(db.loop_read(lambda c: queries.trials(c, sweep_id)))

    body = await shared.read(("trials", who.name, sweep_id), read)
    return Response(body, media_type=JSON)


@router.get(
    "/{sweep_id}/pareto",
    response_model=schemas.SweepPareto,
    responses=responses(404, 422),
    **access("read"),
)
def sweep_pareto(sweep_id: SweepId, s: SessionDep) -> schemas.SweepPareto:
    """The sweep's non-dominated trials (as Optuna's ``study.best_trials``)."""
    return queries.sweep_pareto(s, sweep_id)


@router.post(
    "/{sweep_id}/cancel",
    response_model=schemas.SweepPublic,
    responses=responses(404, 422),
    **access("owner", sweep_owner),
)
def cancel_sweep(
    sweep_id: SweepId, q: QueueDep, db: DatabaseDep, who: PrincipalDep
) -> schemas.SweepPublic:
    sweeps.cancel(db, q, sweep_id, owner=OWNER)
    with db.session() as s:
        record(s, who, "sweep.cancel", f"sweep {sweep_id}")
    with db.session(readonly=True) as s:
        return queries.get_sweep(s, sweep_id)


@router.delete(
    "/{sweep_id}",
    response_model=Removed,
    responses=responses(404, 409, 422),
    **access("owner", sweep_owner),
)
def delete_sweep(
    sweep_id: SweepId, db: DatabaseDep, settings: SettingsDep, who: PrincipalDep
) -> Removed:
    """Delete an ended sweep: each of its trials as a job is deleted, and its Optuna study. A
    running sweep, or one with a trial queued or running, is a 409: cancel it first."""
    with answered():
        return retention.delete_sweep(settings, db, sweep_id=sweep_id, who=who)
