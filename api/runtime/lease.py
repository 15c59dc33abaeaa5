"""The one lease loop: hold a leased key of the job store (a stage being computed, a sweep being
advanced) for the length of a ``with`` block, waiting while another owner holds it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from api.runtime.store import Clock, JobQueue


class Busy(TimeoutError):
    """Another owner held the key for longer than the wait allowed."""


@contextmanager
def held(
    queue: JobQueue,
    key: str,
    *,
    owner: str,
    lease_seconds: float,
    wait: float | None = None,
    poll: float = 0.1,
    waiting: Callable[[], None] = lambda: None,
    clock: Clock = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[None]:
    """Hold ``key`` as ``owner``; ``waiting()`` runs between tries (it may raise to give up);
    :class:`Busy` after ``wait`` seconds (None: wait as long as it takes). ``clock`` and
    ``sleep`` measure and spend the wait (a test passes a fake clock's, as to the queue)."""
    deadline = None if wait is None else clock() + wait
    while not queue.lock_stage(key=key, worker=owner, lease_seconds=lease_seconds):
        if deadline is not None and clock() > deadline:
            raise Busy(f"{key}: busy, try again")
        waiting()
        sleep(poll)
    try:
        yield
    finally:
        queue.unlock_stage(key=key, worker=owner)
