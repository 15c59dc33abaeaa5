"""Identical reads that wait on the event loop at the same moment share one read
(``api.http.deps.SharedReads``); a read that comes later, or another read, reads anew; a failure
reaches every sharer; a sharer whose first went before reading reads alone."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from api.http.deps import SharedReads


class Reads:
    """A read that counts its calls and answers with their number."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.calls = 0
        self.fail = fail

    def __call__(self) -> int:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return self.calls


def test_reads_waiting_together_share_one_and_a_later_one_reads_anew() -> None:
    shared, jobs, other = SharedReads(), Reads(), Reads()

    async def burst() -> list[Any]:
        return await asyncio.gather(
            *(shared.read(("jobs", "admin"), jobs) for _ in range(5)),
            shared.read(("job", "admin", 7), other),
        )

    assert asyncio.run(burst()) == [1, 1, 1, 1, 1, 1]
    assert (jobs.calls, other.calls) == (1, 1)
    assert asyncio.run(shared.read(("jobs", "admin"), jobs)) == 2  # after them: read again


def test_a_failed_read_fails_every_sharer() -> None:
    shared, failing = SharedReads(), Reads(fail=LookupError("job 7 not found"))

    async def burst() -> list[Any]:
        reads = (shared.read("job 7", failing) for _ in range(3))
        return await asyncio.gather(*reads, return_exceptions=True)

    answers = asyncio.run(burst())
    assert [str(a) for a in answers] == ["job 7 not found"] * 3
    assert failing.calls == 1


def test_a_sharer_reads_alone_when_the_first_went_before_reading() -> None:
    shared, jobs = SharedReads(), Reads()

    async def first_goes() -> int:
        first = asyncio.ensure_future(shared.read("jobs", jobs))
        second = asyncio.ensure_future(shared.read("jobs", jobs))
        await asyncio.sleep(0)  # the first waits for sharers, the second has joined it
        first.cancel()  # its client went
        with pytest.raises(asyncio.CancelledError):
            await first
        return await second

    assert asyncio.run(first_goes()) == 1
    assert jobs.calls == 1
