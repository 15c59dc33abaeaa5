"""Server-Sent Events of jobs, on the event loop: no thread and no database connection is held
while a stream waits.

One watcher task per watched job reads the job (in a worker thread, a few milliseconds, its
session closed at once) every ``stream_poll_seconds`` while anybody watches it, and wakes that
job's streams when it changed; 200 streams of one job cost one read per poll, not 200. A stream
sends a comment line as keep-alive every ``keepalive_seconds`` (proxies close silent
connections), ends after the job's terminal event, and stops when its client goes (Starlette
cancels it on ``http.disconnect``). Each client address may hold ``max_streams_per_client``
streams (429 beyond) and the service ``max_streams`` in all (503 beyond).

When the server is told to stop (SIGTERM), ``close_soon`` ends every stream at once, without an
``end`` event (its job has not ended: a client reconnects, to the restarted service), so that
the server's graceful shutdown, which waits for open responses, is not held by a stream whose
job runs for hours.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import anyio

from api.runtime.settings import Settings

Read = Callable[[int], tuple[str, bool]]  # job id -> (the job as JSON, whether it has ended)


class TooManyStreams(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


@dataclass
class Ticket:
    """One admitted stream's place; released once, by the stream's end or the response's."""

    streams: Streams
    client: str
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.streams._release(self.client)


@dataclass
class _Watch:
    text: str | None = None
    version: int = 0
    ended: bool = False
    subscribers: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


class Streams:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.per_client: Counter[str] = Counter()
        self.watches: dict[int, _Watch] = {}
        self.checks: dict[int, asyncio.Future[None]] = {}
        self.closing = False
        self.loop: asyncio.AbstractEventLoop | None = None  # the loop the streams run on

    def close_soon(self) -> None:
        """End every stream (the server stops); callable from any thread or a signal handler."""
        self.closing = True
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._wake_all)

    def _wake_all(self) -> None:
        for watch in list(self.watches.values()):
            watch.wake()

    async def exists(self, job_id: int, check: Callable[[int], None]) -> None:
        """Raise what ``check`` raises (a 404) unless the job exists. A job that is watched now
        exists; concurrent checks of one job share one read, so a burst of 200 streams costs one
        thread, not 200 queued in front of every other request."""
        watch = self.watches.get(job_id)
        if watch is not None and watch.version > 0 and not watch.ended:
            return
        pending = self.checks.get(job_id)
        if pending is None:
            pending = self.checks[job_id] = asyncio.ensure_future(
                anyio.to_thread.run_sync(check, job_id)
            )
            pending.add_done_callback(lambda _: self.checks.pop(job_id, None))
        await asyncio.shield(pending)

    @property
    def open(self) -> int:
        return sum(self.per_client.values())

    def admit(self, client: str) -> Ticket:
        if self.per_client[client] >= self.settings.max_streams_per_client:
            raise TooManyStreams(
                429,
                f"this client holds {self.per_client[client]} event streams, the most allowed "
                "(RESKD_MAX_STREAMS_PER_CLIENT); close one first",
            )
        if self.open >= self.settings.max_streams:
            raise TooManyStreams(503, "the service holds its most event streams; retry later")
        if self.closing:
            raise TooManyStreams(503, "the service is shutting down; retry later")
        self.per_client[client] += 1
        return Ticket(self, client)

    def _release(self, client: str) -> None:
        self.per_client[client] -= 1
        if self.per_client[client] <= 0:
            del self.per_client[client]

    async def events(self, job_id: int, ticket: Ticket, read: Read) -> AsyncIterator[str]:
        """The stream of an admitted client: the job whenever it changes, then ``end``; cut
        short, without ``end``, when the server stops."""
        self.loop = asyncio.get_running_loop()
        watch = self.watches.get(job_id)
        if watch is None or watch.task is None or watch.task.done():
            watch = self.watches[job_id] = _Watch()
            watch.task = asyncio.create_task(self._poll(job_id, watch, read))
        watch.subscribers += 1
        seen, last = 0, time.monotonic()
        keepalive = self.settings.keepalive_seconds
        try:
            while True:
                changed = watch.changed  # taken before looking: no wake-up is missed
                if watch.version > seen and watch.text is not None:
                    seen = watch.version
                    last = time.monotonic()
                    yield f"event: job\ndata: {watch.text}\n\n"
                if watch.ended:
                    yield "event: end\ndata: {}\n\n"
                    return
                if self.closing:
                    return
                try:
                    await asyncio.wait_for(changed.wait(), keepalive - (time.monotonic() - last))
                except TimeoutError:
                    last = time.monotonic()
                    yield ": keep-alive\n\n"
        finally:
            watch.subscribers -= 1
            ticket.release()

    async def _poll(self, job_id: int, watch: _Watch, read: Read) -> None:
        try:
            while watch.subscribers > 0 or watch.version == 0:
                text, ended = await anyio.to_thread.run_sync(read, job_id)
                if text != watch.text:
                    watch.text, watch.version = text, watch.version + 1
                    watch.wake()
                if ended:
                    break
                await asyncio.sleep(self.settings.stream_poll_seconds)
        except Exception as exc:  # the database went away: end the streams, say why
            watch.text, watch.version = json.dumps({"error": str(exc)[:500]}), watch.version + 1
        finally:
            watch.ended = True
            watch.wake()
            if self.watches.get(job_id) is watch:
                del self.watches[job_id]
