"""/v1/checkpoints: upload a trained teacher's or S0's state dict; a job's ``teacher_checkpoint``
or ``student_checkpoint`` names it.

Jobs over the API never read arbitrary server paths: a checkpoint field is the name of an
uploaded checkpoint (or a path under ``RESKD_DATA_ROOTS``), so the service is no oracle of which
files exist on its machine.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Annotated

from fastapi import APIRouter, Query, Request

from api.http import queries, schemas
from api.http.deps import AUTH, SettingsDep, responses

SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def router() -> APIRouter:
    """Its body limit is ``max_checkpoint_bytes`` (the Guard middleware applies it)."""
    r = APIRouter(prefix="/v1/checkpoints", tags=["checkpoints"], dependencies=AUTH)

    @r.post(
        "",
        response_model=schemas.CheckpointPublic,
        status_code=201,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/octet-stream": {"schema": {"type": "string"}}},
            }
        },
        responses=responses(400, 413, 422),
    )
    async def upload(
        request: Request,
        settings: SettingsDep,
        name: Annotated[str, Query(min_length=1, max_length=100)] = "teacher.pt",
    ) -> schemas.CheckpointPublic:
        """The request body is the file ``torch.save(model.state_dict(), f)`` wrote."""
        directory = settings.checkpoints_dir
        directory.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        tmp = directory / f".upload-{os.getpid()}-{id(request)}.tmp"
        try:
            with tmp.open("wb") as f:
                async for chunk in request.stream():
                    digest.update(chunk)
                    f.write(chunk)
            queries.check_state_dict(tmp)  # Refused (400) unless torch loads it weights-only
            stem = SAFE.sub("_", name.removesuffix(".pt"))[:60] or "checkpoint"
            final = directory / f"{stem}-{digest.hexdigest()[:12]}.pt"
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        return schemas.CheckpointPublic(
            name=final.name, size=final.stat().st_size, sha256=digest.hexdigest()
        )

    @r.get("", response_model=list[schemas.CheckpointPublic], responses=responses())
    def listing(settings: SettingsDep) -> list[schemas.CheckpointPublic]:
        directory = settings.checkpoints_dir
        files = sorted(directory.glob("*.pt")) if directory.is_dir() else []
        return [
            schemas.CheckpointPublic(name=f.name, size=f.stat().st_size, sha256=None) for f in files
        ]

    return r
