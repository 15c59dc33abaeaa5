"""Jobs: submit, list, show (with their progress, best student and searches), metrics and
artifact files."""

from __future__ import annotations

import json
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Integer, Select, Text, bindparam, cast, func, select
from sqlalchemy.orm import Session

from api.http import schemas
from api.http.errors import NotFound, Refused
from api.http.paths import confine
from api.http.queries.reader import Reader, connection_of
from api.http.queries.sizes import check_size_once
from api.runtime.accounts import Principal, record
from api.runtime.fairshare import UNLIMITED, Policy, why_held
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
    check_size_once(config, settings)
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


# What the reads select: a job's summary (its row in a listing) and a stage as a job shows it.
SUMMARY = (Job.id, Job.kind, Job.name, Job.state, Job.dataset, Job.attempts, Job.created_at,
           Job.started_at, Job.finished_at, Job.error, Job.sweep_id, Job.trial, Job.owner,
           Job.priority)  # fmt: skip
STAGE = (Stage.position, Stage.kind, Stage.key, Stage.name, Stage.state, Stage.reused,
         Stage.resumed_from_epoch, Stage.progress, Stage.started_at, Stage.finished_at,
         Stage.error)  # fmt: skip
EPOCH = (EpochMetric.epoch, EpochMetric.loss, EpochMetric.train_accuracy,
         EpochMetric.eval_accuracy, EpochMetric.lr, EpochMetric.seconds,
         EpochMetric.expected_mflops)  # fmt: skip

# The reads' statements, made once (building one costs more than SQLite takes to run it), their
# values parameters: ``job_id``.
JOB_ID = bindparam("job_id", type_=Integer)
JOB = select(*SUMMARY, Job.config, Job.result).where(Job.id == JOB_ID)
EXISTS = select(Job.id).where(Job.id == JOB_ID)
STAGES = select(*STAGE).where(Stage.job_id == JOB_ID).order_by(Stage.position)
ARTIFACTS = (
    select(Artifact.id, Artifact.name, Artifact.kind, Artifact.size)
    .where(Artifact.job_id == JOB_ID)
    .order_by(Artifact.id)
)
EPOCHS = (
    select(Stage.position, Stage.kind, Stage.key, Stage.name, EpochMetric.phase, *EPOCH)
    .join(EpochMetric, EpochMetric.stage_id == Stage.id)
    .where(Stage.job_id == JOB_ID)
    .order_by(Stage.position, EpochMetric.id)
)
SUMMARY_KEYS = tuple(c.key for c in SUMMARY)
EPOCH_KEYS = tuple(c.key for c in EPOCH)


def list_jobs(
    s: Reader,
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
    s = connection_of(s)
    asked = {"state": state, "kind": kind, "dataset": dataset, "owner": owner}
    asked = {name: value for name, value in asked.items() if value}
    count, page = _listing(tuple(asked))
    total = s.execute(count, asked).scalar() or 0
    jobs = s.execute(page, asked | {"limit": limit, "offset": offset}).all()
    shown = _shown_stages(s, [j.id for j in jobs])
    held = why_held(s, jobs=jobs, policy=policy, now=time.time() if now is None else now)
    return schemas.JobList.model_validate(
        {
            "jobs": [
                _summary(j, held)
                | {"progress": _progress(*shown.get(j.id, (None, "{}", 0))), "best": _row_best(j)}
                for j in jobs
            ],
            "total": int(total),
        }
    )


@lru_cache(maxsize=16)
def _listing(filters: tuple[str, ...]) -> tuple[Select[int], Select[*tuple[Any, ...]]]:
    """The jobs list's count and page for ``filters`` (columns, each equal to the parameter of
    its name), the page's ``limit`` and ``offset`` parameters: made once per kind of list.
    A row shows no config (kilobytes each, a page a thousand rows), and of the result only what
    its best student is chosen from: the report's ``deploy``, and its rows as text (read only
    without a deploy)."""
    where = [getattr(Job, name) == bindparam(name) for name in filters]
    count = select(func.count()).select_from(Job).where(*where)
    best = (Job.result["deploy"].label("deploy"), cast(Job.result["rows"], Text).label("rows"))
    page = (
        select(*SUMMARY, *best)
        .where(*where)
        .order_by(Job.id.desc())
        .limit(bindparam("limit", type_=Integer))
        .offset(bindparam("offset", type_=Integer))
    )
    return count, page


def _row_best(job: Any) -> dict[str, Any] | None:
    """:func:`_best` of a page's row (its result's deploy and rows; JSON null where either is
    missing)."""
    rows = None if isinstance(job.deploy, dict) or job.rows in (None, "null") else job.rows
    rows = None if rows is None else json.loads(rows)
    return _best({"deploy": job.deploy} | ({"rows": rows} if rows is not None else {}))


# The stages of a page's jobs, their progress as text (only the stage a job shows is parsed).
SHOWN = (
    select(Stage.job_id, Stage.name, Stage.state, cast(Stage.progress, Text).label("progress"))
    .where(Stage.job_id.in_(bindparam("ids", expanding=True)))
    .order_by(Stage.job_id, Stage.position)
)


def _shown_stages(s: Reader, job_ids: list[int]) -> dict[int, tuple[str | None, str, int]]:
    """Per job: the stage its progress shows (its last running one, else its last), as its name
    and progress (JSON), and how many of its stages succeeded."""
    if not job_ids:
        return {}
    shown: dict[int, tuple[Any, int]] = {}
    for row in s.execute(SHOWN, {"ids": job_ids}):
        # in position order: a later running stage, or any later one, replaces the one shown
        current, done = shown.get(row.job_id, (None, 0))
        if current is None or row.state == "running" or current.state != "running":
            current = row
        shown[row.job_id] = (current, done + (row.state == "succeeded"))
    return {i: (row.name, row.progress, done) for i, (row, done) in shown.items()}


def _best(result: dict[str, Any] | None) -> dict[str, Any] | None:
    """The job's best student on D_v: the report's ``deploy`` (the S_k the export ships), else
    its student row most accurate on D_v (of equal ones the first: fewer networks). Rows without
    a D_v accuracy (results stored before it was recorded) are never chosen on test accuracy:
    such a job has no best."""
    result = result or {}
    deploy = result.get("deploy")
    if isinstance(deploy, dict):
        return {
            "model": str(deploy["model"]),
            "val_accuracy": deploy.get("val_accuracy"),
            "accuracy": deploy["accuracy"],
            "mflops": deploy["adaptive_mflops"],
            "deployed": True,
        }
    rows = [
        r
        for r in result.get("rows", [])
        if r.get("role") not in ("teacher", "baseline") and r.get("val_accuracy") is not None
    ]
    if not rows:
        return None
    row = max(rows, key=lambda r: float(r["val_accuracy"]))  # ties: the first (max keeps it)
    adaptive = row.get("role") == "adaptive"
    return {
        "model": row["model"],
        "val_accuracy": row["val_accuracy"],
        "accuracy": row["accuracy"],
        "mflops": row["adaptive_mflops"] if adaptive else row["mflops"],
    }


def _progress(stage: str | None, progress: str | dict[str, Any], done: int) -> dict[str, Any]:
    """The progress of the stage shown (``stage``: its name; None: the job has none yet) from
    its ``progress`` (as stored, or its JSON); ``done``: the job's stages that succeeded."""
    if stage is None:
        return {"stages_done": done}
    p = json.loads(progress) if isinstance(progress, str) else progress
    fields = ("phase", "epoch", "epochs", "batch", "batches", "loss", "accuracy", "eta_seconds",
              "rate", "unit")  # fmt: skip
    return {"stage": stage, **{f: p.get(f) for f in fields}, "stages_done": done}


def job_exists(s: Reader, job_id: int) -> None:
    if connection_of(s).execute(EXISTS, {"job_id": job_id}).first() is None:
        raise NotFound(f"job {job_id} not found")


def _summary(job: Any, held: dict[int, str]) -> dict[str, Any]:
    """The job's summary fields (a row led by ``SUMMARY``), with why it waits (``held``:
    :func:`why_held`'s answer)."""
    return dict(zip(SUMMARY_KEYS, job, strict=False)) | {"held": held.get(job.id)}


def get_job(
    s: Reader, job_id: int, *, policy: Policy = UNLIMITED, now: float | None = None
) -> schemas.JobPublic:
    """The job with its stages, results and artifacts; queued, it says why it waits (as
    :func:`list_jobs`)."""
    s, asked = connection_of(s), {"job_id": job_id}
    job = s.execute(JOB, asked).first()
    if job is None:
        raise NotFound(f"job {job_id} not found")
    stages = s.execute(STAGES, asked).all()
    artifacts = s.execute(ARTIFACTS, asked).all()
    held = why_held(s, jobs=[job], policy=policy, now=time.time() if now is None else now)
    result = job.result or {}
    running = [st for st in stages if st.state == "running"]
    shown = running[-1] if running else (stages[-1] if stages else None)
    name, progress = (shown.name, shown.progress) if shown else (None, {})
    return schemas.JobPublic.model_validate(
        _summary(job, held)
        | {
            "config": job.config,
            "progress": _progress(name, progress, sum(st.state == "succeeded" for st in stages)),
            "best": _best(job.result),
            "stages": [st._asdict() for st in stages],
            "metrics": list(result.get("rows", [])),
            "searches": _searches(job_id, result, {a.name for a in artifacts}),
            "teacher": result.get("teacher"),
            "warnings": list(result.get("warnings") or []),
            "stop_reason": result.get("stop_reason"),
            "artifacts": [
                a._asdict() | {"url": f"/v1/jobs/{job_id}/artifacts/{a.name}"} for a in artifacts
            ],
        }
    )


def job_metrics(s: Reader, job_id: int) -> schemas.JobMetrics:
    """Every stored epoch of the job, per stage (attempts of one stage key merged in order)."""
    s = connection_of(s)
    job_exists(s, job_id)
    stages: dict[tuple[str, str, str | None], dict[str, Any]] = {}
    for row in s.execute(EPOCHS, {"job_id": job_id}):
        position, kind, key, name, phase, *epoch = row
        stage = stages.setdefault(
            (kind, key, phase),
            {"position": position, "kind": kind, "key": key, "name": name, "phase": phase,
             "epochs": {}},
        )  # fmt: skip
        epochs = stage["epochs"]
        epochs.pop(row.epoch, None)  # an epoch trained again: the later one, at the end
        epochs[row.epoch] = dict(zip(EPOCH_KEYS, epoch, strict=True))
    return schemas.JobMetrics.model_validate(
        {
            "job_id": job_id,
            "stages": [st | {"epochs": list(st["epochs"].values())} for st in stages.values()],
        }
    )


def _searches(job_id: int, result: dict[str, Any], names: set[str]) -> list[dict[str, Any]]:
    out = []
    for f in searches_of(result):
        cells = f"{f.get('network')}-cells.png"
        out.append(
            {
                "network": f.get("network", "?"),
                "strategy": f.get("strategy"),
                "genotype": f["genotype"],
                "channels": f["channels"],
                "layers": f.get("layers"),
                "mflops": f["mflops"],
                "budget_mflops": f.get("budget_mflops"),
                "repair": f.get("repair"),
                "derived_from": f.get("derived_from"),
                "cells": f"/v1/jobs/{job_id}/artifacts/{cells}" if cells in names else None,
            }
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
