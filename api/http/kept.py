"""``GET /v1/pareto``'s kept responses: the cache of its JSON bytes per query, checked against the
fronts' revision, and the middleware that answers a query from it before FastAPI's routing.

A query string the route has parsed and validated before (``ParetoResponses.validated``) is
answered by ``KeptPareto`` as the route would answer it: the same read of the fronts' revision, the
same kept body (or 304), the same headers (``pareto_response``). What it skips is the routing and
the route's dependencies and parameter parsing, which were most of a kept response's cost in the
server (about 1.4 of 2.3 ms of CPU a request on a 2-core AMD EPYC, profiled under load). It sits
inside ``Guard``, so the Host and the token are checked first, as for every route. Everything
else goes on to the app: other paths and methods, a query string not validated yet, an
If-None-Match the route would refuse (over its 1,000 characters), and any failure of the read
(the route answers it again, with its error handlers).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from starlette.responses import Response

from api.http import schemas
from api.http.guard import App, Receive, Scope, Send
from api.http.queries.architectures import pareto
from api.http.queries.health import version
from api.runtime import fronts
from db.session import Database

PATH = "/v1/pareto"
MAX_IF_NONE_MATCH = 1000  # the route's Header(max_length=1000)

# dataset, teacher, cost, include_teacher
ParetoKey = tuple[str | None, str | None, schemas.Cost, bool]


class ParetoResponses:
    """The latest Pareto responses (their JSON bytes), per query, each under the fronts' revision
    it was computed at (``api.runtime.fronts.revision``). A query repeated while no front changed
    costs one read of that revision instead of the fronts' rows and their serialisation; any
    stored result raises the revision, so nothing older is served (several API processes each
    keep their own, checked against the same database). At most ``entries`` queries are kept
    (the least recently used goes); 0 keeps none."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._kept: OrderedDict[ParetoKey, tuple[int, bytes]] = OrderedDict()
        # raw query strings the route has parsed and validated, and the query each one means
        self._queries: OrderedDict[bytes, ParetoKey] = OrderedDict()
        self._lock = threading.Lock()  # the event loop's thread only today; cheap to keep safe

    def validated(self, query_string: bytes, key: ParetoKey) -> None:
        """The route parsed and validated ``query_string`` as ``key`` and answered it: the same
        bytes are then answered before the route (``KeptPareto``), without its parsing again.
        Up to 4 spellings a kept query on average are remembered (``4 * entries`` in all; the
        least recently validated go first)."""
        if not self.entries:
            return
        with self._lock:
            self._queries[query_string] = key
            self._queries.move_to_end(query_string)
            while len(self._queries) > 4 * self.entries:
                self._queries.popitem(last=False)

    def key_of(self, query_string: bytes) -> ParetoKey | None:
        """The query a raw query string means, if the route validated those bytes before."""
        with self._lock:
            return self._queries.get(query_string)

    def read(self, conn: Any, key: ParetoKey, known: str | None) -> tuple[str, bytes | None]:
        """The response's ETag and body for ``key``; the body is None when ``known`` (a client's
        If-None-Match) names the current one (a 304)."""
        revision = fronts.revision(conn)  # first: the fronts read below are at least this new
        tag = etag(revision)
        if known is not None:  # the weak comparison (RFC 9110): W/ aside, the same tag
            given = {t.strip().removeprefix("W/") for t in known.split(",")}
            if "*" in given or tag.removeprefix("W/") in given:
                return tag, None
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None and kept[0] == revision:
                self._kept.move_to_end(key)
                return tag, kept[1]
        dataset, teacher, cost, include_teacher = key
        body = (
            pareto(
                conn, dataset=dataset, teacher=teacher, cost=cost, include_teacher=include_teacher
            )
            .model_dump_json()
            .encode()
        )
        if self.entries:
            with self._lock:
                self._kept[key] = (revision, body)
                self._kept.move_to_end(key)
                while len(self._kept) > self.entries:
                    self._kept.popitem(last=False)
        return tag, body


def pareto_response(tag: str, body: bytes | None) -> Response:
    """``GET /v1/pareto``'s answer to what ``ParetoResponses.read`` returned (None: a 304)."""
    headers = {"ETag": tag, "Cache-Control": "no-cache"}  # browsers revalidate, then reuse
    if body is None:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


def etag(revision: int) -> str:
    """A weak validator (the same fronts, the same JSON's meaning): the service's version and
    the fronts' revision, so an upgraded service never revalidates an older body."""
    return f'W/"{version()}-{revision}"'


class KeptPareto:
    """The middleware that answers a validated ``GET /v1/pareto`` from ``kept`` (the module's
    doc says what it skips and what it leaves to the route)."""

    def __init__(self, app: App, *, kept: ParetoResponses, db: Database) -> None:
        self.app = app
        self.kept = kept
        self.db = db

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] == PATH:
            response = self._answer(scope)
            if response is not None:
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _answer(self, scope: Scope) -> Response | None:
        """The route's answer to a query string it validated before; None: the route's to give."""
        key = self.kept.key_of(scope.get("query_string", b""))
        if key is None:
            return None
        known = next((v for k, v in scope["headers"] if k == b"if-none-match"), None)
        if known is not None and len(known) > MAX_IF_NONE_MATCH:
            return None
        tag_known = known.decode("latin-1") if known is not None else None
        try:
            tag, body = self.db.loop_read(lambda conn: self.kept.read(conn, key, tag_known))
        except Exception:  # the route reads again and answers with its error handlers
            return None
        return pareto_response(tag, body)
