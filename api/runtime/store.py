"""The job queue: the contract (:class:`JobQueue`) and its implementation on the database.

Contract
--------
- Thread and process safe: any number of API threads and worker processes may call it at once.
- ``claim`` is atomic: a queued job, or a running job whose lease expired (its worker died), goes
  to exactly one caller, which then owns it until it finishes it or stops renewing its lease.
- The owner renews its lease with ``heartbeat``; the reply says whether it still owns the job and
  whether a cancel was requested. A worker that lost its job must stop working on it.
- ``lock_stage`` gives one owner per stage key across all jobs (no stage computed twice at once);
  locks are leased like jobs and renewed by ``heartbeat``; a dead owner's lock is taken over.
- ``finish`` only takes effect for the current owner.

The implementation is chosen by the database URL (SQLite or PostgreSQL through SQLAlchemy).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Literal

from api.runtime.kinds import (  # noqa: F401  (re-exported: the names store users import)
    TERMINAL,
    JobKind,
    JobState,
    SweepState,
)
from db.session import Database

# A stage row's state; ``interrupted``: its attempt's worker died or handed the job back (the
# next attempt records the stage again, resumed from its checkpoint).
StageState = Literal["running", "succeeded", "failed", "cancelled", "interrupted"]


@dataclass(frozen=True)
class Claim:
    job_id: int
    kind: str
    config: dict[str, Any]
    attempts: int
    sweep_id: int | None = None


@dataclass(frozen=True)
class Beat:
    owned: bool
    cancel: bool


class JobQueue(ABC):
    """The job store. Every method is keyword-only; callers never see the database rows."""

    @abstractmethod
    def submit(
        self,
        *,
        kind: str,
        config: dict[str, Any],
        dataset: str,
        name: str | None,
        sweep_id: int | None = None,
        trial: int | None = None,
    ) -> int: ...

    @abstractmethod
    def claim(self, *, worker: str, lease_seconds: float) -> Claim | None: ...

    @abstractmethod
    def heartbeat(self, *, job_id: int, worker: str, lease_seconds: float) -> Beat: ...

    @abstractmethod
    def finish(
        self,
        *,
        job_id: int,
        worker: str,
        state: str,
        error: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> bool: ...

    @abstractmethod
    def cancel(self, *, job_id: int) -> str | None:
        """Cancel a queued job now, ask a running one to stop; its state, or None if unknown."""

    @abstractmethod
    def release(self, *, job_id: int, worker: str) -> None:
        """The owner hands its running job back to the queue (it resumes elsewhere)."""

    @abstractmethod
    def count_attempt(self, *, job_id: int, worker: str) -> None: ...

    @abstractmethod
    def lock_stage(self, *, key: str, worker: str, lease_seconds: float) -> bool: ...

    @abstractmethod
    def unlock_stage(self, *, key: str, worker: str) -> None: ...

    # -- records of a running job (written by its owner) ------------------------------------------

    @abstractmethod
    def stage_started(
        self, *, job_id: int, kind: str, key: str, name: str, state: str = "running"
    ) -> int: ...

    @abstractmethod
    def stage_progress(
        self, *, stage_id: int, progress: dict[str, Any], resumed_from: int
    ) -> None: ...

    @abstractmethod
    def stage_finished(self, *, stage_id: int, state: str, error: str | None = None) -> None: ...

    @abstractmethod
    def add_epoch(self, *, job_id: int, stage_id: int, metrics: dict[str, Any]) -> None:
        """One finished epoch of a running stage (``EpochMetric``'s fields)."""

    @abstractmethod
    def add_results(
        self,
        *,
        job_id: int,
        artifacts: list[dict[str, Any]],
        architectures: list[dict[str, Any]],
    ) -> None: ...


def open_queue(db: Database) -> JobQueue:
    """The queue for a database (one SQL implementation serves SQLite and PostgreSQL)."""
    from api.runtime.sql import SqlQueue

    return SqlQueue(db)
