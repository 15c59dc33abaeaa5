"""The job queue: the contract (:class:`JobQueue`) and its implementation on the database.

Contract
--------
- Thread and process safe: any number of API threads and worker processes may call it at once.
- ``claim`` is atomic: a queued job, or a running job whose lease expired (its worker died), goes
  to exactly one caller, which then owns it until it finishes it or stops renewing its lease.
- ``claim`` takes jobs by ``priority`` (highest first), then by their owner's recent device time
  (least first: fair share), then oldest first, and passes over the jobs of a user who is
  disabled or at a quota (jobs run at once, device-hours in 24 h); jobs without an owner have no
  quota. A dead worker's job whose owner may not run a job now goes back to the queue (its
  death counted). :mod:`api.runtime.fairshare` defines the order and the quotas, and says why a
  queued job waits.
- A job's device time is the sum of its attempts: an attempt begins when a claim hands the job
  out and ends when it finishes, is handed back (``release``), is run again (``count_attempt``)
  or its worker dies (then at its lease's end).
- The owner renews its lease with ``heartbeat``; the reply says whether it still owns the job and
  whether a cancel was requested. A worker that lost its job must stop working on it.
- ``lock_stage`` gives one owner per stage key across all jobs (no stage computed twice at once);
  locks are leased like jobs and renewed by ``heartbeat``; a dead owner's lock is taken over.
- ``finish`` only takes effect for the current owner.
- A job whose worker died (its lease expired) ``max_attempts`` times is not handed out again:
  the claim that finds it fails it with "worker died N times" (a job handed back with
  ``release`` by a worker shutting down has not died; a Ray task retried after its worker
  process died, ``count_attempt``, has).
- A stage row that an attempt left ``running`` (its worker died or handed the job back) is closed
  as ``interrupted`` when the job is claimed again; the next attempt records the stage anew,
  resumed from its checkpoint.
- Leases and attempts' times are absolute times on the queue's clock (``time.time`` unless one
  is injected: the tests advance a fake clock instead of waiting for a lease to run out). Every
  process that shares a database must read the same clock.

The implementation is chosen by the database URL (SQLite or PostgreSQL through SQLAlchemy) in
:func:`api.runtime.queues.open_queue`; this module names none.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

from api.runtime.kinds import (  # noqa: F401  (re-exported: the names store users import)
    TERMINAL,
    JobKind,
    JobState,
    SweepState,
)

MAX_ATTEMPTS = 3
"""Deaths of a job's worker after which the job fails (``Settings.max_attempts``)."""

Clock: TypeAlias = Callable[[], float]
"""Seconds since the epoch, now (``time.time``); a lease runs out when the clock passes it."""


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
        owner: str | None = None,
        priority: int = 0,
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
