"""``GET /v1/health``: the database's kind, the queue's counts, the service's version, and
whether the service can store what it makes: a few bytes written, flushed and removed under the
artifact root (and beside a SQLite database), a PostgreSQL server asked whether it takes writes.
A store that cannot be written makes the service unavailable (503, ``problems`` says what)."""

from __future__ import annotations

import os
from functools import cache

from sqlalchemy import Connection, func, select, text

from api.http import schemas
from api.runtime.settings import Settings
from api.runtime.storage import write_probe
from db.models import Job
from db.session import Database


def counts(connection: Connection) -> dict[str, int]:
    """Jobs per state (one short read: ``Database.loop_read`` runs it)."""
    rows = connection.execute(select(Job.state, func.count()).group_by(Job.state)).all()
    return {str(state): int(n) for state, n in rows}


def writable(connection: Connection) -> bool:
    """Whether a PostgreSQL server takes writes (a standby or a read-only database does not)."""
    return connection.execute(text("SHOW transaction_read_only")).scalar() == "off"


def storage_problems(db: Database, settings: Settings) -> list[str]:
    """What cannot be written: the artifact root, the SQLite database's folder or file."""
    problems = []
    if (trouble := write_probe(settings.artifact_root)) is not None:
        problems.append(f"artifacts: {trouble}")
    if db.file is not None:
        trouble = write_probe(db.file.parent)
        if trouble is None and db.file.exists() and not os.access(db.file, os.W_OK):
            trouble = "the database file is read-only"
        if trouble is not None:
            problems.append(f"database: {trouble}")
    return problems


def health(
    db: Database, settings: Settings, by_state: dict[str, int], problems: list[str]
) -> schemas.Health:
    return schemas.Health(
        status="unavailable" if problems else "ok",
        database=db.url.split(":", 1)[0],
        queued=by_state.get("queued", 0),
        running=by_state.get("running", 0),
        version=version(),
        problems=problems,
    )


@cache
def version() -> str:
    """The installed service's version."""
    from importlib.metadata import version as installed

    return installed("reskd")
