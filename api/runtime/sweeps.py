"""Sweeps on the queue: an Optuna study (in the service's own database, Optuna's tables) driven by
ask/tell, each trial a ``reskd`` job that any worker runs.

No process sits waiting on a sweep. :func:`advance` is a short step, run when the sweep is created,
by the worker that finished one of its trials, when a trial is cancelled, and by idle workers as a
safety net: it tells the study the result of every trial job that ended (a failed or cancelled
job is a FAIL trial; the sweep goes on), then asks for new trials until ``parallel`` of them are
queued or running, and finishes the sweep after its last trial. Steps of one sweep are serialised
by a leased lock in the database, so any number of workers on any number of machines may call it.

Optuna is told each trial's D_v accuracy of S_n and its cost (``search.sweep.outcome``); the test
accuracy is kept as the trial's user attribute ``accuracy``, reported beside it, never told as an
objective. A succeeded job whose result has no D_v accuracy is a FAIL trial with the reason in
its user attribute ``error``.
"""

from __future__ import annotations

import time
import warnings
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

import optuna
from optuna.trial import TrialState
from sqlalchemy import select

from api.runtime.lease import Busy, held
from api.runtime.runner import config_for_job
from api.runtime.store import TERMINAL, JobQueue
from db.models import Job, Sweep
from db.session import Database, serialize_sqlite_writers
from distill.config import parse
from search.config import RunConfig
from search.sweep import OBJECTIVE, SweepSpec, make_sampler, outcome

LOCK_LEASE_SECONDS = 120.0


class SweepNotFound(LookupError):
    pass


def study_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's storage on the service's database URL (``optuna-dashboard URL`` opens it)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if url.startswith("sqlite"):
        storage = optuna.storages.RDBStorage(
            url, engine_kwargs={"connect_args": {"timeout": 30, "check_same_thread": False}}
        )
        serialize_sqlite_writers(storage.engine)
        return storage
    return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})


def create(
    db: Database,
    queue: JobQueue,
    spec: SweepSpec,
    *,
    owner: str,
    user: str | None = None,
    priority: int = 0,
) -> int:
    """Record the sweep, create its study, queue its first trials. ``owner`` holds the sweep's
    lock while it advances; ``user`` owns the sweep and its trials, which run at ``priority``."""
    dataset = str(spec.base["dataset"])
    with db.session() as s:
        sweep = Sweep(
            name=spec.name,
            study_name=f"pending-{time.time_ns()}",
            state="running",
            spec=spec.to_dict(),
            dataset=dataset,
            trials=spec.trials,
            owner=user,
            priority=priority,
        )
        s.add(sweep)
        s.flush()
        sweep.study_name = f"reskd-sweep-{sweep.id}"
        sweep_id, study_name = sweep.id, sweep.study_name
    storage = study_storage(db.url)
    try:
        study = optuna.create_study(
            study_name=study_name, storage=storage, directions=spec.directions
        )
    except optuna.exceptions.DuplicatedStudyError:
        # a deleted sweep's study, left by a crash before it went (SQLite may hand its id out
        # again): nothing of this new sweep is in it
        optuna.delete_study(study_name=study_name, storage=storage)
        study = optuna.create_study(
            study_name=study_name, storage=storage, directions=spec.directions
        )
    with warnings.catch_warnings():  # experimental in Optuna, shown by optuna-dashboard
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([OBJECTIVE, spec.cost])
    study.set_user_attr("reskd_sweep_id", sweep_id)
    study.set_user_attr("objective", OBJECTIVE)  # D_v accuracy: what its trials are ranked on
    study.set_user_attr("spec", spec.to_dict())
    advance(db, queue, sweep_id, owner=owner)
    return sweep_id


def advance(
    db: Database, queue: JobQueue, sweep_id: int, *, owner: str, wait: float = 60.0
) -> str | None:
    """One step of the sweep (see the module's doc). Returns its state, or None when another
    process held the sweep's lock for longer than ``wait`` seconds."""
    try:
        with _sweep_lock(queue, sweep_id, owner=owner, wait=wait):
            return _advance(db, queue, sweep_id)
    except Busy:
        return None


def _sweep_lock(
    queue: JobQueue, sweep_id: int, *, owner: str, wait: float
) -> AbstractContextManager[None]:
    return held(
        queue, f"sweep-{sweep_id}", owner=owner, lease_seconds=LOCK_LEASE_SECONDS, wait=wait
    )


# A trial job as a step reads it: id, trial number, state, result, error.
TrialJob = tuple[int, int | None, str, dict[str, Any] | None, str | None]


def _advance(db: Database, queue: JobQueue, sweep_id: int) -> str:
    with db.session(readonly=True) as s:
        sweep = s.get(Sweep, sweep_id)
        if sweep is None:
            raise SweepNotFound(f"sweep {sweep_id} not found")
        if sweep.state != "running":
            return sweep.state
        spec = parse(SweepSpec, sweep.spec)  # checked whole when the sweep was created
        study_name = sweep.study_name
        runs_as = (sweep.owner, sweep.priority)
        jobs: list[TrialJob] = [
            (j.id, j.trial, j.state, j.result, j.error)
            for j in s.scalars(select(Job).where(Job.sweep_id == sweep_id).order_by(Job.id))
        ]
    storage = study_storage(db.url)
    study = optuna.load_study(
        study_name=study_name, storage=storage, sampler=make_sampler(spec, len(jobs))
    )
    _tell_ended(study, storage, spec, jobs)
    active = sum(state not in TERMINAL for _, _, state, _, _ in jobs)
    asked = len(jobs)
    while active < spec.parallel and asked < spec.trials:
        active += _ask(db, queue, study, spec, sweep_id, runs_as)
        asked += 1
    if asked >= spec.trials and active == 0:
        return _finish(db, study, sweep_id, jobs)
    return "running"


def _tell_ended(
    study: optuna.Study,
    storage: optuna.storages.RDBStorage,
    spec: SweepSpec,
    jobs: list[TrialJob],
) -> None:
    """Tell the study the outcome of every trial whose job ended since the last step."""
    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    study_id = storage.get_study_id_from_name(study.study_name)
    for _, number, state, result, _error in jobs:
        if number not in running or state not in TERMINAL:
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
        if state == "succeeded":
            try:
                measured = outcome(result or {}, spec.cost)
            except ValueError as exc:  # nothing to rank it on: a failed trial, and why
                storage.set_trial_user_attr(trial_id, "error", str(exc))
            else:
                if measured.accuracy is not None:  # reported beside, never an objective
                    storage.set_trial_user_attr(trial_id, "accuracy", measured.accuracy)
                study.tell(number, [measured.val_accuracy, measured.cost])
                continue
        study.tell(number, state=TrialState.FAIL)


def _ask(
    db: Database,
    queue: JobQueue,
    study: optuna.Study,
    spec: SweepSpec,
    sweep_id: int,
    runs_as: tuple[str | None, int] = (None, 0),
) -> int:
    """Ask the study for one trial and queue its job: 1 when it was queued, 0 when its config
    was refused (recorded as a failed trial and a failed job; the sweep goes on)."""
    trial = study.ask()
    params = spec.suggest(trial)
    config = spec.trial_config(params)
    name = f"sweep {sweep_id} trial {trial.number}"
    try:
        checked = config_for_job(parse(RunConfig, config), "reskd").to_dict()
    except ValueError as exc:  # recorded as a failed trial; the sweep goes on
        study.tell(trial, state=TrialState.FAIL)
        with db.session() as s:
            s.add(
                Job(
                    kind="reskd",
                    config=config,
                    dataset=spec.base["dataset"],
                    name=name,
                    state="failed",
                    error=f"ValueError: {exc}",
                    sweep_id=sweep_id,
                    trial=trial.number,
                    finished_at=datetime.now(UTC),
                    owner=runs_as[0],
                    priority=runs_as[1],
                )
            )
        return 0
    job_id = queue.submit(
        kind="reskd",
        config=checked,
        dataset=str(checked["dataset"]),
        name=name,
        sweep_id=sweep_id,
        trial=trial.number,
        owner=runs_as[0],
        priority=runs_as[1],
    )
    trial.set_user_attr("job_id", job_id)
    return 1


def _finish(db: Database, study: optuna.Study, sweep_id: int, jobs: list[TrialJob]) -> str:
    """The sweep after its last trial: succeeded if any trial completed, else failed."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    with db.session() as s:
        sweep = s.get(Sweep, sweep_id)
        assert sweep is not None
        if complete:
            sweep.state = "succeeded"
        else:
            sweep.state = "failed"
            errors = [e for *_, e in jobs if e]
            sweep.error = "every trial failed" + (f"; first: {errors[0]}" if errors else "")
        sweep.finished_at = datetime.now(UTC)
        return sweep.state


def advance_running(db: Database, queue: JobQueue, *, owner: str) -> None:
    """Advance every running sweep that has a trial job which ended but was not told yet, or too
    few trials in flight (what a worker killed between finishing a trial and advancing leaves)."""
    with db.session(readonly=True) as s:
        ids = s.scalars(select(Sweep.id).where(Sweep.state == "running")).all()
    for sweep_id in ids:
        advance(db, queue, sweep_id, owner=owner, wait=0.0)


def cancel(db: Database, queue: JobQueue, sweep_id: int, *, owner: str) -> str:
    """Cancel the sweep: its queued trials are cancelled, running ones stop at their next batch,
    and every trial not finished is marked failed in the study."""
    with _sweep_lock(queue, sweep_id, owner=owner, wait=60):
        with db.session() as s:
            sweep = s.get(Sweep, sweep_id)
            if sweep is None:
                raise SweepNotFound(f"sweep {sweep_id} not found")
            if sweep.state != "running":
                return sweep.state
            sweep.state = "cancelled"
            sweep.finished_at = datetime.now(UTC)
            study_name = sweep.study_name
            job_ids = s.scalars(
                select(Job.id).where(Job.sweep_id == sweep_id, Job.state.not_in(TERMINAL))
            ).all()
        for job_id in job_ids:
            queue.cancel(job_id=job_id)
        study = optuna.load_study(study_name=study_name, storage=study_storage(db.url))
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(t.number, state=TrialState.FAIL)
        return "cancelled"
