"""The deletes' refusals as HTTP answers: what is not there a 404, what running work is or needs
a 409 (``api.runtime.retention``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import HTTPException, status

from api.http.errors import NotFound
from api.runtime.retention import InUse, Unknown


@contextmanager
def answered() -> Iterator[None]:
    """Run a delete; its refusals raised as their HTTP answers."""
    try:
        yield
    except Unknown as exc:
        raise NotFound(str(exc)) from None
    except InUse as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
