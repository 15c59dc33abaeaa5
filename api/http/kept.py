"""``GET /v1/pareto`` answered from the API's kept responses before FastAPI's routing.

A query string the route has parsed and validated before (``ParetoResponses.validated``) is
answered here, as the route would answer it: the same read of the fronts' revision, the same kept
body (or 304), the same headers (``queries.pareto_response``). What it skips is the routing and
the route's dependencies and parameter parsing, which were most of a kept response's cost in the
server (about 1.4 of 2.3 ms of CPU a request on a 2-core AMD EPYC, profiled under load). It sits
inside ``Guard``, so the Host and the token are checked first, as for every route. Everything
else goes on to the app: other paths and methods, a query string not validated yet, an
If-None-Match the route would refuse (over its 1,000 characters), and any failure of the read
(the route answers it again, with its error handlers).
"""

from __future__ import annotations

from starlette.responses import Response

from api.http import queries
from api.http.guard import App, Receive, Scope, Send
from db.session import Database

PATH = "/v1/pareto"
MAX_IF_NONE_MATCH = 1000  # the route's Header(max_length=1000)


class KeptPareto:
    def __init__(self, app: App, *, kept: queries.ParetoResponses, db: Database) -> None:
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
        return queries.pareto_response(tag, body)
