"""What the routes do, on a session: submit, list, show, cancel, artifacts, architectures, Pareto
fronts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from api import schemas
from api.jobs import parse_config
from api.queue import JobQueue
from db.models import Architecture, Artifact, Job
from search.pareto import pareto_front


class NotFound(LookupError):
    pass


class Refused(ValueError):
    pass


def submit(queue: JobQueue, body: schemas.JobCreate) -> int:
    config = parse_config(body.kind, body.config)  # ValueError names the field
    return queue.submit(
        kind=body.kind, config=config.to_dict(), dataset=config.dataset, name=body.name
    )


def list_jobs(
    s: Session, *, state: str | None, kind: str | None, dataset: str | None, limit: int, offset: int
) -> schemas.JobList:
    query = select(Job)
    if state:
        query = query.where(Job.state == state)
    if kind:
        query = query.where(Job.kind == kind)
    if dataset:
        query = query.where(Job.dataset == dataset)
    total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
    jobs = s.scalars(query.order_by(Job.id.desc()).limit(limit).offset(offset)).all()
    return schemas.JobList(
        jobs=[schemas.JobSummary.model_validate(j) for j in jobs], total=int(total)
    )


def get_job(s: Session, job_id: int) -> schemas.JobPublic:
    job = s.scalar(
        select(Job)
        .where(Job.id == job_id)
        .options(selectinload(Job.stages), selectinload(Job.artifacts))
    )
    if job is None:
        raise NotFound(f"job {job_id} not found")
    stages = [schemas.StagePublic.model_validate(st) for st in job.stages]
    current = next((st for st in reversed(stages) if st.state == "running"), None)
    shown = current or (stages[-1] if stages else None)
    progress = schemas.Progress(stages_done=sum(st.state == "succeeded" for st in stages))
    if shown is not None:
        p = shown.progress
        progress = schemas.Progress(
            stage=shown.name,
            epoch=p.get("epoch"),
            epochs=p.get("epochs"),
            loss=p.get("loss"),
            accuracy=p.get("accuracy"),
            eta_seconds=p.get("eta_seconds"),
            stages_done=progress.stages_done,
        )
    return schemas.JobPublic(
        **schemas.JobSummary.model_validate(job).model_dump(),
        config=job.config,
        progress=progress,
        stages=stages,
        metrics=list((job.result or {}).get("rows", [])),
        artifacts=[
            schemas.ArtifactPublic(
                id=a.id,
                name=a.name,
                kind=a.kind,
                size=a.size,
                url=f"/v1/jobs/{job.id}/artifacts/{a.name}",
            )
            for a in job.artifacts
        ],
    )


def artifact_path(s: Session, *, job_id: int, name: str, root: Path) -> Path:
    """The file of a job's artifact; nothing outside the artifact root is ever reachable."""
    if ".." in Path(name).parts or name.startswith(("/", "\\")):
        raise Refused("name: an artifact name, not a path outside the artifact root")
    if s.get(Job, job_id) is None:
        raise NotFound(f"job {job_id} not found")
    artifact = s.scalar(select(Artifact).where(Artifact.job_id == job_id, Artifact.name == name))
    if artifact is None:
        raise NotFound(f"job {job_id} has no artifact {name!r}")
    base = root.resolve()
    path = (base / artifact.path).resolve()
    if not path.is_relative_to(base):
        raise Refused("name: the artifact lies outside the artifact root")
    if not path.is_file():
        raise NotFound(f"artifact {name!r} of job {job_id} is no longer on disk")
    return path


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


def pareto(
    s: Session,
    *,
    dataset: str | None,
    teacher: str | None,
    cost: schemas.Cost,
    include_teacher: bool,
) -> schemas.ParetoPublic:
    """Reads only (id, accuracy, cost) of every candidate, then the front's full rows."""
    column = getattr(Architecture, cost)
    query = _filtered(dataset, teacher, include_teacher).with_only_columns(
        Architecture.id, Architecture.accuracy, column
    )
    points = s.execute(query).all()
    front = pareto_front(points, accuracy=lambda p: p[1], cost=lambda p: p[2])
    ids = [p[0] for p in front]
    rows = {r.id: r for r in s.scalars(select(Architecture).where(Architecture.id.in_(ids)))}
    return schemas.ParetoPublic(
        dataset=dataset,
        teacher=teacher,
        cost=cost,
        considered=len(points),
        front=[schemas.ArchitecturePublic.model_validate(rows[i]) for i in ids],
    )


def health(s: Session, url: str) -> schemas.Health:
    from importlib.metadata import version

    counts = dict(s.execute(select(Job.state, func.count()).group_by(Job.state)).all())
    return schemas.Health(
        status="ok",
        database=url.split(":", 1)[0],
        queued=int(counts.get("queued", 0)),
        running=int(counts.get("running", 0)),
        version=version("reskd"),
    )
