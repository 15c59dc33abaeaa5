"""/v1/usage and /v1/gc: who uses how much of the service (device hours and disk, per user), and
collecting the files nothing references any more (``api.runtime.retention.gc``)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from api.http.access import access
from api.http.deps import AUTH, DatabaseDep, PrincipalDep, SettingsDep, responses
from api.runtime import retention
from api.runtime.retention import Removed
from api.runtime.usage import Usage, usage

router = APIRouter(prefix="/v1", tags=["storage"], dependencies=AUTH)


class Collect(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    older_than_days: float | None = Field(
        None,
        gt=0,
        le=36_600,
        description="also remove uploads (checkpoints, datasets) older than this that no job "
        "names; none: keep every upload",
    )
    dry_run: bool = Field(False, description="remove nothing: list what would be removed")


@router.get("/usage", response_model=Usage, responses=responses(), **access("read"))
def get_usage(db: DatabaseDep, settings: SettingsDep) -> Usage:
    """Per user: jobs, device hours (in all and over the last 24 hours) and disk bytes (their
    jobs' folders, the stage folders their jobs computed, their uploads); the shared line (what
    no job or upload accounts for); and every byte under the artifact root, measured."""
    return usage(settings, db)


@router.post("/gc", response_model=Removed, responses=responses(400, 413, 422), **access("admin"))
def collect(body: Collect, db: DatabaseDep, settings: SettingsDep, who: PrincipalDep) -> Removed:
    """Remove what nothing references: stage folders no job's stages name, folders of deleted
    jobs, temporary files that uploads and deletes left, and, with ``older_than_days``, old
    uploads no job names (as ``reskd gc``)."""
    return retention.gc(
        settings, db, older_than_days=body.older_than_days, dry_run=body.dry_run, who=who
    )
