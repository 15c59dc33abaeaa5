"""uvicorn's HTTP protocol (httptools) with the bounds it lacks, so that idle or half-sent
connections cannot hold the service's sockets and file descriptors:

- at most ``max_connections`` open connections: one past it is answered 503 and closed at once
  (uvicorn's ``limit_concurrency``, set to the same number, answers the requests of the last
  ones 503 too);
- a request's headers must arrive within ``request_header_seconds`` of the connection opening
  or of the request's first byte (a 408, then closed), and hold at most ``max_header_bytes``
  (a 431);
- a request body silent for ``request_idle_seconds`` closes its connection (while the app has
  paused reading, the silence is the service's own and does not count).

Between requests uvicorn's own ``timeout_keep_alive`` closes an idle connection. uvicorn has no
header timeout, and its ``h11_max_incomplete_event_size`` bounds h11's parser only; httptools
stays the parser (it holds event streams' latency down, see pyproject.toml), bounded here.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

REASONS = {
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


@dataclass(frozen=True)
class Bounds:
    max_connections: int
    header_seconds: float
    idle_seconds: float
    max_header_bytes: int


class BoundedHttp(HttpToolsProtocol):
    bounds: ClassVar[Bounds]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deadline: asyncio.TimerHandle | None = None
        self.head_bytes = 0  # received since the last request ended (its headers, so far)
        self.in_body = False  # the headers are in, the body is not

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        most = self.bounds.max_connections
        if len(self.connections) > most:
            self._answer(503, f"the service holds its most connections ({most}); retry later")
            return
        self._arm(self.bounds.header_seconds)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.in_body:
            self._arm(self.bounds.idle_seconds)
        else:  # httptools holds a header's bytes until it ends: counted as they come
            self.head_bytes += len(data)
        super().data_received(data)
        most = self.bounds.max_header_bytes
        if not self.in_body and self.head_bytes > most and not self.transport.is_closing():
            self._answer(431, f"the request line and headers exceed {most} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_body = False
        if self.deadline is None:  # a later request of a kept-alive connection
            self._arm(self.bounds.header_seconds)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        self.in_body = True
        self._arm(self.bounds.idle_seconds)

    def on_message_complete(self) -> None:
        self.head_bytes, self.in_body = 0, False
        self._disarm()
        super().on_message_complete()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self.deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _expired(self) -> None:
        self.deadline = None
        if self.transport.is_closing():
            return
        if self.flow.read_paused:  # the app reads no more now: not the client's silence
            self._arm(self.bounds.idle_seconds)
        elif self.in_body:
            self.transport.close()  # the app sees the client gone
        else:
            seconds = f"{self.bounds.header_seconds:g} s"
            self._answer(408, f"the request's headers did not arrive within {seconds}")

    def _answer(self, status: int, message: str) -> None:
        body = message.encode()
        head = (
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n"
        ) % (status, REASONS[status], len(body))
        self.transport.write(head + body)
        self.transport.close()


def bounded_protocol(bounds: Bounds) -> type[asyncio.Protocol]:
    """The protocol class uvicorn's ``http`` option takes, under ``bounds``."""
    return type("BoundedHttp", (BoundedHttp,), {"bounds": bounds})
