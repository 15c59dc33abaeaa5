"""Deleting what a service keeps, and collecting what nothing keeps any more.

A job's files are ``jobs/<id>/`` and the stage folders under ``stages/`` (``<kind>-<key>/``, and
``<kind>-<key>.partial/`` while one is computed), which every job whose stage has the same key
shares: a stage folder is reference-counted by the ``stages`` rows, and goes only once no
remaining job's row names its kind and key. Uploads are ``checkpoints/<name>`` and
``datasets/<name>/``, each with an ``uploads`` row.

A delete runs in two steps. One transaction deletes the rows (a job's stages, epoch metrics,
artifacts and architectures, the architectures taken off the Pareto fronts as
``SqlQueue.add_results`` takes replaced ones) and writes the audit entry; files are removed only
after it commits. A crash in between leaves files that no row names, which :func:`gc` removes;
never a row naming a missing file. A file or folder is renamed aside (``.removing-*``) before it
is removed, so no half of it is ever seen under its name; a stage folder is removed while its
stage's lock is held (the lock a worker holds to compute or reuse it) and after its rows are
looked for once more, so a job that began to reuse it meanwhile keeps it.

Running work is never deleted (:class:`InUse`): a queued or running job, a trial of a running
sweep, a running sweep or one with trials not ended, an upload that a queued or running job (or a
running sweep's base config) names.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel, Field
from sqlalchemy import CursorResult, delete, inspect, select
from sqlalchemy.orm import Session

from api.runtime import fronts
from api.runtime.accounts import Principal, record
from api.runtime.disk import (
    TEMP_PREFIXES,
    UPLOAD_KINDS,
    StageId,
    changed,
    named_uploads,
    remove_path,
    stage_folders,
    stage_of,
    touched,
    tree_bytes,
    upload_folder,
    upload_path,
)
from api.runtime.queues import open_queue
from api.runtime.settings import Settings
from api.runtime.store import TERMINAL, JobQueue
from db.models import Architecture, Artifact, EpochMetric, Job, Stage, Sweep, UploadRow
from db.session import Database

LOCKER = f"retention:{os.getpid()}"  # holds a stage's lock while its folder is removed
DAY = 86_400.0
STUDY_PREFIX = "reskd-sweep-"  # a sweep's study is named after it (``api.runtime.sweeps``)
TEMP_GRACE_SECONDS = 3600.0  # a younger ``.upload-``/``.unpack-`` may be an upload in flight


class Unknown(LookupError):
    """No such job, sweep or upload (a 404)."""


class InUse(RuntimeError):
    """Running work is, or needs, what was to be deleted (a 409); the message says which."""


class Removed(BaseModel):
    """What a delete or a collection removed (with ``dry_run``: would remove)."""

    target: str = Field(description="job 3, sweep 2, checkpoint NAME, dataset NAME or gc")
    rows: dict[str, int] = Field(default_factory=dict, description="rows deleted, per table")
    paths: list[str] = Field(
        default_factory=list, description="files and folders removed, under the artifact root"
    )
    kept: list[str] = Field(
        default_factory=list,
        description="stage folders left in place: another job uses them, or a worker holds "
        "their lock (gc removes them once neither does)",
    )
    bytes_freed: int = 0
    dry_run: bool = False


# -- deletes -------------------------------------------------------------------------------------


def delete_job(settings: Settings, db: Database, *, job_id: int, who: Principal | str) -> Removed:
    """Delete an ended job: its rows, its folder, and the stage folders no other job uses."""
    rows: Counter[str] = Counter()
    with db.session() as s:
        found = s.execute(select(Job.state, Job.sweep_id).where(Job.id == job_id)).first()
        if found is None:
            raise Unknown(f"job {job_id} not found")
        _check_ended(s, job_id, *found)
        stages = _drop_jobs(s, [job_id], rows)
        gone, kept = _unused(s, stages)
        record(s, who, "job.delete", f"job {job_id}", rows=dict(rows), stage_folders=len(gone))
    return _remove(settings, db, f"job {job_id}", rows, [settings.job_dir(job_id)], gone, kept)


def delete_sweep(
    settings: Settings, db: Database, *, sweep_id: int, who: Principal | str
) -> Removed:
    """Delete an ended sweep, each of its trials as :func:`delete_job` deletes a job, and its
    Optuna study."""
    rows: Counter[str] = Counter()
    with db.session() as s:
        sweep = s.execute(select(Sweep.state, Sweep.study_name).where(Sweep.id == sweep_id)).first()
        if sweep is None:
            raise Unknown(f"sweep {sweep_id} not found")
        if sweep.state == "running":
            raise InUse(f"sweep {sweep_id} is running: cancel it first")
        trials = s.execute(select(Job.id, Job.state).where(Job.sweep_id == sweep_id)).all()
        busy = [f"job {i} ({state})" for i, state in trials if state not in TERMINAL]
        if busy:
            raise InUse(f"sweep {sweep_id} has trials not ended ({', '.join(busy)}): cancel them")
        ids = [i for i, _ in trials]
        stages = _drop_jobs(s, ids, rows)
        for i in ids:
            record(s, who, "job.delete", f"job {i}", sweep=sweep_id)
        rows["sweeps"] += _deleted(s, delete(Sweep).where(Sweep.id == sweep_id))
        gone, kept = _unused(s, stages)
        record(s, who, "sweep.delete", f"sweep {sweep_id}", rows=dict(rows), trials=len(ids))
    _delete_study(db, sweep.study_name)
    folders = [settings.job_dir(i) for i in ids]
    return _remove(settings, db, f"sweep {sweep_id}", rows, folders, gone, kept)


def delete_upload(
    settings: Settings, db: Database, *, kind: str, name: str, who: Principal | str
) -> Removed:
    """Delete an uploaded checkpoint or dataset that no queued or running job names."""
    path = upload_path(settings, kind, name)
    if path is None or not os.path.lexists(path):
        raise Unknown(f"no {kind} {name!r} was uploaded")
    rows: Counter[str] = Counter()
    with db.session() as s:
        users = active_users(s, settings, (kind, name))
        if users:
            raise InUse(f"{kind} {name} is named by {', '.join(users)}: cancel it first")
        rows["uploads"] += _deleted(
            s, delete(UploadRow).where(UploadRow.kind == kind, UploadRow.name == name)
        )
        record(s, who, f"{kind}.delete", f"{kind} {name}")
    return _remove(settings, db, f"{kind} {name}", rows, [path], set(), set())


def active_users(s: Session, settings: Settings, upload: tuple[str, str]) -> list[str]:
    """The queued and running jobs (``job 3 (queued)``) and running sweeps that name
    ``upload`` (kind, name) in their configs."""
    jobs = s.execute(select(Job.id, Job.state, Job.config).where(Job.state.not_in(TERMINAL)))
    users = [f"job {i} ({state})" for i, state, c in jobs if upload in named_uploads(settings, c)]
    sweeps = s.execute(select(Sweep.id, Sweep.spec).where(Sweep.state == "running"))
    return users + [
        f"sweep {i} (running)"
        for i, spec in sweeps
        if upload in named_uploads(settings, (spec or {}).get("base") or {})
    ]


def _check_ended(s: Session, job_id: int, state: str, sweep_id: int | None) -> None:
    if state not in TERMINAL:
        raise InUse(f"job {job_id} is {state}: cancel it first")
    sweep_state = s.scalar(select(Sweep.state).where(Sweep.id == sweep_id)) if sweep_id else None
    if sweep_state == "running":
        raise InUse(
            f"job {job_id} is a trial of sweep {sweep_id}, which is running: cancel the sweep "
            "first (or delete the sweep with its trials once it has ended)"
        )


def _deleted(s: Session, statement: Any) -> int:
    return int(cast(CursorResult[Any], s.execute(statement)).rowcount)


def _drop_jobs(s: Session, ids: list[int], rows: Counter[str]) -> set[StageId]:
    """Delete the rows of the jobs ``ids`` (their architectures off the Pareto fronts first);
    the stages they used."""
    if not ids:
        return set()
    used = {
        (k, key) for k, key in s.execute(select(Stage.kind, Stage.key).where(Stage.job_id.in_(ids)))
    }
    architectures = s.scalars(select(Architecture.id).where(Architecture.job_id.in_(ids))).all()
    replaced = fronts.removing(s, architectures)
    for table, column in (
        (Architecture, Architecture.job_id),
        (EpochMetric, EpochMetric.job_id),
        (Artifact, Artifact.job_id),
        (Stage, Stage.job_id),
        (Job, Job.id),
    ):
        rows[table.__tablename__] += _deleted(s, delete(table).where(column.in_(ids)))
    fronts.rebuild(s, replaced)
    return used


def _unused(s: Session, stages: set[StageId]) -> tuple[set[StageId], set[StageId]]:
    """``stages`` split: those no remaining row names, and those another job still uses."""
    return stages - (used := _named(s, stages)), used


def _named(s: Session, stages: set[StageId]) -> set[StageId]:
    """Those of ``stages`` that a ``stages`` row names."""
    if not stages:
        return set()
    keys = sorted({key for _, key in stages})
    found = s.execute(select(Stage.kind, Stage.key).where(Stage.key.in_(keys)).distinct())
    return {(k, key) for k, key in found} & stages


def _delete_study(db: Database, name: str) -> None:
    """The sweep's Optuna study, once its rows are gone (a crash first leaves it to ``gc``)."""
    import optuna

    from api.runtime.sweeps import study_storage

    with suppress(KeyError):  # never created, or deleted already
        optuna.delete_study(study_name=name, storage=study_storage(db.url))


# -- files ---------------------------------------------------------------------------------------


def _remove(
    settings: Settings,
    db: Database,
    target: str,
    rows: Counter[str],
    paths: list[Path],
    stages: set[StageId],
    kept: set[StageId],
) -> Removed:
    """After the rows' transaction: remove ``paths`` and the folders of ``stages`` (each under
    its lock, if still no row names it)."""
    removed: list[str] = []
    freed = sum(remove_path(settings.artifact_root, p, removed) for p in paths)
    left = [
        f"stages/{kind}-{key}"
        for kind, key in sorted(kept)
        if any(os.path.lexists(p) for p in stage_folders(settings, (kind, key)))
    ]
    queue = open_queue(db)
    for stage in sorted(stages):
        with _stage_lock(queue, stage) as held:
            if not held or _still_named(db, stage):
                left.append(f"stages/{stage[0]}-{stage[1]}")
                continue
            freed += sum(
                remove_path(settings.artifact_root, p, removed)
                for p in stage_folders(settings, stage)
            )
    return Removed(
        target=target, rows=dict(rows), paths=removed, kept=sorted(left), bytes_freed=freed
    )


@contextmanager
def _stage_lock(queue: JobQueue, stage: StageId) -> Iterator[bool]:
    """The lock a worker holds while it computes or reuses the stage, if it is free (True)."""
    key = f"{stage[0]}-{stage[1]}"
    held = queue.lock_stage(key=key, worker=LOCKER, lease_seconds=300.0)
    try:
        yield held
    finally:
        if held:
            queue.unlock_stage(key=key, worker=LOCKER)


def _still_named(db: Database, stage: StageId) -> bool:
    with db.session(readonly=True) as s:
        return bool(_named(s, {stage}))


# -- collection ----------------------------------------------------------------------------------


def gc(
    settings: Settings,
    db: Database,
    *,
    older_than_days: float | None = None,
    dry_run: bool = False,
    who: Principal | str = "gc",
    now: float | None = None,
) -> Removed:
    """Remove what nothing references: stage folders no ``stages`` row names (unless a worker
    holds their lock), ``jobs/<id>`` folders without a job, what uploads and deletes left
    (``.upload-*`` and ``.unpack-*`` untouched for ``TEMP_GRACE_SECONDS``, ``.removing-*``),
    Optuna studies of deleted sweeps, and, with ``older_than_days``, uploads older than that
    (by their rows, else their files) that no job and no running sweep names, with their rows.
    ``dry_run``: remove nothing, list what would go. Either way one ``gc`` audit entry."""
    now = time.time() if now is None else now
    with db.session(readonly=True) as s:
        stages = _stale_stages(s, settings)
        paths = _stale_job_folders(s, settings) + _temporaries(settings, now)
        uploads = _old_uploads(s, settings, older_than_days, now)
        studies = _stale_studies(s, db)
    rows: Counter[str] = Counter()
    with db.session() as s:
        if not dry_run:
            named = _all_named(s, settings)  # a job submitted since they were read keeps them
            uploads = [u for u in uploads if u not in named]
            for kind, name in uploads:
                rows["uploads"] += _deleted(
                    s, delete(UploadRow).where(UploadRow.kind == kind, UploadRow.name == name)
                )
        record(s, who, "gc", "artifact root", dry_run=dry_run, older_than_days=older_than_days,
               stage_folders=len(stages), uploads=len(uploads))  # fmt: skip
    paths += [upload_folder(settings, kind) / name for kind, name in uploads]
    if dry_run:
        folders = [p for stage in sorted(stages) for p in stage_folders(settings, stage)]
        listed = [p for p in [*paths, *folders] if os.path.lexists(p)]
        return Removed(
            target="gc",
            rows={
                k: v for k, v in (("uploads", len(uploads)), ("optuna_studies", len(studies))) if v
            },
            paths=[p.relative_to(settings.artifact_root).as_posix() for p in listed],
            bytes_freed=sum(tree_bytes(p) for p in listed),
            dry_run=True,
        )
    for name in studies:
        _delete_study(db, name)
        rows["optuna_studies"] += 1
    return _remove(settings, db, "gc", rows, paths, stages, set())


def _stale_stages(s: Session, settings: Settings) -> set[StageId]:
    """The stages whose folders are there but no ``stages`` row names."""
    try:
        found = {st for e in os.scandir(settings.stages_dir) if (st := stage_of(e.name))}
    except OSError:  # no stage stored yet
        return set()
    named = {(k, key) for k, key in s.execute(select(Stage.kind, Stage.key).distinct())}
    return found - named


def _stale_job_folders(s: Session, settings: Settings) -> list[Path]:
    folder = settings.artifact_root / "jobs"
    try:
        names = [e.name for e in os.scandir(folder) if e.name.isdigit()]
    except OSError:
        return []
    jobs = {str(i) for i in s.scalars(select(Job.id))}
    return [folder / n for n in sorted(names) if n not in jobs]


def _temporaries(settings: Settings, now: float) -> list[Path]:
    """What uploads and deletes left behind (``TEMP_PREFIXES``), untouched lately."""
    folders = (settings.checkpoints_dir, settings.datasets_dir, settings.stages_dir)
    found = []
    for folder in (*folders, settings.artifact_root / "jobs"):
        try:
            names = [e.name for e in os.scandir(folder) if e.name.startswith(TEMP_PREFIXES)]
        except OSError:
            continue
        for name in names:
            aside = name.startswith(".removing-")
            if aside or now - touched(folder / name) > TEMP_GRACE_SECONDS:
                found.append(folder / name)
    return sorted(found)


def _old_uploads(
    s: Session, settings: Settings, older_than_days: float | None, now: float
) -> list[tuple[str, str]]:
    """Uploads older than ``older_than_days`` (by their rows, else their files) no job names."""
    if older_than_days is None:
        return []
    since = now - older_than_days * DAY
    stored = {(r.kind, r.name): r.created_at.timestamp() for r in s.scalars(select(UploadRow))}
    named = _all_named(s, settings)
    old = []
    for kind in UPLOAD_KINDS:
        folder = upload_folder(settings, kind)
        try:
            names = sorted(e.name for e in os.scandir(folder) if not e.name.startswith("."))
        except OSError:
            continue
        for name in names:
            at = stored.get((kind, name)) or changed(folder / name)
            if at < since and (kind, name) not in named:
                old.append((kind, name))
    return old


def _all_named(s: Session, settings: Settings) -> set[tuple[str, str]]:
    """The uploads that any job or running sweep names."""
    named: set[tuple[str, str]] = set()
    for config in s.scalars(select(Job.config).execution_options(yield_per=500)):
        named |= named_uploads(settings, config or {})
    for spec in s.scalars(select(Sweep.spec).where(Sweep.state == "running")):
        named |= named_uploads(settings, (spec or {}).get("base") or {})
    return named


def _stale_studies(s: Session, db: Database) -> list[str]:
    """Optuna studies of sweeps whose rows were deleted (a crash after the rows went)."""
    import optuna

    from api.runtime.sweeps import study_storage

    if not inspect(s.get_bind()).has_table("studies"):  # Optuna's: no sweep was ever made
        return []
    names = set(s.scalars(select(Sweep.study_name)))
    studies = optuna.get_all_study_names(storage=study_storage(db.url))
    return sorted(n for n in studies if n.startswith(STUDY_PREFIX) and n not in names)
