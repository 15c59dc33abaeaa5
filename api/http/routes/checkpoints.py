"""/v1/checkpoints: upload a trained teacher's or S0's weights (a state dict: ``.pt``/``.pth``
read weights-only, or ``.safetensors``; a teacher program: TorchScript or ``torch.export``); a
job's ``teacher_checkpoint`` or ``student_checkpoint`` names it. With ``teacher`` (an
architecture: ``resnet20``, ``torchvision:resnet18``, ``timm:NAME``, ``torchscript``,
``exported-program``) and ``dataset``, the file is checked against them before it is kept.

Jobs over the API never read arbitrary server paths: a checkpoint field is the name of an
uploaded checkpoint (or a path under ``RESKD_DATA_ROOTS``), so the service is no oracle of which
files exist on its machine.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from api.http import schemas
from api.http.access import access, upload_owner
from api.http.checkpoints import check_upload
from api.http.deps import AUTH, DatabaseDep, PrincipalDep, SettingsDep, responses
from api.http.removals import answered
from api.runtime import retention
from api.runtime.accounts import Principal, uploaded
from api.runtime.retention import Removed
from api.runtime.settings import Settings
from db.session import Database

SAFE = re.compile(r"[^A-Za-z0-9._-]+")
SUFFIXES = (".pt", ".pth", ".safetensors", ".pt2", ".ts")
MEDIA_TYPES = ("application/octet-stream",)  # the Guard answers any other 415


def router() -> APIRouter:
    """Its body limit is ``max_checkpoint_bytes`` and its media type ``MEDIA_TYPES`` (the Guard
    middleware applies both)."""
    r = APIRouter(prefix="/v1/checkpoints", tags=["checkpoints"], dependencies=AUTH)

    @r.post(
        "",
        response_model=schemas.CheckpointPublic,
        status_code=201,
        dependencies=access("write")["dependencies"],
        openapi_extra={
            "x-access": "write",
            "requestBody": {
                "required": True,
                "content": {media: {"schema": {"type": "string"}} for media in MEDIA_TYPES},
            },
        },
        responses=responses(400, 413, 415, 422),
    )
    async def upload(
        request: Request,
        settings: SettingsDep,
        db: DatabaseDep,
        who: PrincipalDep,
        name: Annotated[str, Query(min_length=1, max_length=100)] = "teacher.pt",
        teacher: Annotated[
            str | None,
            Query(
                max_length=200,
                description="the architecture the file must fit: resnet20, torchvision:resnet18, "
                "timm:NAME, torchscript or exported-program",
            ),
        ] = None,
        dataset: Annotated[
            str | None,
            Query(max_length=100, description="the dataset whose classes it must have"),
        ] = None,
    ) -> schemas.CheckpointPublic:
        """The body is the file as ``application/octet-stream``: ``torch.save``'s zip as torch
        wrote it (uncompressed), a ``.safetensors`` file, or a TorchScript / ``torch.export``
        program with ``teacher=torchscript`` / ``exported-program``."""
        final, digest = await _receive(
            request, settings, name=name, teacher=teacher, dataset=dataset
        )
        size = final.stat().st_size
        await run_in_threadpool(_own, db, who, final.name, size)
        return schemas.CheckpointPublic(name=final.name, size=size, sha256=digest)

    @r.get(
        "",
        response_model=list[schemas.CheckpointPublic],
        responses=responses(),
        **access("read"),
    )
    def listing(settings: SettingsDep) -> list[schemas.CheckpointPublic]:
        directory = settings.checkpoints_dir
        files = (
            sorted(f for f in directory.iterdir() if f.suffix in SUFFIXES and f.is_file())
            if directory.is_dir()
            else []
        )
        return [
            schemas.CheckpointPublic(name=f.name, size=f.stat().st_size, sha256=None) for f in files
        ]

    r.delete(
        "/{name}",
        response_model=Removed,
        responses=responses(404, 409, 422),
        **access("owner", upload_owner("checkpoint")),
    )(delete)
    return r


def delete(name: str, db: DatabaseDep, settings: SettingsDep, who: PrincipalDep) -> Removed:
    """Delete an uploaded checkpoint that no queued or running job names (a 409 names the job:
    cancel it first, or wait until it ends)."""
    with answered():
        return retention.delete_upload(settings, db, kind="checkpoint", name=name, who=who)


async def _receive(
    request: Request, settings: Settings, *, name: str, teacher: str | None, dataset: str | None
) -> tuple[Path, str]:
    """The body, checked and kept under its name and digest: its path and SHA-256."""
    directory = settings.checkpoints_dir
    directory.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    tmp = directory / f".upload-{os.getpid()}-{id(request)}.tmp"
    try:
        with tmp.open("wb") as f:
            async for chunk in request.stream():
                digest.update(chunk)
                f.write(chunk)
        suffix = next((x for x in SUFFIXES if name.endswith(x)), ".pt")
        checked = tmp.with_name(tmp.name + suffix)  # readers tell formats by the suffix
        os.replace(tmp, checked)
        tmp = checked
        # Refused (400, 413) unless it is a state dict or program that fits what was named
        await run_in_threadpool(
            check_upload,
            tmp,
            teacher=teacher,
            dataset=dataset,
            limit=settings.max_checkpoint_bytes,
        )
        stem = SAFE.sub("_", name.removesuffix(suffix))[:60] or "checkpoint"
        final = directory / f"{stem}-{digest.hexdigest()[:12]}{suffix}"
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final, digest.hexdigest()


def _own(db: Database, who: Principal, name: str, size: int) -> None:
    with db.session() as s:
        uploaded(s, who, "checkpoint", name, size)
