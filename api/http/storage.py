"""The service's answers to storage it cannot use: a database lock or pool connection not given
in time is a 503 with ``Retry-After`` (the request may simply be repeated), a full disk a 507, a
read-only or unwritable one a 503, each naming the errno (``api.runtime.storage`` tells them
apart); anything else is left to the handler of bugs (a 500)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from api.runtime.storage import busy, storage_fault
from db.session import DatabaseBusy

REQUEST_WRITE_WAIT = 5.0  # seconds a request's write waits for SQLite's lock or a connection
WRITERS = 8  # requests that may wait for the write lock at once (of the API's 40 threads)
RETRY_AFTER = "5"

log = logging.getLogger("reskd.api")
Handler = Callable[[Request, Exception], JSONResponse]


def answer(exc: Exception) -> JSONResponse | None:
    """The answer to a storage fault or a lock not given in time; None for anything else."""
    if isinstance(exc, PoolTimeout) or busy(exc):
        return JSONResponse(
            {"detail": "the database is busy (a lock or a connection was not free in time); "
             "retry later"},
            status_code=503,
            headers={"Retry-After": RETRY_AFTER},
        )  # fmt: skip
    fault = storage_fault(exc)
    if fault is None:
        return None
    log.error("storage fault: %s", fault, exc_info=exc)
    return JSONResponse({"detail": str(fault)}, status_code=507 if fault.full else 503)


def install(app: FastAPI, *, otherwise: Handler) -> None:
    """Answer storage faults in ``app``; ``otherwise`` answers the other errors of their
    classes (database errors and ``OSError`` that are bugs)."""

    def handle(request: Request, exc: Exception) -> JSONResponse:
        return answer(exc) or otherwise(request, exc)

    for kind in (DBAPIError, PoolTimeout, DatabaseBusy, OSError):
        app.add_exception_handler(kind, handle)
