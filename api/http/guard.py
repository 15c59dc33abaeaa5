"""What every request passes before a route sees it (one pure ASGI middleware, so nothing of the
body is read before the request is allowed):

1. the Host header: only the names the service is bound to (a DNS-rebinding page in a browser
   cannot reach a token-less service on 127.0.0.1 through a name of its own); 421 otherwise;
2. the credential: ``Authorization: Bearer <token or API key>`` becomes the request's
   ``Principal`` (``request.state.principal``; a key is looked up off the event loop, and kept a
   few seconds). With a bootstrap token configured every route but /v1/health and the API's docs
   needs one (401 without, 403 wrong, revoked, expired or of a disabled user); a token-less
   service takes a request without one as the local admin. Checked before the body is parsed;
   what each principal may do is each route's rule (``access``);
3. the origin: a request that changes state (POST, PUT, PATCH, DELETE) from another site's page
   is a 403: its ``Origin`` is not the service's own (the Host it was sent to) or its
   ``Sec-Fetch-Site`` says ``cross-site``. A browser sends both; the CLI and scripts send
   neither, and pass. A token-less service is so no target of cross-site requests;
4. NUL in the path or a query parameter of a GET, HEAD or POST (the methods the routes take;
   any other is the app's 405): a 422 naming it (``inputs``);
5. the body's size: a Content-Length over the route's limit is a 413 before anything is read;
   a body streamed without one is counted as it arrives (413 once it passes the limit);
6. an upload (``Upload``, a POST) only as one of its media types, ``application/octet-stream``
   first (415 otherwise: a form or ``text/plain``, which a foreign page may send without asking,
   never);
7. a POST's JSON body, read whole (it is small), only within the limits on its nesting and
   members and without NUL in its strings (``inputs``), then handed on.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from api.http.inputs import Problem, json_problem, query_problem
from api.runtime.accounts import Keyring

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

# what holds no data: the health probe, the docs, the dashboard's page and its static files
PUBLIC = ("/", "/v1/health", "/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect")
PUBLIC_PREFIXES = ("/docs/", "/static/")
LOCAL_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")
CHANGING = ("POST", "PUT", "PATCH", "DELETE")
# the methods the routes take (bodies: POST only); any other is the app's 405, whatever it holds
ROUTED = ("GET", "HEAD", "POST", "PATCH", "DELETE")


def host_names(bound: str, extra: Iterable[str]) -> frozenset[str] | None:
    """The Host names to accept; None accepts any (bound to every interface with no list)."""
    names = set(extra)
    if "*" in names:
        return None
    if bound in ("0.0.0.0", "::", ""):
        return frozenset(names) if names else None
    return frozenset({bound, *LOCAL_NAMES, *names})


def _host_of(header: str) -> str:
    if header.startswith("["):  # [::1]:8321
        return header.split("]")[0] + "]"
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


@dataclass(frozen=True)
class Upload:
    """A route whose body is a file: its own size limit and the media types it is sent as."""

    limit: int
    media: tuple[str, ...] = ("application/octet-stream",)


@dataclass(frozen=True)
class Limits:
    max_body: int  # of any other route
    uploads: dict[str, Upload] = field(default_factory=dict)  # path -> its upload
    max_json_depth: int = 32
    max_json_members: int = 20_000


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` inside the app; FastAPI passes HTTP exceptions on (a 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body exceeds {limit} bytes")


def cross_site(method: str, headers: dict[str, bytes]) -> str | None:
    """Why a request is another site's (a 403), or None."""
    if method not in CHANGING:
        return None
    if headers.get("sec-fetch-site", b"").lower() == b"cross-site":
        return "a cross-site request (Sec-Fetch-Site: cross-site) may not change anything"
    origin = headers.get("origin")
    if origin is None:
        return None
    given = origin.decode("latin-1")
    own = headers.get("host", b"").decode("latin-1").lower()
    if given == "null" or urlsplit(given).netloc.lower() != own:
        return f"a request from the origin {given} may not change anything here (Host {own})"
    return None


def media_type(headers: dict[str, bytes]) -> str:
    return headers.get("content-type", b"").decode("latin-1").split(";")[0].strip().lower()


class Guard:
    def __init__(
        self, app: App, *, keyring: Keyring, hosts: frozenset[str] | None, limits: Limits
    ) -> None:
        self.app = app
        self.limits = limits
        self.keyring = keyring
        self.hosts = hosts

    def wrong_host(self, headers: dict[str, bytes]) -> Problem | None:
        """Step 1."""
        if self.hosts is not None:
            host = _host_of(headers.get("host", b"").decode("latin-1"))
            if host not in self.hosts and f"[{host}]" not in self.hosts:
                return Problem(421, "unknown Host header; the service answers as its own name")
        return None

    async def authenticate(self, scope: Scope, headers: dict[str, bytes]) -> Problem | None:
        """Step 2: the request's principal into its state, or why it has none."""
        path: str = scope.get("path", "")
        public = path in PUBLIC or path.startswith(PUBLIC_PREFIXES)
        auth = headers.get("authorization")
        if auth is None:
            if self.keyring.required:
                return None if public else Problem(401, "a bearer token is required")
            scope.setdefault("state", {})["principal"] = self.keyring.anonymous()
            return None
        scheme, _, given = auth.partition(b" ")
        if scheme.lower() != b"bearer" or not given.strip():
            return Problem(401, "a bearer token is required")
        given = given.strip()
        if self.keyring.needs_lookup(given):
            who = await run_in_threadpool(self.keyring.authenticate, given)
        else:
            who = self.keyring.authenticate(given)
        if isinstance(who, str):
            if not self.keyring.required:  # an open service: the local admin, as without one
                scope.setdefault("state", {})["principal"] = self.keyring.anonymous()
                return None
            return None if public else Problem(403, who)
        scope.setdefault("state", {})["principal"] = who
        return None

    def refusal(self, scope: Scope, headers: dict[str, bytes]) -> Problem | None:
        """What the request's line and headers alone refuse (steps 3-6)."""
        path: str = scope.get("path", "")
        if why := cross_site(scope.get("method", ""), headers):
            return Problem(403, why)
        routed = scope.get("method") in ROUTED
        if routed and (problem := query_problem(scope.get("query_string", b""), path)):
            return problem
        upload = self.limits.uploads.get(path.rstrip("/"))
        limit = upload.limit if upload else self.limits.max_body
        length = headers.get("content-length", b"0")
        if not length.isdigit():
            return Problem(400, "Content-Length must be a decimal byte count")
        if int(length) > limit:
            return Problem(413, f"the request body exceeds {limit} bytes")
        if upload and scope.get("method") == "POST" and media_type(headers) not in upload.media:
            sent = media_type(headers) or "no Content-Type"
            return Problem(
                415, f"body: send the file as Content-Type: {upload.media[0]} (not {sent})"
            )
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
        problem = (
            self.wrong_host(headers)
            or await self.authenticate(scope, headers)
            or self.refusal(scope, headers)
        )
        if problem:
            await _answer(send, problem)
            return
        path: str = scope.get("path", "")
        upload = self.limits.uploads.get(path.rstrip("/"))
        limit = upload.limit if upload else self.limits.max_body
        if upload is None and scope.get("method") == "POST" and _json(headers):
            await self._json_body(scope, receive, send, limit)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)

    async def _json_body(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        """Read the body whole, check it (step 7), then hand it on as one message."""
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                await _answer(send, Problem(413, f"the request body exceeds {limit} bytes"))
                return
            more = message.get("more_body", False)
        body = b"".join(chunks)
        depth, members = self.limits.max_json_depth, self.limits.max_json_members
        if problem := json_problem(body, max_depth=depth, max_members=members):
            await _answer(send, problem)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # the disconnect, once the response is sent
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def _json(headers: dict[str, bytes]) -> bool:
    """Whether FastAPI reads the body as JSON: no Content-Type, or a JSON one."""
    kind = media_type(headers)
    return kind == "" or kind == "application/json" or kind.endswith("+json")


async def _answer(send: Send, problem: Problem) -> None:
    body = json.dumps({"detail": problem.detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if problem.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": problem.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
