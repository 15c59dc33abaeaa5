"""A stage observer for tests: it keeps what each epoch reports (what a worker stores)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any


class Recording:
    """Every epoch's record, where the run says it resumed from and its figures beyond the
    record (``extra``: phase, peak memory, a search's expected MFLOPs)."""

    def __init__(self) -> None:
        self.records: list[Any] = []
        self.resumed_from: list[int] = []
        self.extra: list[dict[str, Any]] = []

    def exclusive(self, kind: str, key: str) -> AbstractContextManager[None]:
        return nullcontext()

    def stage_started(self, kind: str, key: str, name: str) -> None: ...

    def stage_reused(self, kind: str, key: str, name: str) -> None: ...

    def stage_finished(self, kind: str, key: str, seconds: float) -> None: ...

    def epoch(
        self, record: Any, total: int, resumed_from: int, extra: dict[str, Any] | None = None
    ) -> None:
        self.records.append(record)
        self.resumed_from.append(resumed_from)
        self.extra.append(extra or {})

    def check(self) -> None: ...

    def batch(self, *args: Any, **kwargs: Any) -> None: ...
