"""Sweeps: their summaries, their trials (Optuna's view joined with their jobs) and the trials'
Pareto front."""

from __future__ import annotations

import optuna
from sqlalchemy import select
from sqlalchemy.orm import Session, defer

from api.http import schemas
from api.http.errors import NotFound
from api.runtime.sweeps import study_storage
from db.models import Job, Sweep
from search.pareto import pareto_front
from search.sweep import OBJECTIVE, outcome


def _sweep_row(s: Session, sweep_id: int) -> Sweep:
    sweep = s.get(Sweep, sweep_id)
    if sweep is None:
        raise NotFound(f"sweep {sweep_id} not found")
    return sweep


def sweep_summary(s: Session, sweep: Sweep) -> schemas.SweepSummary:
    counts: dict[str, int] = {}
    for state in s.scalars(select(Job.state).where(Job.sweep_id == sweep.id)):
        counts[state] = counts.get(state, 0) + 1
    return schemas.SweepSummary(
        id=sweep.id,
        name=sweep.name,
        study_name=sweep.study_name,
        state=sweep.state,
        dataset=sweep.dataset,
        trials=sweep.trials,
        sampler=sweep.spec.get("sampler", "nsga2"),
        cost=sweep.spec.get("cost", "mflops"),
        trial_states=counts,
        error=sweep.error,
        created_at=sweep.created_at,
        finished_at=sweep.finished_at,
        owner=sweep.owner,
        priority=sweep.priority,
    )


def list_sweeps(s: Session, *, limit: int, offset: int) -> list[schemas.SweepSummary]:
    rows = s.scalars(select(Sweep).order_by(Sweep.id.desc()).limit(limit).offset(offset)).all()
    return [sweep_summary(s, r) for r in rows]


def trials(s: Session, db_url: str, sweep_id: int) -> list[schemas.TrialPublic]:
    """The sweep's trials: Optuna's view (params, values, state) joined with their jobs. The
    first objective is D_v accuracy; test accuracy is the trial's user attribute. A trial told
    before sweeps ranked on D_v (neither its study nor it says D_v) was told test accuracy: its
    D_v accuracy is read from its job's result where that has one."""
    sweep = _sweep_row(s, sweep_id)
    trial_jobs = (
        select(Job).where(Job.sweep_id == sweep_id).options(defer(Job.config, raiseload=True))
    )
    jobs = {j.trial: j for j in s.scalars(trial_jobs)}  # their configs are not shown
    try:
        study = optuna.load_study(study_name=sweep.study_name, storage=study_storage(db_url))
    except KeyError:
        return []
    study_on_dv = study.user_attrs.get("objective") == OBJECTIVE
    cost = str(sweep.spec.get("cost", "mflops"))
    out = []
    for t in study.get_trials(deepcopy=False):
        job = jobs.get(t.number)
        values = list(t.values) if t.values is not None else None
        val = test = None
        if values and (study_on_dv or "accuracy" in t.user_attrs):
            val, test = values[0], t.user_attrs.get("accuracy")
        elif values:
            test, val = values[0], _val_accuracy(job, cost)
        out.append(
            schemas.TrialPublic(
                number=t.number,
                state=t.state.name.lower(),
                params=dict(t.params),
                val_accuracy=val,
                accuracy=test,
                cost=values[1] if values else None,
                job_id=job.id if job else None,
                job_state=job.state if job else None,
                error=(job.error if job else None) or t.user_attrs.get("error"),
            )
        )
    return out


def _val_accuracy(job: Job | None, cost: str) -> float | None:
    try:
        return outcome((job.result if job else None) or {}, cost).val_accuracy
    except ValueError:
        return None


def get_sweep(
    s: Session, db_url: str, sweep_id: int, dashboard_url: str | None = None
) -> schemas.SweepPublic:
    sweep = _sweep_row(s, sweep_id)
    link = None
    if dashboard_url:  # optuna-dashboard's address of a study is its storage id
        try:
            study_id = study_storage(db_url).get_study_id_from_name(sweep.study_name)
            link = f"{dashboard_url.rstrip('/')}/dashboard/studies/{study_id}"
        except KeyError:
            link = None
    return schemas.SweepPublic(
        **sweep_summary(s, sweep).model_dump(),
        spec=sweep.spec,
        trial_list=trials(s, db_url, sweep_id),
        optuna_dashboard=link,
    )


def sweep_pareto(s: Session, db_url: str, sweep_id: int) -> schemas.SweepPareto:
    """The non-dominated complete trials: D_v accuracy of S_n (higher) against the sweep's cost
    (lower); test accuracy is carried, never ranked on. Trials with equal objectives are all
    kept, as Optuna's ``best_trials`` keeps them; trials without a D_v accuracy are left out."""
    sweep = _sweep_row(s, sweep_id)
    done = [t for t in trials(s, db_url, sweep_id) if t.state == "complete"]
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
