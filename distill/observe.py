"""Who is watching a run: a :class:`StageObserver` receives stage starts, reuses and ends (from
``distill.stages.StageStore``), every epoch's record and, between batches, the progress so far
and the chance to stop the run (a cancelled job), through the training loop's ``Observed``
callback (``distill.callbacks``). It also serialises work on one stage key across processes
(``exclusive``). Library code reads the current observer from a context variable set by
``observing``, so nothing passes it through every call; without one, runs are unobserved.

The service's workers (``api.runtime.worker``) install one that writes progress to the database,
holds the stage lock there and raises :class:`Cancelled` when the job is cancelled.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from typing import Any, Protocol


class Cancelled(Exception):
    """Raised inside a run when its job was cancelled."""


class StageObserver(Protocol):
    def exclusive(self, kind: str, key: str) -> AbstractContextManager[None]:
        """Held while a stage is checked and computed: no two workers compute one key at once."""
        ...

    def stage_started(self, kind: str, key: str, name: str) -> None: ...

    def stage_reused(self, kind: str, key: str, name: str) -> None: ...

    def stage_finished(self, kind: str, key: str, seconds: float) -> None: ...

    def epoch(
        self, record: Any, total: int, resumed_from: int, extra: dict[str, Any] | None = None
    ) -> None:
        """After each epoch of the running stage (an ``EpochRecord``; ``extra``: ``phase``, the
        training's name within the stage, and the task's own figures, such as a search's
        ``expected_mflops``)."""
        ...

    def check(self) -> None:
        """Between batches: raise :class:`Cancelled` to stop."""
        ...

    def batch(
        self,
        epoch: int,
        batch: int,
        batches: int,
        loss: float,
        epochs: int,
        phase: str | None = None,
    ) -> None:
        """Between batches: ``batch`` of ``batches`` done in 0-based ``epoch`` of ``phase`` (the
        training's name within the stage; a long epoch, such as a search's, shows progress
        before it ends; observers throttle their writes)."""
        ...


_CURRENT: ContextVar[StageObserver | None] = ContextVar("stage_observer", default=None)


def current() -> StageObserver | None:
    return _CURRENT.get()


@contextmanager
def observing(observer: StageObserver) -> Iterator[StageObserver]:
    token = _CURRENT.set(observer)
    try:
        yield observer
    finally:
        _CURRENT.reset(token)


def exclusive(kind: str, key: str) -> AbstractContextManager[None]:
    observer = current()
    return observer.exclusive(kind, key) if observer is not None else nullcontext()
