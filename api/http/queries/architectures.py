"""Stored architectures: listed, as columns for a chart, grouped by (dataset, teacher), and the
Pareto front of a group (read from the stored fronts, ``api.runtime.fronts``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from api.http import schemas
from api.runtime import fronts
from db.models import Architecture


def _filtered(dataset: str | None, teacher: str | None, include_teacher: bool) -> Any:
    query = select(Architecture)
    if dataset:
        query = query.where(Architecture.dataset == dataset)
    if teacher:
        query = query.where(Architecture.teacher == teacher)
    if not include_teacher:
        query = query.where(Architecture.stage != "T")
    return query


def list_architectures(
    s: Session, *, dataset: str | None, teacher: str | None, limit: int, offset: int
) -> schemas.ArchitectureList:
    query = _filtered(dataset, teacher, include_teacher=True)
    total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = s.scalars(query.order_by(Architecture.id).limit(limit).offset(offset)).all()
    return schemas.ArchitectureList(
        architectures=[schemas.ArchitecturePublic.model_validate(r) for r in rows],
        total=int(total),
    )


def architecture_points(
    s: Session, *, dataset: str | None, teacher: str | None, cost: schemas.Cost, limit: int
) -> schemas.ArchitecturePoints:
    column = getattr(Architecture, cost)
    query = _filtered(dataset, teacher, include_teacher=False).with_only_columns(
        Architecture.id,
        Architecture.job_id,
        Architecture.stage,
        Architecture.arch,
        Architecture.val_accuracy,
        Architecture.accuracy,
        column,
    )
    rows = s.execute(query.order_by(Architecture.id).limit(limit)).all()
    ids, jobs, stages, archs, vals, accs, costs = (
        (list(c) for c in zip(*rows, strict=True)) if rows else ([], [], [], [], [], [], [])
    )
    return schemas.ArchitecturePoints(
        total=len(rows),
        id=ids,
        job_id=jobs,
        stage=stages,
        arch=archs,
        val_accuracy=vals,
        accuracy=accs,
        cost=[float(c) for c in costs],
    )


def architecture_groups(s: Session) -> schemas.ArchitectureGroups:
    """Every (dataset, teacher identity) with stored architectures, newest first (by its newest
    row with a D_v accuracy, then its newest row), and the default a view shows: the group of
    the latest job that stored architectures with a D_v accuracy (a person who just ran a job
    sees it), else the newest group. Accuracies of different groups are never mixed."""
    ranked_id = case((Architecture.val_accuracy.is_not(None), Architecture.id))
    rows = sorted(
        s.execute(
            select(
                Architecture.dataset,
                Architecture.teacher,
                func.count(),
                func.count(Architecture.val_accuracy),
                func.max(Architecture.job_id),
                func.max(ranked_id),
                func.max(Architecture.id),
            ).group_by(Architecture.dataset, Architecture.teacher)
        ).all(),
        key=lambda r: (r[5] is not None, r[5] or 0, r[6]),
        reverse=True,
    )
    groups = [
        schemas.ArchitectureGroup(
            dataset=d, teacher=t, architectures=int(n), ranked=int(ranked), latest_job_id=job
        )
        for d, t, n, ranked, job, _, _ in rows
    ]
    return schemas.ArchitectureGroups(groups=groups, default=groups[0] if groups else None)


def pareto(
    conn: Any,
    *,
    dataset: str | None,
    teacher: str | None,
    cost: schemas.Cost,
    include_teacher: bool,
) -> schemas.ParetoPublic:
    """The front of D_v accuracy against ``cost`` (test accuracy carried beside): reads the
    stored fronts of the matching (dataset, teacher identity) groups and their counts
    (``api.runtime.fronts``), not every row: its cost does not grow with the archive."""
    rows, considered = fronts.front_rows(
        conn, dataset=dataset, teacher=teacher, cost=cost, include_teacher=include_teacher
    )
    return schemas.ParetoPublic(
        dataset=dataset,
        teacher=teacher,
        cost=cost,
        considered=considered,
        front=[schemas.ArchitecturePublic.model_validate(r._mapping) for r in rows],
    )
