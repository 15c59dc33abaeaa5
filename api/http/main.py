"""The HTTP API (FastAPI, under /v1): one router per resource; routes are thin, ``queries`` does
the work.

Auth: with a token configured, every route but /v1/health needs ``Authorization: Bearer <token>``
(401 without it, 403 with a wrong one). Without a token the server binds 127.0.0.1 only
(``reskd serve`` refuses anything else).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.http import queries
from api.http.routes import architectures, jobs, sweeps
from api.runtime.settings import Settings
from api.runtime.store import open_queue
from api.runtime.sweeps import SweepNotFound
from db.session import Database
from distill.config import ConfigError, clean_loc


def _unprocessable(errors: list[dict[str, Any]]) -> JSONResponse:
    return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)


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


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    db = Database(settings.url)
    db.migrate()
    app = FastAPI(
        title="ResKD architecture-search service",
        version="1",
        description="Submit ResKD, search, fine-tune and distillation jobs; watch them; query the "
        "Pareto front of accuracy against MFLOPs.",
    )
    app.state.settings, app.state.db, app.state.queue = settings, db, open_queue(db)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(ConfigError, invalid_config)
    app.add_exception_handler(queries.NotFound, not_found)
    app.add_exception_handler(SweepNotFound, not_found)
    app.add_exception_handler(queries.Refused, refused)
    for router in (architectures.router, jobs.router, sweeps.router):
        app.include_router(router)
    return app
