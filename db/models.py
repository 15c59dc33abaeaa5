"""The tables (SQLAlchemy 2). Schema changes go through Alembic (``db/migrations``); these classes
never leave ``db`` and ``api``'s services: the HTTP layer has its own pydantic schemas.

- ``jobs``: what a user submitted (kind, validated config), its state, the worker holding it (lease
  with heartbeats), a cancel request, the error a user can act on, the result.
- ``stages``: a job's stages as they run (kind, stage key, state, progress: epoch, loss, accuracy,
  ETA). A stage key is shared by every job whose stage has the same config and inputs.
- ``epoch_metrics``: one row per epoch a stage trained (loss, accuracies, learning rate, seconds,
  a search's E[MFLOPs]): what a job's curves are drawn from.
- ``stage_locks``: one row per stage key while a worker computes it, so no stage runs twice at
  once; a lock whose lease expired belongs to a dead worker and is taken over.
- ``artifacts``: files under the artifact root (relative paths), per job.
- ``architectures``: evaluated networks with their metrics, for Pareto queries: D_v accuracy
  (``val_accuracy``, what fronts rank on; None in rows stored before it was recorded) and test
  accuracy (``accuracy``, reported beside it), costs, and the teacher's identity.
- ``pareto_groups`` and ``pareto_members``: per (dataset, teacher identity) its row counts and,
  per cost, its Pareto front of D_v accuracy, maintained with the architectures
  (``api.runtime.fronts``); ``pareto_revision``: one counter every change of a front raises,
  which the API's kept Pareto responses are checked against.
- ``sweeps``: Optuna budget sweeps (the spec, state, and the name of the Optuna study, which lives
  in the same database in Optuna's own tables); their trials are jobs with ``sweep_id`` and
  ``trial`` (the Optuna trial number) set.

- ``users`` and ``api_keys``: the people who share a service (role ``admin``, ``member`` or
  ``viewer``, quotas) and their keys (stored as a SHA-256 digest only, with an expiry and a
  revocation time); ``uploads``: who uploaded which checkpoint or dataset; ``audit_log``: who
  submitted, cancelled, deleted, created or revoked what, and when. A job's and a sweep's
  ``owner`` is a user's name (``None`` on rows stored before there were owners: an admin's).

Alembic's version table is ``reskd_alembic_version``: Optuna keeps its own ``alembic_version``
in the same database.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and read back aware (SQLite keeps no zone: its naive values
    are the UTC ones written)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str | None] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    dataset: Mapped[str] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    worker: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[float | None] = mapped_column(Float)  # unix time
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # attempts whose worker died (its lease expired, or a Ray task's process was retried)
    worker_deaths: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    sweep_id: Mapped[int | None] = mapped_column(
        ForeignKey("sweeps.id", ondelete="SET NULL"), index=True
    )
    trial: Mapped[int | None] = mapped_column(Integer)  # the Optuna trial number
    owner: Mapped[str | None] = mapped_column(String(64), index=True)  # a user's name
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # device time: seconds of finished attempts, and when (queue clock) the running one began
    device_seconds: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    ran_from: Mapped[float | None] = mapped_column(Float)
    # queue clock at its last attempt's end (fair share sums a window of it: indexed)
    settled_at: Mapped[float | None] = mapped_column(Float, index=True)

    stages: Mapped[list[Stage]] = relationship(
        back_populates="job", order_by="Stage.position", cascade="all, delete-orphan"
    )
    artifacts: Mapped[list[Artifact]] = relationship(
        back_populates="job", order_by="Artifact.id", cascade="all, delete-orphan"
    )

    __table_args__ = (
        Index("ix_jobs_state_id", "state", "id"),
        Index("ix_jobs_kind_id", "kind", "id"),  # the jobs list's filters, newest first
        Index("ix_jobs_dataset_id", "dataset", "id"),
        # the owners' usage (api.runtime.fairshare): the running attempts and the settled ones
        # as two ranges of one index that holds every column it reads
        Index(
            "ix_jobs_usage",
            "ran_from",
            "settled_at",
            "owner",
            "state",
            "lease_until",
            "device_seconds",
        ),
    )


class Stage(Base):
    __tablename__ = "stages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(32), index=True)
    name: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16), default="running")
    reused: Mapped[bool] = mapped_column(Boolean, default=False)
    resumed_from_epoch: Mapped[int] = mapped_column(Integer, default=0)
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    error: Mapped[str | None] = mapped_column(Text)

    job: Mapped[Job] = relationship(back_populates="stages")


class EpochMetric(Base):
    """One epoch of one stage: what a curve of the job is drawn from."""

    __tablename__ = "epoch_metrics"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    stage_id: Mapped[int] = mapped_column(ForeignKey("stages.id", ondelete="CASCADE"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)  # 1-based, as the progress shows it
    loss: Mapped[float] = mapped_column(Float)
    train_accuracy: Mapped[float] = mapped_column(Float)
    eval_accuracy: Mapped[float | None] = mapped_column(Float)
    lr: Mapped[float] = mapped_column(Float)
    seconds: Mapped[float] = mapped_column(Float)
    expected_mflops: Mapped[float | None] = mapped_column(Float)  # searches: E[MFLOPs]
    phase: Mapped[str | None] = mapped_column(String(64))  # a stage's trainings, e.g. stage1
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class StageLock(Base):
    __tablename__ = "stage_locks"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    worker: Mapped[str] = mapped_column(String(128))
    lease_until: Mapped[float] = mapped_column(Float)


class Artifact(Base):
    __tablename__ = "artifacts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32))
    path: Mapped[str] = mapped_column(String(500))  # relative to the artifact root
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    job: Mapped[Job] = relationship(back_populates="artifacts")


class Architecture(Base):
    __tablename__ = "architectures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    dataset: Mapped[str] = mapped_column(String(64))
    # The teacher's identity, ``arch@digest`` (its architecture and the first 12 hex digits of
    # its checkpoint's digest, or of its stage's key when the run trained it); rows stored
    # before identities were recorded hold the architecture alone.
    teacher: Mapped[str] = mapped_column(String(200))
    stage: Mapped[str] = mapped_column(String(64))  # T, S0, S1, S1 adaptive, ...
    arch: Mapped[str] = mapped_column(Text)  # the networks' labels, e.g. resnet20-nas[C6L5]
    genotypes: Mapped[list[Any] | None] = mapped_column(JSON)  # searched networks' genotypes
    accuracy: Mapped[float] = mapped_column(Float)  # on the test set: reported, never ranked on
    val_accuracy: Mapped[float | None] = mapped_column(Float)  # on D_v: what fronts rank on
    mflops: Mapped[float] = mapped_column(Float)
    adaptive_mflops: Mapped[float] = mapped_column(Float)
    params: Mapped[int] = mapped_column(Integer)
    energy: Mapped[float | None] = mapped_column(Float)
    seed: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (Index("ix_architectures_dataset_teacher", "dataset", "teacher"),)


COSTS = ("mflops", "adaptive_mflops", "params")  # what a Pareto front trades accuracy against


class ParetoGroup(Base):
    """One (dataset, teacher identity) of the stored architectures: how many of them have a D_v
    accuracy (with and without the teachers' own rows), and the row a writer locks while it
    updates the group's fronts."""

    __tablename__ = "pareto_groups"

    dataset: Mapped[str] = mapped_column(String(64), primary_key=True)
    teacher: Mapped[str] = mapped_column(String(200), primary_key=True)
    rows: Mapped[int] = mapped_column(Integer, default=0)
    rows_without_teacher: Mapped[int] = mapped_column(Integer, default=0)


class ParetoRevision(Base):
    """One row: a counter that every change of the stored fronts raises, in the same
    transaction. A Pareto response is a function of it (and of the query), so the API keeps its
    latest responses and answers a repeated query with one read of this row (and a client that
    sends the response's ETag back with a 304)."""

    __tablename__ = "pareto_revision"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    revision: Mapped[int] = mapped_column(BigInteger, default=0)


class ParetoMember(Base):
    """An architecture on its group's front for one cost, with or without the teacher's rows;
    kept up to date in the transaction that stores or replaces architectures
    (``db.fronts``), so a Pareto query reads the fronts, not every row."""

    __tablename__ = "pareto_members"

    dataset: Mapped[str] = mapped_column(String(64), primary_key=True)
    teacher: Mapped[str] = mapped_column(String(200), primary_key=True)
    cost: Mapped[str] = mapped_column(String(32), primary_key=True)
    with_teacher: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    architecture_id: Mapped[int] = mapped_column(
        ForeignKey("architectures.id", ondelete="CASCADE"), primary_key=True
    )

    __table_args__ = (
        Index("ix_pareto_members_lookup", "cost", "with_teacher", "dataset", "teacher"),
    )


class Sweep(Base):
    __tablename__ = "sweeps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str | None] = mapped_column(String(200))
    study_name: Mapped[str] = mapped_column(String(200), unique=True)
    state: Mapped[str] = mapped_column(String(16), default="running", index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    dataset: Mapped[str] = mapped_column(String(64))
    trials: Mapped[int] = mapped_column(Integer)  # how many trials the sweep asks for
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    owner: Mapped[str | None] = mapped_column(String(64), index=True)
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


ROLES = ("admin", "member", "viewer")


class User(Base):
    """One person (or robot) of a shared service. ``max_running_jobs`` and
    ``max_device_hours_per_day`` are None for the service's defaults."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    max_running_jobs: Mapped[int | None] = mapped_column(Integer)
    max_device_hours_per_day: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ApiKey(Base):
    """A key is ``rk_<lookup>_<secret>``; only ``lookup`` and the SHA-256 of the whole key are
    stored (the key is shown once, when it is created)."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    lookup: Mapped[str] = mapped_column(String(16), unique=True)
    digest: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    label: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    user: Mapped[User] = relationship()


class UploadRow(Base):
    """Who uploaded a checkpoint (its file name under ``checkpoints/``) or a dataset (its name
    under ``datasets/``)."""

    __tablename__ = "uploads"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # checkpoint or dataset
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(64), index=True)
    action: Mapped[str] = mapped_column(String(32), index=True)  # e.g. job.submit, key.revoke
    target: Mapped[str] = mapped_column(String(250))  # e.g. job 12, user alice, key 3
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)
