"""The job store on a SQL database (SQLAlchemy: SQLite or PostgreSQL)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import case, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from api.runtime import fronts
from api.runtime.fairshare import UNLIMITED, Ledger, Policy, attempt_end, claimable, died, settled
from api.runtime.store import MAX_ATTEMPTS, TERMINAL, Beat, Claim, Clock, JobQueue
from db.models import Architecture, Artifact, EpochMetric, Job, Stage, StageLock, User
from db.session import Database


def _close_stages(s: Any, job_id: int, why: str) -> None:
    """An earlier attempt's stages still ``running`` are over: its worker is gone."""
    s.execute(
        update(Stage)
        .where(Stage.job_id == job_id, Stage.state == "running")
        .values(state="interrupted", error=why, finished_at=datetime.now(UTC))
    )


class SqlQueue(JobQueue):
    """The queue on SQLite or PostgreSQL (see :mod:`api.runtime.store` for the contract).
    Leases and device time are read from ``clock`` in this process, not from the database
    server's ``now()``; ``policy`` holds the quotas' defaults (:mod:`api.runtime.fairshare`)."""

    def __init__(
        self,
        db: Database,
        *,
        clock: Clock = time.time,
        max_attempts: int = MAX_ATTEMPTS,
        policy: Policy = UNLIMITED,
    ) -> None:
        self.db = db
        self.clock = clock
        self.max_attempts = max_attempts
        self.policy = policy

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
    ) -> int:
        with self.db.session() as s:
            job = Job(
                kind=kind,
                config=config,
                dataset=dataset,
                name=name,
                state="queued",
                sweep_id=sweep_id,
                trial=trial,
                owner=owner,
                priority=priority,
            )
            s.add(job)
            s.flush()
            return job.id

    def claim(self, *, worker: str, lease_seconds: float) -> Claim | None:
        """The first job in :mod:`api.runtime.fairshare`'s order whose owner is under their
        quotas; the attempt a dead worker left ends at its lease's end."""
        now = self.clock()
        with self.db.session() as s:
            # A cancelled job whose worker died is finished here, not run again.
            s.execute(
                update(Job)
                .where(claimable(now), Job.cancel_requested.is_(True))
                .values(
                    state="cancelled",
                    finished_at=datetime.now(UTC),
                    worker=None,
                    **settled(attempt_end(now)),
                )
            )
            self._fail_the_dying(s, now)
            s.execute(
                update(Stage)
                .where(
                    Stage.state == "running",
                    Stage.job_id.in_(select(Job.id).where(Job.state.in_(TERMINAL))),
                )
                .values(state="interrupted", error="the job ended", finished_at=datetime.now(UTC))
            )
            ledger = Ledger(s, self.policy, now)
            self._requeue_the_held(s, ledger)
            candidates = s.scalars(ledger.order().limit(8)).all()
            for job_id in candidates:
                if not self._admits(s, job_id, now):
                    continue
                taken = s.execute(
                    update(Job)
                    .where(Job.id == job_id, claimable(now), Job.cancel_requested.is_(False))
                    .values(
                        **settled(attempt_end(now), then=now),
                        state="running",
                        worker=worker,
                        lease_until=now + lease_seconds,
                        attempts=Job.attempts + 1,
                        worker_deaths=case(
                            (Job.state == "running", Job.worker_deaths + 1),
                            else_=Job.worker_deaths,
                        ),
                        started_at=func.coalesce(Job.started_at, datetime.now(UTC)),
                    )
                )
                if taken.rowcount == 1:  # type: ignore[attr-defined]
                    job = s.get(Job, job_id)
                    assert job is not None
                    _close_stages(s, job_id, f"attempt {job.attempts - 1} stopped")
                    return Claim(job.id, job.kind, dict(job.config), job.attempts, job.sweep_id)
        return None

    def _admits(self, s: Any, job_id: int, now: float) -> bool:
        """Whether the job's owner is still under their quotas, asked again with the owner's
        row locked (PostgreSQL: another claim may have taken one of their jobs since the order
        was read; one that holds the lock now is left to it). SQLite's writers take turns."""
        owner = s.scalar(select(Job.owner).where(Job.id == job_id))
        if owner is None:
            return True
        user = select(User.id).where(User.name == owner)
        locked = self.db.is_sqlite or s.scalar(user.with_for_update(skip_locked=True)) is not None
        if not locked and s.scalar(user) is not None:
            return False  # another claim holds the owner's row
        return Ledger(s, self.policy, now, owners=[owner]).held(owner) is None

    def _requeue_the_held(self, s: Any, ledger: Ledger) -> None:
        """A dead worker's job whose owner may not run a job now (disabled, at a quota) goes back
        to the queue, its death counted: it waits there, saying why, instead of showing as
        running until its owner may run it again."""
        blocked = ledger.blocked()
        if not blocked:
            return
        dead = died(ledger.now) & Job.owner.in_(blocked)
        ids = s.scalars(select(Job.id).where(dead)).all()
        if not ids:
            return
        s.execute(
            update(Job)
            .where(Job.id.in_(ids), dead)
            .values(
                state="queued",
                worker=None,
                lease_until=None,
                worker_deaths=Job.worker_deaths + 1,
                **settled(attempt_end(ledger.now)),
            )
        )
        requeued = select(Job.id).where(Job.id.in_(ids), Job.state == "queued")
        s.execute(
            update(Stage)
            .where(Stage.state == "running", Stage.job_id.in_(requeued))
            .values(state="interrupted", error="its worker died", finished_at=datetime.now(UTC))
        )

    def _fail_the_dying(self, s: Any, now: float) -> None:
        """Jobs whose worker died for the ``max_attempts``-th time fail; not handed out again."""
        last = died(now) & (Job.worker_deaths + 1 >= self.max_attempts)
        for job_id, deaths in s.execute(select(Job.id, Job.worker_deaths).where(last)).all():
            s.execute(
                update(Job)
                .where(Job.id == job_id, last)
                .values(
                    state="failed",
                    error=f"worker died {deaths + 1} times running the job (max_attempts "
                    f"{self.max_attempts}); it is not handed out again",
                    worker_deaths=deaths + 1,
                    finished_at=datetime.now(UTC),
                    worker=None,
                    lease_until=None,
                    **settled(attempt_end(now)),
                )
            )

    def heartbeat(self, *, job_id: int, worker: str, lease_seconds: float) -> Beat:
        now = self.clock()
        with self.db.session() as s:
            renewed = s.execute(
                update(Job)
                .where(Job.id == job_id, Job.worker == worker, Job.state == "running")
                .values(lease_until=now + lease_seconds)
            )
            s.execute(
                update(StageLock)
                .where(StageLock.worker == worker)
                .values(lease_until=now + lease_seconds)
            )
            cancel = s.scalar(select(Job.cancel_requested).where(Job.id == job_id))
        return Beat(owned=renewed.rowcount == 1, cancel=bool(cancel))  # type: ignore[attr-defined]

    def finish(
        self,
        *,
        job_id: int,
        worker: str,
        state: str,
        error: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> bool:
        if state not in TERMINAL:
            raise ValueError(f"state: must be one of {', '.join(TERMINAL)}, got {state!r}")
        now = self.clock()
        with self.db.session() as s:
            done = s.execute(
                update(Job)
                .where(Job.id == job_id, Job.worker == worker, Job.state == "running")
                .values(
                    state=state,
                    error=error,
                    result=result,
                    finished_at=datetime.now(UTC),
                    lease_until=None,
                    **settled(now),
                )
            )
            return bool(done.rowcount == 1)  # type: ignore[attr-defined]

    def cancel(self, *, job_id: int) -> str | None:
        with self.db.session() as s:
            job = s.get(Job, job_id, with_for_update=not self.db.is_sqlite)
            if job is None:
                return None
            if job.state == "queued":
                job.state = "cancelled"
                job.finished_at = datetime.now(UTC)
            elif job.state == "running":
                job.cancel_requested = True
            return job.state

    def release(self, *, job_id: int, worker: str) -> None:
        """Hand a running job back to the queue (its worker is shutting down)."""
        now = self.clock()
        with self.db.session() as s:
            handed = s.execute(
                update(Job)
                .where(Job.id == job_id, Job.worker == worker, Job.state == "running")
                .values(state="queued", worker=None, lease_until=None, **settled(now))
            )
            if handed.rowcount == 1:  # type: ignore[attr-defined]
                _close_stages(s, job_id, "its worker shut down; the job was handed back")
            s.execute(delete(StageLock).where(StageLock.worker == worker))

    def count_attempt(self, *, job_id: int, worker: str) -> None:
        """Its owner runs the job again (a Ray task retried after its worker process died): the
        attempt that died ends now, the next begins."""
        now = self.clock()
        with self.db.session() as s:
            s.execute(
                update(Job)
                .where(Job.id == job_id, Job.worker == worker, Job.state == "running")
                .values(
                    attempts=Job.attempts + 1,
                    worker_deaths=Job.worker_deaths + 1,
                    **settled(now, then=now),
                )
            )
            _close_stages(s, job_id, "the Ray task was retried")

    def lock_stage(self, *, key: str, worker: str, lease_seconds: float) -> bool:
        now = self.clock()
        try:
            with self.db.session() as s:
                s.add(StageLock(key=key, worker=worker, lease_until=now + lease_seconds))
            return True
        except IntegrityError:
            pass
        with self.db.session() as s:
            taken = s.execute(
                update(StageLock)
                .where(
                    StageLock.key == key,
                    or_(StageLock.lease_until < now, StageLock.worker == worker),
                )
                .values(worker=worker, lease_until=now + lease_seconds)
            )
            return bool(taken.rowcount == 1)  # type: ignore[attr-defined]

    def unlock_stage(self, *, key: str, worker: str) -> None:
        with self.db.session() as s:
            s.execute(delete(StageLock).where(StageLock.key == key, StageLock.worker == worker))

    # -- records of a running job (written by its owner) ------------------------------------------

    def stage_started(
        self, *, job_id: int, kind: str, key: str, name: str, state: str = "running"
    ) -> int:
        now = datetime.now(UTC)
        with self.db.session() as s:
            position = s.scalar(
                select(func.coalesce(func.max(Stage.position), -1)).where(Stage.job_id == job_id)
            )
            stage = Stage(
                job_id=job_id,
                position=int(position if position is not None else -1) + 1,
                kind=kind,
                key=key,
                name=name,
                state=state,
                reused=state == "succeeded",
                progress={},
                started_at=now,
                finished_at=now if state == "succeeded" else None,
            )
            s.add(stage)
            s.flush()
            return stage.id

    def stage_progress(self, *, stage_id: int, progress: dict[str, Any], resumed_from: int) -> None:
        with self.db.session() as s:
            s.execute(
                update(Stage)
                .where(Stage.id == stage_id)
                .values(progress=progress, resumed_from_epoch=resumed_from)
            )

    def add_epoch(self, *, job_id: int, stage_id: int, metrics: dict[str, Any]) -> None:
        with self.db.session() as s:
            # a resumed stage repeats no epoch, but a stage retried after a crash may: keep one
            s.execute(
                delete(EpochMetric).where(
                    EpochMetric.stage_id == stage_id,
                    EpochMetric.epoch == metrics["epoch"],
                    EpochMetric.phase == metrics.get("phase"),
                )
            )
            s.add(EpochMetric(job_id=job_id, stage_id=stage_id, **metrics))

    def stage_finished(self, *, stage_id: int, state: str, error: str | None = None) -> None:
        with self.db.session() as s:
            s.execute(
                update(Stage)
                .where(Stage.id == stage_id)
                .values(state=state, error=error, finished_at=datetime.now(UTC))
            )

    def add_results(
        self,
        *,
        job_id: int,
        artifacts: list[dict[str, Any]],
        architectures: list[dict[str, Any]],
    ) -> None:
        with self.db.session() as s:  # one transaction: the rows and their Pareto fronts
            s.execute(delete(Artifact).where(Artifact.job_id == job_id))
            old = s.scalars(select(Architecture.id).where(Architecture.job_id == job_id)).all()
            replaced = fronts.removing(s, old)
            s.execute(delete(Architecture).where(Architecture.job_id == job_id))
            s.add_all(Artifact(job_id=job_id, **a) for a in artifacts)
            rows = [Architecture(job_id=job_id, **a) for a in architectures]
            s.add_all(rows)
            s.flush()
            fresh = [r.id for r in rows if (r.dataset, r.teacher) not in replaced]
            fronts.added(s, fresh)
            fronts.rebuild(s, replaced)
