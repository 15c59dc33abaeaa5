"""Who runs next: device time, quotas and fair share. One set of definitions, used by the claim
(:meth:`api.runtime.sql.SqlQueue.claim`) and by the reads that say why a queued job waits
(:func:`why_held`), so the two cannot disagree.

- A job's *device time*: the seconds of its ended attempts (``Job.device_seconds``, with
  ``settled_at`` the end of the last) plus, while it runs, the time since its attempt began
  (``ran_from``). An attempt whose worker died ends when its lease ran out, not when another
  worker takes the job over.
- A user's *recent device time* over a window of H hours: the device time of their jobs whose
  last attempt ended within it (all of a job's attempts count with its last) and the part within
  it of their running attempts.
- Quotas, a user's own (``User.max_running_jobs``, ``User.max_device_hours_per_day``) or else the
  service's defaults (:class:`Policy`; None: unlimited): the jobs a user runs (attempts whose
  lease has not run out), and their recent device time over 24 h. The claim passes over the
  queued jobs of a user at a quota, or disabled. Jobs without an owner (an admin's) have no quota.
- The claim order: ``priority`` (highest first), then the owner's recent device time over
  ``Policy.fair_share_hours`` (least first; the jobs without owner count as one owner's), then
  the job's id (oldest first).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import (
    ColumnElement,
    Connection,
    Float,
    Select,
    and_,
    bindparam,
    case,
    func,
    or_,
    select,
    union_all,
)
from sqlalchemy.orm import Session

from db.models import Job, User

if TYPE_CHECKING:
    from api.runtime.settings import Settings

QUOTA_HOURS = 24.0
"""The window of the device-hours quota (``max_device_hours_per_day``)."""


@dataclass(frozen=True)
class Policy:
    """The service's defaults of the quotas (None: unlimited) and its fair-share window."""

    max_running_jobs: int | None = None
    device_hours_per_day: float | None = None
    fair_share_hours: float = 24.0

    @classmethod
    def of(cls, settings: Settings) -> Policy:
        return cls(
            max_running_jobs=settings.default_max_running_jobs,
            device_hours_per_day=settings.default_device_hours_per_day,
            fair_share_hours=settings.fair_share_hours,
        )


UNLIMITED = Policy()


def died(now: float | ColumnElement[float]) -> ColumnElement[bool]:
    """A running job whose worker stopped renewing its lease."""
    return and_(Job.state == "running", Job.lease_until < now)


def claimable(now: float | ColumnElement[float]) -> ColumnElement[bool]:
    """A queued job, or a running one whose worker died."""
    return or_(Job.state == "queued", died(now))


def attempt_end(now: float) -> ColumnElement[float]:
    """When the running attempt ended, or ends if it ended now: a dead worker's at its lease's
    end."""
    return case((Job.lease_until < now, Job.lease_until), else_=now)


def settled(end: float | ColumnElement[float], *, then: float | None = None) -> dict[str, Any]:
    """An UPDATE's values that end the job's running attempt (if any) at ``end``, adding its time
    to the job's device time, and begin the next at ``then`` (None: no attempt runs). They read
    the row as it was before the statement (SQLite and PostgreSQL alike)."""
    running = Job.ran_from.is_not(None)
    return {
        "device_seconds": Job.device_seconds + case((running, end - Job.ran_from), else_=0.0),
        "settled_at": case((running, end), else_=Job.settled_at),
        "ran_from": then,
    }


# What the owners' usage reads of a job: all of it is in the index ix_jobs_usage, led by
# ``ran_from`` then ``settled_at``, so the two kinds of jobs it sums are two ranges of the index.
USAGE_COLUMNS = (Job.owner, Job.state, Job.lease_until, Job.device_seconds, Job.ran_from,
                 Job.settled_at)  # fmt: skip


def _recent(job: Any, now: Any, since: Any) -> ColumnElement[float]:
    """A job's device time since ``since`` (``job``: its columns)."""
    end = case((job.lease_until < now, job.lease_until), else_=now)
    began = case((job.ran_from > since, job.ran_from), else_=since)
    return case((job.settled_at >= since, job.device_seconds), else_=0.0) + case(
        (and_(job.ran_from.is_not(None), end > since), end - began), else_=0.0
    )


@lru_cache(maxsize=4)
def _usage(by_owner: bool) -> Select[str | None, Any, float, float]:
    """:func:`usage`'s statement, its times parameters (``now``; ``day``, ``fair`` and
    ``window``: when the quota's day, the fair-share window and the longer of them began);
    ``by_owner``: of the ``owners`` only. Made once: building it cost more than running it."""
    now, window = bindparam("now", type_=Float), bindparam("window", type_=Float)
    jobs = union_all(  # the attempts running, and those that ended within the window
        select(*USAGE_COLUMNS).where(Job.ran_from.is_not(None)),
        select(*USAGE_COLUMNS).where(Job.ran_from.is_(None), Job.settled_at >= window),
    ).subquery()  # summed apart: grouped by owner in one, SQLite read every job's row
    job = jobs.c
    live = and_(job.state == "running", job.lease_until >= now)
    statement = select(
        job.owner.label("owner"),
        func.sum(case((live, 1), else_=0)).label("running"),
        func.sum(_recent(job, now, bindparam("day", type_=Float))).label("day_seconds"),
        func.sum(_recent(job, now, bindparam("fair", type_=Float))).label("fair_seconds"),
    ).group_by(job.owner)
    if by_owner:
        statement = statement.where(job.owner.in_(bindparam("owners", expanding=True)))
    return statement


@lru_cache(maxsize=2)
def _quotas(by_owner: bool) -> Select[str, bool, int | None, float | None]:
    """The users' quotas and whether each is disabled; ``by_owner``: of the ``owners`` only."""
    users = select(User.name, User.disabled, User.max_running_jobs, User.max_device_hours_per_day)
    return users.where(User.name.in_(bindparam("owners", expanding=True))) if by_owner else users


def _usage_values(policy: Policy, now: float) -> dict[str, float]:
    since = {"day": QUOTA_HOURS, "fair": policy.fair_share_hours}
    since["window"] = max(since.values())
    return {"now": now} | {name: now - hours * 3600 for name, hours in since.items()}


def usage(policy: Policy, now: float) -> Select[str | None, Any, float, float]:
    """Per owner (None: the jobs without one): ``running`` jobs, ``day_seconds`` of device time
    within the quota's 24 h and ``fair_seconds`` within the fair-share window: the sums over the
    jobs with an attempt running or settled within the longer window."""
    return _usage(False).params(_usage_values(policy, now))


@dataclass(frozen=True)
class Usage:
    running: int = 0
    day_seconds: float = 0.0


class Ledger:
    """The owners' usage and quotas at one moment (``now`` on the queue's clock), read once per
    claim or per read of jobs; ``owners`` limits it to theirs. ``s``: a session, or a
    connection (the API's reads on its event loop)."""

    def __init__(
        self,
        s: Session | Connection,
        policy: Policy,
        now: float,
        owners: Sequence[str] | None = None,
    ) -> None:
        self.policy = policy
        self.now = now
        values: dict[str, Any] = _usage_values(policy, now)
        if owners is not None:
            values["owners"] = list(owners)
        rows = s.execute(_usage(owners is not None), values).all()
        self.usage = {
            row.owner: Usage(int(row.running or 0), float(row.day_seconds or 0.0)) for row in rows
        }
        self.fair = {row.owner: float(row.fair_seconds or 0.0) for row in rows}
        users = s.execute(_quotas(owners is not None), values).all()
        self.users: dict[str, Any] = {u.name: u for u in users}

    def held(self, owner: str | None) -> str | None:
        """Why no job of ``owner`` may be claimed now (disabled, or at a quota), or None."""
        if owner is None:
            return None
        user = self.users.get(owner)
        if user is not None and user.disabled:
            return f"user {owner} is disabled"
        used = self.usage.get(owner, Usage())
        jobs, jobs_from = _limit(
            user, "max_running_jobs", self.policy.max_running_jobs, "default_max_running_jobs"
        )
        if jobs is not None and used.running >= jobs:
            return (
                f"quota: {owner} runs {used.running} job{'' if used.running == 1 else 's'}, "
                f"the limit is {jobs} ({jobs_from})"
            )
        hours, hours_from = _limit(
            user,
            "max_device_hours_per_day",
            self.policy.device_hours_per_day,
            "default_device_hours_per_day",
        )
        if hours is not None and used.day_seconds >= hours * 3600:
            return (
                f"quota: {owner} used {used.day_seconds / 3600:.1f} of {hours:g} device-hours "
                f"in the last {QUOTA_HOURS:g} h ({hours_from})"
            )
        return None

    def blocked(self) -> list[str]:
        """The owners none of whose jobs may be claimed now."""
        owners = {o for o in self.usage if o is not None} | set(self.users)
        return sorted(o for o in owners if self.held(o) is not None)

    def takes(self) -> list[ColumnElement[bool]]:
        """What a job is that a claim may take now."""
        return _takes(self.now, self.blocked() or None)

    def order(self) -> Select[int]:
        """The ids of the jobs a claim may take now, in the order it takes them."""
        used = usage(self.policy, self.now).subquery()
        return (
            select(Job.id)
            .outerjoin(used, used.c.owner.is_not_distinct_from(Job.owner))
            .where(*self.takes())
            .order_by(
                Job.priority.desc(), func.coalesce(used.c.fair_seconds, 0.0).asc(), Job.id.asc()
            )
        )

    def places(self, s: Session | Connection) -> dict[int, int]:
        """Each job a claim may take now: how many jobs it takes before it (``order``'s
        ranking, made here from the usage already read instead of reading it again)."""
        blocked = self.blocked()
        values = {"now": self.now, **({"blocked": blocked} if blocked else {})}
        rows = s.execute(_takeable(bool(blocked)), values).all()
        ranked = sorted(rows, key=lambda r: (-r.priority, self.fair.get(r.owner, 0.0), r.id))
        return {row.id: i for i, row in enumerate(ranked)}


def _takes(now: Any, blocked: Any) -> list[ColumnElement[bool]]:
    """What a job is that a claim may take at ``now``, its owner not one of ``blocked`` (None:
    no owner is)."""
    takes = [claimable(now), Job.cancel_requested.is_(False)]
    if blocked is not None:
        takes.append(or_(Job.owner.is_(None), Job.owner.not_in(blocked)))
    return takes


@lru_cache(maxsize=2)
def _takeable(blocked: bool) -> Select[int, str | None, int]:
    """The jobs a claim may take (id, owner, priority), ``now`` and ``blocked`` parameters."""
    owners: Any = bindparam("blocked", expanding=True) if blocked else None
    return select(Job.id, Job.owner, Job.priority).where(
        *_takes(bindparam("now", type_=Float), owners)
    )


class Waiting(Protocol):
    """What :func:`why_held` reads of a job (a ``Job`` or a row of its columns)."""

    id: int
    state: str
    owner: str | None


def _limit(user: Any, name: str, default: Any, setting: str) -> tuple[Any, str]:
    """A user's quota: their own ``name``, else the service's default (its ``setting``), and
    the name of the one that applies."""
    own = getattr(user, name, None)
    return (own, name) if own is not None else (default, setting)


def why_held(
    s: Session | Connection, *, jobs: Iterable[Waiting], policy: Policy, now: float
) -> dict[int, str]:
    """Why each of ``jobs`` that is queued waits (the others are not in the answer): its owner is
    disabled or at a quota, or other jobs come first. Reads the usage once for all of them."""
    queued = [j for j in jobs if j.state == "queued"]
    if not queued:
        return {}
    ledger = Ledger(s, policy, now)
    reasons = {j.id: why for j in queued if (why := ledger.held(j.owner)) is not None}
    if len(reasons) < len(queued):
        place = ledger.places(s)
        for j in queued:
            ahead = place.get(j.id, 0)
            if j.id not in reasons and ahead:
                reasons[j.id] = (
                    f"priority: {ahead} queued job{' comes' if ahead == 1 else 's come'} first"
                )
    return reasons
