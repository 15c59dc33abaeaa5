"""``GET /v1/health``: the database's kind, the queue's counts and the service's version."""

from __future__ import annotations

from functools import cache

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.http import schemas
from db.models import Job


def health(s: Session, url: str) -> schemas.Health:
    counts = dict(s.execute(select(Job.state, func.count()).group_by(Job.state)).all())
    return schemas.Health(
        status="ok",
        database=url.split(":", 1)[0],
        queued=int(counts.get("queued", 0)),
        running=int(counts.get("running", 0)),
        version=version(),
    )


@cache
def version() -> str:
    """The installed service's version."""
    from importlib.metadata import version as installed

    return installed("reskd")
