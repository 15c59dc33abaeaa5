"""Who uses how much of a shared service: per user, jobs, device hours and disk.

Device time is what the queue records, as ``api.runtime.fairshare`` defines it for the quotas:
the seconds of a job's ended attempts (``Job.device_seconds``) and, while one runs, the time
since it began (``Job.ran_from``, on the queue's clock). The last 24 hours hold the jobs whose
last attempt ended then (all their device time) and the part of each running attempt inside
them.

Disk is measured on the artifact root, every file once (the database's files aside):

- ``jobs/<id>/``: the job's owner's;
- ``stages/<kind>-<key>/`` (and its ``.partial``): the owner of the job that computed it, the
  earliest row of its key that is not a reuse (jobs that reuse it pay nothing);
- ``checkpoints/<name>`` and ``datasets/<name>/``: their uploader's (the ``uploads`` row);
- anything else (a stage no remaining job computed, a folder of a deleted job, a file without an
  upload row, temporary files): the ``shared`` line.

So the users' ``disk_bytes`` and the shared line's add up to ``total_bytes``, which is measured
separately (one walk of the root). Rows without an owner (stored before there were owners) are
the admin's.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pydantic import BaseModel, Field
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from api.runtime import fairshare
from api.runtime.disk import UPLOAD_KINDS, stage_of, tree_bytes, upload_folder
from api.runtime.fairshare import UNLIMITED, attempt_end
from api.runtime.settings import Settings
from db.models import Job, Stage, UploadRow, User
from db.session import Database

HOUR = 3600.0
ADMIN = "admin"  # whose rows without an owner are
SHARED = "shared"


class UserUsage(BaseModel):
    user: str = Field(
        description="a user's name (rows stored before owners were recorded: admin); `shared` "
        "is what no job or upload accounts for"
    )
    jobs: int = 0
    device_hours: float = Field(0.0, description="all of its jobs' device time, running included")
    device_hours_24h: float = Field(0.0, description="of it, the last 24 hours'")
    job_bytes: int = Field(0, description="its jobs' folders (jobs/<id>/)")
    stage_bytes: int = Field(0, description="the stage folders its jobs computed (not reused)")
    upload_bytes: int = Field(0, description="its uploaded checkpoints and datasets")
    disk_bytes: int = Field(0, description="the three together")


class Usage(BaseModel):
    users: list[UserUsage] = Field(description="every user, and every owner of a job or upload")
    shared: UserUsage
    total_bytes: int = Field(
        description="every file under the artifact root but the database's, measured: the "
        "users' disk_bytes and the shared line's add up to it"
    )


class _Lines:
    def __init__(self) -> None:
        self.by_user: dict[str, UserUsage] = {}
        self.shared = UserUsage(user=SHARED)

    def of(self, owner: str | None) -> UserUsage:
        name = owner or ADMIN
        return self.by_user.setdefault(name, UserUsage(user=name))

    def add(self, owner: str | None, column: str | None, size: int, *, known: bool) -> None:
        """``size`` bytes of ``owner``'s (the shared line's, unless ``known``) in ``column``."""
        line = self.of(owner) if known else self.shared
        if column is not None:
            setattr(line, column, getattr(line, column) + size)
        line.disk_bytes += size


def usage(settings: Settings, db: Database, *, now: float | None = None) -> Usage:
    """Per user: jobs, device hours (in all and over the last 24 hours) and disk bytes; the
    shared line; and the artifact root's bytes as measured (see the module's doc). ``now`` is on
    the queue's clock (``time.time``)."""
    now = time.time() if now is None else now
    lines = _Lines()
    with db.session(readonly=True) as s:
        for name in s.scalars(select(User.name)):
            lines.of(name)
        _device_time(s, lines, now)
        jobs = {str(i): owner for i, owner in s.execute(select(Job.id, Job.owner))}
        stages = _computed_by(s)
        uploads = {(r.kind, r.name): r.owner for r in s.scalars(select(UploadRow))}
    root = settings.artifact_root
    skipped = {f for f in _database_files(db) if f.parent == root.resolve()}
    for entry in _entries(root):
        if entry.resolve() in skipped:
            continue
        if entry.name == "jobs" and entry.is_dir():
            for job in _entries(entry):
                known = job.name in jobs
                lines.add(jobs.get(job.name), "job_bytes", tree_bytes(job), known=known)
        elif entry == settings.stages_dir:
            for folder in _entries(entry):
                stage = stage_of(folder.name)
                known = stage in stages
                owner = stages.get(stage) if stage else None
                lines.add(owner, "stage_bytes", tree_bytes(folder), known=known)
        elif entry in [upload_folder(settings, k) for k in UPLOAD_KINDS]:
            kind = "checkpoint" if entry == settings.checkpoints_dir else "dataset"
            for upload in _entries(entry):
                known = (kind, upload.name) in uploads
                owner = uploads.get((kind, upload.name))
                lines.add(owner, "upload_bytes", tree_bytes(upload), known=known)
        else:
            lines.add(None, None, tree_bytes(entry), known=False)
    total = tree_bytes(root) - sum(tree_bytes(f) for f in skipped)
    users = sorted(lines.by_user.values(), key=lambda u: u.user)
    return Usage(users=users, shared=lines.shared, total_bytes=total)


def _device_time(s: Session, lines: _Lines, now: float) -> None:
    """Jobs and device hours per owner, as ``api.runtime.fairshare`` defines device time (the
    quotas and the claim order read the same)."""
    running = case((Job.ran_from.is_not(None), attempt_end(now) - Job.ran_from), else_=0.0)
    seconds = func.coalesce(func.sum(Job.device_seconds + running), 0.0)
    for owner, n, total in s.execute(
        select(Job.owner, func.count(Job.id), seconds).group_by(Job.owner)
    ):
        line = lines.of(owner)
        line.jobs += int(n)
        line.device_hours += float(total) / HOUR
    for row in s.execute(fairshare.usage(UNLIMITED, now)):  # its day is the last 24 hours
        lines.of(row.owner).device_hours_24h += float(row.day_seconds or 0.0) / HOUR


def _computed_by(s: Session) -> dict[tuple[str, str], str | None]:
    """Per stage (kind, key): the owner of the job whose row computed it first (not a reuse)."""
    first: dict[tuple[str, str], str | None] = {}
    rows = (
        select(Stage.kind, Stage.key, Job.owner)
        .join(Job, Job.id == Stage.job_id)
        .where(Stage.reused.is_(False))
        .order_by(Stage.id)
    )
    for kind, key, owner in s.execute(rows):
        first.setdefault((kind, key), owner)
    return first


def _entries(folder: Path) -> list[Path]:
    try:
        return sorted(Path(e.path) for e in os.scandir(folder))
    except OSError:  # not there (yet)
        return []


def _database_files(db: Database) -> set[Path]:
    """The SQLite database's files (its journal, write-ahead log and shared memory beside it)."""
    if db.file is None:
        return set()
    path = db.file.resolve()
    return {path, *(path.with_name(path.name + x) for x in ("-wal", "-shm", "-journal"))}
