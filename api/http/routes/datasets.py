"""/v1/datasets: the datasets a job can use, and image folders uploaded as one archive (and
deleted).

A job's ``root`` names an upload by its name (or a folder under a data root, which the operator
names with ``reskd serve --data-root DIR`` or ``RESKD_DATA_ROOTS``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from starlette.concurrency import run_in_threadpool

from api.http import schemas
from api.http.access import access, upload_owner
from api.http.datasets import listing as datasets_listing
from api.http.datasets.archives import Refused
from api.http.datasets.layout import NAME_PATTERN
from api.http.datasets.uploads import exists_refusal, store
from api.http.deps import AUTH, DatabaseDep, PrincipalDep, SettingsDep, responses
from api.http.removals import answered
from api.runtime import retention
from api.runtime.accounts import Principal, uploaded
from api.runtime.retention import Removed
from db.session import Database

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], dependencies=AUTH)

DatasetName = Annotated[
    str,
    Query(
        min_length=1,
        max_length=64,
        pattern=NAME_PATTERN,
        description="the upload's name, which a job's `root` then gives: letters, digits and "
        "._- (a letter or digit first), at most 64",
    ),
]
ARCHIVE = {"schema": {"type": "string", "format": "binary"}}
# what an archive may be sent as (the Guard answers any other 415)
MEDIA_TYPES = (
    "application/octet-stream",
    "application/zip",
    "application/x-tar",
    "application/gzip",
)
ARCHIVE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "a zip, tar or gzipped tar of train/<class>/<image> and val/<class>/<image> "
        "(or test/), optionally all under one top folder",
        "content": {media: ARCHIVE for media in MEDIA_TYPES},
    }
}
EXISTS: dict[int | str, dict[str, Any]] = {
    409: {"model": schemas.Problem, "description": "a dataset of that name was uploaded"}
}


@router.get("", response_model=list[schemas.DatasetPublic], responses=responses(), **access("read"))
def listing(settings: SettingsDep) -> list[schemas.DatasetPublic]:
    """The shipped datasets, the uploads, and the image folders and CIFAR roots at or directly
    under each data root, each with the `dataset` and `root` a job's config gives."""
    return datasets_listing.listing(settings)


@router.post(
    "",
    response_model=schemas.DatasetPublic,
    status_code=201,
    dependencies=access("write")["dependencies"],
    openapi_extra={**ARCHIVE_BODY, "x-access": "write"},
    responses={**responses(400, 413, 415, 422), **EXISTS},
)
async def upload(
    request: Request,
    settings: SettingsDep,
    name: DatasetName,
    db: DatabaseDep,
    who: PrincipalDep,
) -> schemas.DatasetPublic:
    """The body is the archive. Every member is checked before anything is stored: relative
    names without `..`, no links or devices, image files only (.png, .jpg, ...: what
    torchvision's ImageFolder reads; macOS's `__MACOSX/`, `.DS_Store` and `._*` are skipped),
    the limits on members and unpacked bytes, and the same classes in train/ as in val/ or test/.
    Its body limit is ``max_dataset_bytes``, its media types ``MEDIA_TYPES`` (the Guard
    middleware applies both)."""
    directory = settings.datasets_dir
    if (directory / name).exists():
        raise _http(exists_refusal(name))
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".upload-", suffix=".part", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            async for chunk in request.stream():
                f.write(chunk)
        stored = await run_in_threadpool(store, body=Path(tmp), name=name, settings=settings)
        await run_in_threadpool(_own, db, who, name, Path(tmp).stat().st_size)
        return stored
    except Refused as exc:
        raise _http(exc) from None
    finally:
        Path(tmp).unlink(missing_ok=True)


@router.delete(
    "/{name}",
    response_model=Removed,
    responses=responses(404, 409, 422),
    **access("owner", upload_owner("dataset")),
)
def delete(name: str, db: DatabaseDep, settings: SettingsDep, who: PrincipalDep) -> Removed:
    """Delete an uploaded dataset that no queued or running job names as its `root` (a 409
    names the job: cancel it first, or wait until it ends)."""
    with answered():
        return retention.delete_upload(settings, db, kind="dataset", name=name, who=who)


def _own(db: Database, who: Principal, name: str, size: int) -> None:
    with db.session() as s:
        uploaded(s, who, "dataset", name, size)


def _http(refusal: Refused) -> HTTPException:
    return HTTPException(refusal.status, str(refusal))
