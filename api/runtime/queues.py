"""Which job queue serves a database: the one place that names an implementation of
:class:`api.runtime.store.JobQueue` (the contract stays free of its implementations)."""

from __future__ import annotations

import time

from api.runtime.fairshare import UNLIMITED, Policy
from api.runtime.sql import SqlQueue
from api.runtime.store import MAX_ATTEMPTS, Clock, JobQueue
from db.session import Database


def open_queue(
    db: Database,
    *,
    clock: Clock = time.time,
    max_attempts: int = MAX_ATTEMPTS,
    policy: Policy = UNLIMITED,
) -> JobQueue:
    """The queue for ``db`` (one SQL implementation serves SQLite and PostgreSQL); its leases
    and device time run on ``clock``; a job whose worker died ``max_attempts`` times fails when
    it is next claimed; ``policy`` holds the service's default quotas and fair-share window."""
    return SqlQueue(db, clock=clock, max_attempts=max_attempts, policy=policy)
