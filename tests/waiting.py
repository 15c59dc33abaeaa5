"""How tests wait: on a condition (:func:`wait_until`), on a line a process prints
(:class:`Lines`), or on a clock they advance themselves (:class:`FakeClock`); never on a bare
``sleep`` that hopes something happened meanwhile."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import IO, TypeVar

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T | None],
    *,
    timeout: float,
    what: str | Callable[[], str],
    every: float = 0.1,
) -> T:
    """``condition()``'s first truthy value, asked every ``every`` seconds; :class:`TimeoutError`
    naming ``what`` (or ``what()``: the state worth reading then) after ``timeout`` seconds.
    The timeout only bounds a failure: a passing test waits for the event, not for the time."""
    deadline = time.monotonic() + timeout
    while True:
        if value := condition():
            return value
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            raise TimeoutError(f"not within {timeout:g} s: {said}")
        time.sleep(every)


class Lines:
    """The lines a process writes to ``stream``, read as they come (a daemon thread), so a test
    can wait for one (``wait_for``) while the process runs on."""

    def __init__(self, stream: IO[str]) -> None:
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.seen.append(line.rstrip("\n"))

    def wait_for(self, text: str, *, timeout: float) -> str:
        """The first line that contains ``text``."""
        return wait_until(
            lambda: next((line for line in self.seen if text in line), None),
            timeout=timeout,
            what=lambda: f"a line with {text!r}; got {self.seen[-20:]}",
        )


class FakeClock:
    """A clock (``time.time``'s interface) that moves only when ``advance`` (or ``sleep``) is
    called: what leases and waits measure runs out at once, and exactly when the test says."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    sleep = advance
