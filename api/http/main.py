"""The HTTP API's app (FastAPI, under /v1). ``create_app`` migrates and opens the database and
the job queue, includes one router per resource (``routes/``, thin: ``queries/`` reads and submits,
``datasets/`` lists and keeps uploaded datasets, ``checkpoints`` checks an uploaded checkpoint),
mounts the dashboard and the offline API docs, answers the service's refusals with their HTTP
status (the handlers below), and puts the ``Guard`` (Host, token, origin, body limits, upload
media types, JSON depth and members, NUL) and the kept Pareto responses (``kept``) in front of
the routes.

Auth: with a bootstrap token configured, every route but /v1/health needs ``Authorization:
Bearer <token or API key>`` (401 without it, 403 with a wrong one); each route then declares who
may call it (``access``: read, write, owner, admin), and ``create_app`` refuses a /v1 route that
declares nothing. Without a token the server binds 127.0.0.1 only (``reskd serve`` refuses
anything else) and a request without a key is its local admin's.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.http import dashboard, storage
from api.http.access import RULES, rule_of
from api.http.errors import NotFound, Refused
from api.http.guard import Guard, Limits, Upload, host_names
from api.http.kept import KeptPareto, ParetoResponses
from api.http.routes import accounts, architectures, checkpoints, datasets, jobs, sweeps, usage
from api.http.streams import Streams
from api.runtime.accounts import Keyring
from api.runtime.fairshare import Policy
from api.runtime.queues import open_queue
from api.runtime.settings import Settings
from api.runtime.sweeps import SweepNotFound
from db.session import Database, DatabaseGone
from distill.config import ConfigError, clean_loc

log = logging.getLogger("reskd.api")


def _json_safe(value: Any) -> Any:
    """An echoed input as JSON can carry it: non-finite floats and invalid text as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_json_safe(k): _json_safe(v) for k, v in list(value.items())[:50]}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value[:50]]
    if value is None or isinstance(value, bool | int | float):
        return value
    return _json_safe(str(value))


def _unprocessable(errors: list[dict[str, Any]]) -> JSONResponse:
    return JSONResponse({"detail": _json_safe(errors)}, status_code=422)


def invalid_request(_: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422, with the union members' tags left out of each ``loc``."""
    assert isinstance(exc, RequestValidationError)
    keep = ("type", "loc", "msg", "input")
    return _unprocessable(
        [{k: e[k] for k in keep if k in e} | {"loc": clean_loc(e["loc"])} for e in exc.errors()]
    )


def invalid_config(request: Request, exc: Exception) -> JSONResponse:
    """A config that passed its fields' checks but not its own (``RunConfig.check``)."""
    assert isinstance(exc, ConfigError)
    inside = ["body", "config"] if request.url.path.startswith("/v1/jobs") else ["body"]
    return _unprocessable(
        [{"type": "value_error", "loc": [*inside, *e["loc"]], "msg": e["msg"]} for e in exc.errors]
    )


def not_found(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=404)


def refused(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=400)


async def not_allowed(request: Request, exc: Exception) -> Response:
    """405 with every method the path has (Starlette names only the first matching route's)."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code != 405:
        return await http_exception_handler(request, exc)
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, APIRoute) and route.path_regex.match(request.url.path):
            methods |= route.methods or set()
    return JSONResponse(
        {"detail": "Method Not Allowed"}, 405, headers={"Allow": ", ".join(sorted(methods))}
    )


def unavailable(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=503)


def unexpected(request: Request, exc: Exception) -> JSONResponse:
    """A bug: the traceback goes to the server's log, the client gets no server paths."""
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal error; the server's log has the details"}, 500)


def _openapi(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """The schema as this service behaves: without a token no route asks for one."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        if settings.token is None:
            for item in schema["paths"].values():
                for op in item.values():
                    op.get("responses", {}).pop("401", None)
        else:  # a bearer token or API key on every route but the public ones
            schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
            schemes["bearer"] = {"type": "http", "scheme": "bearer"}
            for item in schema["paths"].values():
                for op in item.values():
                    if op.get("x-access") != "public":
                        op["security"] = [{"bearer": []}]
        app.openapi_schema = schema
    return app.openapi_schema


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    db = Database(settings.url, write_wait=storage.REQUEST_WRITE_WAIT, writers=storage.WRITERS)
    db.migrate()
    app = FastAPI(
        docs_url=None,  # served below from the package's own copies: they work offline
        redoc_url=None,
        title="ResKD architecture-search service",
        version="1",
        description="Submit ResKD, search, fine-tune and distillation jobs; watch them; query the "
        "Pareto front of accuracy against MFLOPs. /v1/health, /docs, /redoc and /openapi.json "
        "need no token (they hold no data); every other route does when one is set.",
    )
    queue = open_queue(db, max_attempts=settings.max_attempts, policy=Policy.of(settings))
    app.state.settings, app.state.db, app.state.queue = settings, db, queue
    app.state.streams = Streams(settings)
    app.state.pareto = ParetoResponses(settings.pareto_cache_entries)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(ConfigError, invalid_config)
    app.add_exception_handler(NotFound, not_found)
    app.add_exception_handler(SweepNotFound, not_found)
    app.add_exception_handler(Refused, refused)
    app.add_exception_handler(DatabaseGone, unavailable)
    app.add_exception_handler(StarletteHTTPException, not_allowed)
    app.add_exception_handler(Exception, unexpected)
    storage.install(app, otherwise=unexpected)  # 503 and 507: a lock, a full disk
    routers = (architectures.router, datasets.router, jobs.router, sweeps.router, accounts.router)
    for router in routers:
        app.include_router(router)
    app.include_router(checkpoints.router())
    app.include_router(usage.router)
    dashboard.mount(app)
    _every_route_has_a_rule(app)
    app.openapi = lambda: _openapi(app, settings)  # type: ignore[method-assign]
    hosts = host_names(settings.host, settings.allowed_hosts)
    limits = Limits(
        max_body=settings.max_body_bytes,
        uploads={
            "/v1/checkpoints": Upload(settings.max_checkpoint_bytes, checkpoints.MEDIA_TYPES),
            "/v1/datasets": Upload(settings.max_dataset_bytes, datasets.MEDIA_TYPES),
        },
        max_json_depth=settings.max_json_depth,
        max_json_members=settings.max_json_members,
    )
    # the last added runs first: Guard, then the kept Pareto responses, then the routes
    app.add_middleware(KeptPareto, kept=app.state.pareto, db=db)
    app.state.keyring = Keyring(db, bootstrap=settings.token)
    app.add_middleware(Guard, keyring=app.state.keyring, hosts=hosts, limits=limits)
    return app


def _every_route_has_a_rule(app: FastAPI) -> None:
    """A /v1 route without an access rule would be open to every role: refuse to start."""
    for route in app.routes:
        if not isinstance(route, APIRoute) or not route.path.startswith("/v1"):
            continue
        if rule_of(route) not in RULES:
            raise RuntimeError(
                f"{sorted(route.methods or ())} {route.path} declares no access rule "
                f"(api.http.access.access: one of {', '.join(RULES)})"
            )
