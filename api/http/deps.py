"""Dependencies of the routes, as named aliases (``SessionDep``, ``QueueDep``, ...): one place that
knows where the app keeps its database, queue and settings, so tests can override them."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.runtime.settings import Settings
from api.runtime.store import JobQueue
from db.session import Database

bearer = HTTPBearer(auto_error=False)
OWNER = f"api:{os.getpid()}"  # holds a sweep's lock while a request advances it


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def get_queue(request: Request) -> JobQueue:
    queue: JobQueue = request.app.state.queue
    return queue


def get_session(db: Annotated[Database, Depends(get_db)]) -> Iterator[Session]:
    with db.session(readonly=True) as s:  # routes that write go through the queue
        yield s


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_db)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]
SessionDep = Annotated[Session, Depends(get_session)]


def authorize(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """With a token configured, every route but health needs ``Authorization: Bearer <token>``."""
    if settings.token is None:
        return
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "a bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not secrets.compare_digest(credentials.credentials, settings.token):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "wrong token")


AUTH = [Depends(authorize)]
