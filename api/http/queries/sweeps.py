"""Sweeps: their summaries, their trials (Optuna's view joined with their jobs) and the trials'
Pareto front.

A sweep's trials come from its Optuna study (``studies``), their jobs from the service's tables.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Integer, bindparam, func, select

from api.http import schemas
from api.http.errors import NotFound
from api.http.queries.reader import Reader, connection_of
from api.http.queries.studies import study
from db.models import Job, Sweep
from search.pareto import pareto_front
from search.sweep import outcome

SWEEP = tuple(Sweep.__table__.columns)  # a sweep's row

# The statements, made once; their parameter: ``sweep_id`` (``job_ids``: some of its jobs).
SWEEP_ID = bindparam("sweep_id", type_=Integer)
SWEEP_ROW = select(*SWEEP).where(Sweep.id == SWEEP_ID)
STATES = select(Job.state, func.count()).where(Job.sweep_id == SWEEP_ID).group_by(Job.state)
TRIAL_JOBS = select(Job.id, Job.trial, Job.state, Job.error).where(Job.sweep_id == SWEEP_ID)
RESULTS = select(Job.id, Job.result).where(Job.id.in_(bindparam("job_ids", expanding=True)))


def _sweep_row(s: Reader, sweep_id: int) -> Any:
    sweep = connection_of(s).execute(SWEEP_ROW, {"sweep_id": sweep_id}).first()
    if sweep is None:
        raise NotFound(f"sweep {sweep_id} not found")
    return sweep


def sweep_summary(s: Reader, sweep: Any) -> schemas.SweepSummary:
    """``sweep``: a row of ``SWEEP``."""
    counts = connection_of(s).execute(STATES, {"sweep_id": sweep.id}).all()
    return schemas.SweepSummary(
        id=sweep.id,
        name=sweep.name,
        study_name=sweep.study_name,
        state=sweep.state,
        dataset=sweep.dataset,
        trials=sweep.trials,
        sampler=sweep.spec.get("sampler", "nsga2"),
        cost=sweep.spec.get("cost", "mflops"),
        trial_states={str(state): int(n) for state, n in counts},
        error=sweep.error,
        created_at=sweep.created_at,
        finished_at=sweep.finished_at,
        owner=sweep.owner,
        priority=sweep.priority,
    )


def list_sweeps(s: Reader, *, limit: int, offset: int) -> list[schemas.SweepSummary]:
    s = connection_of(s)
    rows = s.execute(select(*SWEEP).order_by(Sweep.id.desc()).limit(limit).offset(offset)).all()
    return [sweep_summary(s, r) for r in rows]


def trials(s: Reader, sweep_id: int) -> list[schemas.TrialPublic]:
    """The sweep's trials: Optuna's view (params, values, state) joined with their jobs. The
    first objective is D_v accuracy; test accuracy is the trial's user attribute. A trial told
    before sweeps ranked on D_v (neither its study nor it says D_v) was told test accuracy: its
    D_v accuracy is read from its job's result where that has one."""
    return _trials(s, _sweep_row(s, sweep_id))[1]


def _trials(s: Reader, sweep: Any) -> tuple[int | None, list[schemas.TrialPublic]]:
    """The study's id (None: no study) and the sweep's trials (see :func:`trials`)."""
    s = connection_of(s)
    found = study(s, sweep.study_name)
    if found is None:
        return None, []
    study_on_dv, stored = found.on_dv, found.trials
    jobs = {j.trial: j for j in s.execute(TRIAL_JOBS, {"sweep_id": sweep.id}).all()}
    cost = str(sweep.spec.get("cost", "mflops"))
    told_test = [t.number for t in stored if t.values and "accuracy" not in t.user_attrs]
    results = {} if study_on_dv else _results(s, [jobs[n].id for n in told_test if n in jobs])
    out = []
    for t in stored:
        job = jobs.get(t.number)
        values = t.values
        val = test = None
        if values and (study_on_dv or "accuracy" in t.user_attrs):
            val, test = values[0], t.user_attrs.get("accuracy")
        elif values:
            result = results.get(job.id) if job else None
            test, val = values[0], _val_accuracy(result, cost)
        out.append(
            schemas.TrialPublic(
                number=t.number,
                state=t.state,
                params=dict(t.params),
                val_accuracy=val,
                accuracy=test,
                cost=values[1] if values else None,
                job_id=job.id if job else None,
                job_state=job.state if job else None,
                error=(job.error if job else None) or t.user_attrs.get("error"),
            )
        )
    return found.id, out


def _results(s: Reader, job_ids: list[int]) -> dict[int, Any]:
    if not job_ids:
        return {}
    return dict(s.execute(RESULTS, {"job_ids": job_ids}).tuples().all())


def _val_accuracy(result: dict[str, Any] | None, cost: str) -> float | None:
    try:
        return outcome(result or {}, cost).val_accuracy
    except ValueError:
        return None


def get_sweep(s: Reader, sweep_id: int, dashboard_url: str | None = None) -> schemas.SweepPublic:
    sweep = _sweep_row(s, sweep_id)
    study_id, trial_list = _trials(s, sweep)
    link = None
    if dashboard_url and study_id is not None:  # optuna-dashboard's address: the storage id
        link = f"{dashboard_url.rstrip('/')}/dashboard/studies/{study_id}"
    return schemas.SweepPublic(
        **sweep_summary(s, sweep).model_dump(),
        spec=sweep.spec,
        trial_list=trial_list,
        optuna_dashboard=link,
    )


def sweep_pareto(s: Reader, sweep_id: int) -> schemas.SweepPareto:
    """The non-dominated complete trials: D_v accuracy of S_n (higher) against the sweep's cost
    (lower); test accuracy is carried, never ranked on. Trials with equal objectives are all
    kept, as Optuna's ``best_trials`` keeps them; trials without a D_v accuracy are left out."""
    sweep = _sweep_row(s, sweep_id)
    done = [t for t in _trials(s, sweep)[1] if t.state == "complete"]
    ranked = [t for t in done if t.val_accuracy is not None and t.cost is not None]
    front = pareto_front(
        ranked, accuracy=lambda t: float(t.val_accuracy or 0), cost=lambda t: float(t.cost or 0)
    )
    kept = {(f.val_accuracy, f.cost) for f in front}
    front = [t for t in ranked if (t.val_accuracy, t.cost) in kept]
    front.sort(key=lambda t: (t.cost or 0, -(t.val_accuracy or 0), t.number))
    return schemas.SweepPareto(
        sweep_id=sweep_id,
        cost=sweep.spec.get("cost", "mflops"),
        considered=len(ranked),
        unranked=len(done) - len(ranked),
        front=front,
    )
