"""What every request passes before a route sees it (one pure ASGI middleware, so nothing of the
body is read before the request is allowed):

1. the Host header: only the names the service is bound to (a DNS-rebinding page in a browser
   cannot reach a token-less service on 127.0.0.1 through a name of its own); 421 otherwise;
2. the token: with one configured, every route but /v1/health and the API's docs needs
   ``Authorization: Bearer <token>`` (401 without, 403 wrong), checked before the body is parsed;
3. the body's size: a Content-Length over the route's limit is a 413 before anything is read;
   a body streamed without one is counted as it arrives (413 once it passes the limit).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

# what holds no data: the health probe, the docs, the dashboard's page and its static files
PUBLIC = ("/", "/v1/health", "/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect")
PUBLIC_PREFIXES = ("/docs/", "/static/")
LOCAL_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")


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


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` inside the app; FastAPI passes HTTP exceptions on (a 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body exceeds {limit} bytes")


class Guard:
    def __init__(
        self,
        app: App,
        *,
        token: str | None,
        hosts: frozenset[str] | None,
        max_body: int,
        limits: dict[str, int],
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.limits = limits  # path -> its own body limit
        self.token = token.encode() if token is not None else None
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
        if self.hosts is not None:
            host = _host_of(headers.get("host", b"").decode("latin-1"))
            if host not in self.hosts and f"[{host}]" not in self.hosts:
                await _answer(send, 421, "unknown Host header; the service answers as its own name")
                return
        path: str = scope.get("path", "")
        if self.token is not None and not (path in PUBLIC or path.startswith(PUBLIC_PREFIXES)):
            auth: bytes = headers.get("authorization", b"")
            scheme, _, given = auth.partition(b" ")
            if scheme.lower() != b"bearer" or not given.strip():
                await _answer(
                    send, 401, "a bearer token is required", {"www-authenticate": "Bearer"}
                )
                return
            if not hmac.compare_digest(given.strip(), self.token):  # bytes: any header is safe
                await _answer(send, 403, "wrong token")
                return
        limit = self.limits.get(path.rstrip("/"), self.max_body)
        length = headers.get("content-length", b"0")
        if not length.isdigit():
            await _answer(send, 400, "Content-Length must be a decimal byte count")
            return
        if int(length) > limit:
            await _answer(send, 413, f"the request body exceeds {limit} bytes")
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


async def _answer(
    send: Send, status: int, detail: str, extra: dict[str, str] | None = None
) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
