"""Jobs: submit, list, show (with their progress, best student and searches), metrics and
artifact files."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, defer, selectinload

from api.http import schemas
from api.http.errors import NotFound, Refused
from api.http.paths import confine
from api.runtime.accounts import Principal, record
from api.runtime.fairshare import UNLIMITED, Policy, why_held
from api.runtime.limits import check_size
from api.runtime.runner import config_for_job, searches_of
from api.runtime.settings import Settings
from api.runtime.store import JobQueue
from db.models import Artifact, EpochMetric, Job, Stage
from db.session import Database


def submit(
    queue: JobQueue, body: schemas.JobCreate, settings: Settings, db: Database, who: Principal
) -> int:
    """Queue the job as ``who``'s, and say so in the audit log."""
    config = config_for_job(confine(body.config, settings), body.kind)  # ConfigError: 422
    check_size(config, max_params=settings.max_job_params, max_mflops=settings.max_job_mflops)
    job_id = queue.submit(
        kind=body.kind,
        config=config.to_dict(),
        dataset=config.dataset,
        name=body.name,
        owner=who.name,
        priority=body.priority,
    )
    with db.session() as s:
        record(s, who, "job.submit", f"job {job_id}", kind=body.kind, priority=body.priority)
    return job_id


def list_jobs(
    s: Session,
    *,
    state: str | None,
    kind: str | None,
    dataset: str | None,
    limit: int,
    offset: int,
    owner: str | None = None,
    policy: Policy = UNLIMITED,
    now: float | None = None,
) -> schemas.JobList:
    """A page of jobs, newest first; a queued one says why it waits under ``policy`` (the
    service's quotas) at ``now`` (the queue's clock; default: ``time.time()``)."""
    asked = {Job.state: state, Job.kind: kind, Job.dataset: dataset, Job.owner: owner}
    where = [column == value for column, value in asked.items() if value]
    total = s.scalar(select(func.count(Job.id)).where(*where)) or 0
    page = select(Job).where(*where).order_by(Job.id.desc()).limit(limit).offset(offset)
    # a row shows no config: never read one (a config is kilobytes, a page a thousand rows)
    jobs = s.scalars(
        page.options(defer(Job.config, raiseload=True), selectinload(Job.stages))
    ).all()
    held = why_held(s, jobs=jobs, policy=policy, now=time.time() if now is None else now)
    return schemas.JobList(
        jobs=[
            schemas.JobRow(
                **_summary(j, held),
                progress=_progress([schemas.StagePublic.model_validate(st) for st in j.stages]),
                best=_best(j),
            )
            for j in jobs
        ],
        total=int(total),
    )


def _best(job: Job) -> schemas.Best | None:
    """The job's best student on D_v: the report's ``deploy`` (the S_k the export ships), else
    its student row most accurate on D_v (of equal ones the first: fewer networks). Rows without
    a D_v accuracy (results stored before it was recorded) are never chosen on test accuracy:
    such a job has no best."""
    result = job.result or {}
    deploy = result.get("deploy")
    if isinstance(deploy, dict):
        return schemas.Best(
            model=str(deploy["model"]),
            val_accuracy=deploy.get("val_accuracy"),
            accuracy=deploy["accuracy"],
            mflops=deploy["adaptive_mflops"],
            deployed=True,
        )
    rows = [
        r
        for r in result.get("rows", [])
        if r.get("role") not in ("teacher", "baseline") and r.get("val_accuracy") is not None
    ]
    if not rows:
        return None
    row = max(rows, key=lambda r: float(r["val_accuracy"]))  # ties: the first (max keeps it)
    adaptive = row.get("role") == "adaptive"
    return schemas.Best(
        model=row["model"],
        val_accuracy=row["val_accuracy"],
        accuracy=row["accuracy"],
        mflops=row["adaptive_mflops"] if adaptive else row["mflops"],
    )


def _progress(stages: list[schemas.StagePublic]) -> schemas.Progress:
    """The running stage's progress (the last stage's once none runs)."""
    current = next((st for st in reversed(stages) if st.state == "running"), None)
    shown = current or (stages[-1] if stages else None)
    done = sum(st.state == "succeeded" for st in stages)
    if shown is None:
        return schemas.Progress(stages_done=done)
    p = shown.progress
    return schemas.Progress(
        stage=shown.name,
        phase=p.get("phase"),
        epoch=p.get("epoch"),
        epochs=p.get("epochs"),
        batch=p.get("batch"),
        batches=p.get("batches"),
        loss=p.get("loss"),
        accuracy=p.get("accuracy"),
        eta_seconds=p.get("eta_seconds"),
        rate=p.get("rate"),
        unit=p.get("unit"),
        stages_done=done,
    )


def job_exists(s: Session, job_id: int) -> None:
    if s.scalar(select(Job.id).where(Job.id == job_id)) is None:
        raise NotFound(f"job {job_id} not found")


def _summary(job: Job, held: dict[int, str]) -> dict[str, Any]:
    """The job's summary fields, with why it waits (``held``: :func:`why_held`'s answer)."""
    return schemas.JobSummary.model_validate(job).model_dump() | {"held": held.get(job.id)}


def get_job(
    s: Session, job_id: int, *, policy: Policy = UNLIMITED, now: float | None = None
) -> schemas.JobPublic:
    """The job with its stages, results and artifacts; queued, it says why it waits (as
    :func:`list_jobs`)."""
    job = s.scalar(
        select(Job)
        .where(Job.id == job_id)
        .options(selectinload(Job.stages), selectinload(Job.artifacts))
    )
    if job is None:
        raise NotFound(f"job {job_id} not found")
    stages = [schemas.StagePublic.model_validate(st) for st in job.stages]
    held = why_held(s, jobs=[job], policy=policy, now=time.time() if now is None else now)
    return schemas.JobPublic(
        **_summary(job, held),
        config=job.config,
        progress=_progress(stages),
        best=_best(job),
        stages=stages,
        metrics=list((job.result or {}).get("rows", [])),
        searches=_searches(job),
        teacher=(job.result or {}).get("teacher"),
        warnings=list((job.result or {}).get("warnings") or []),
        stop_reason=(job.result or {}).get("stop_reason"),
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


def job_metrics(s: Session, job_id: int) -> schemas.JobMetrics:
    """Every stored epoch of the job, per stage (attempts of one stage key merged in order)."""
    job_exists(s, job_id)
    rows = s.execute(
        select(Stage.position, Stage.kind, Stage.key, Stage.name, EpochMetric)
        .join(EpochMetric, EpochMetric.stage_id == Stage.id)
        .where(Stage.job_id == job_id)
        .order_by(Stage.position, EpochMetric.id)
    ).all()
    stages: dict[tuple[str, str, str | None], schemas.StageMetrics] = {}
    for position, kind, key, name, m in rows:
        stage = stages.setdefault(
            (kind, key, m.phase),
            schemas.StageMetrics(
                position=position, kind=kind, key=key, name=name, phase=m.phase, epochs=[]
            ),
        )
        epoch = schemas.EpochPublic.model_validate(m)
        stage.epochs = [e for e in stage.epochs if e.epoch != epoch.epoch] + [epoch]
    return schemas.JobMetrics(job_id=job_id, stages=list(stages.values()))


def _searches(job: Job) -> list[schemas.SearchPublic]:
    names = {a.name for a in job.artifacts}
    out = []
    for f in searches_of(job.result or {}):
        cells = f"{f.get('network')}-cells.png"
        out.append(
            schemas.SearchPublic(
                network=f.get("network", "?"),
                strategy=f.get("strategy"),
                genotype=f["genotype"],
                channels=f["channels"],
                layers=f.get("layers"),
                mflops=f["mflops"],
                budget_mflops=f.get("budget_mflops"),
                repair=f.get("repair"),
                cells=f"/v1/jobs/{job.id}/artifacts/{cells}" if cells in names else None,
            )
        )
    return out


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
