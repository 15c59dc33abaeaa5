"""Who may call which route: every route under /v1 declares one rule with ``access(...)``, which
adds the dependency that enforces it and names it in the OpenAPI document (``x-access``).
``create_app`` refuses to start with a /v1 route that declares none, and the authorization test
walks the document: a route added without a rule fails both.

Rules (the Guard has already turned the request's credential into a ``Principal``):

- ``public``: anyone, with or without a credential (health);
- ``read``: any signed-in user (viewers too);
- ``write``: members and admins: creates something the caller then owns;
- ``owner``: changes or deletes one thing: its owner (a member) or an admin; a ``resource``
  function finds the owner from the path (404 when the thing does not exist);
- ``admin``: admins only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Depends, HTTPException, status
from sqlalchemy import select

from api.http.deps import DatabaseDep, JobId, KeyId, PrincipalDep, SweepId
from api.http.errors import NotFound
from api.runtime.accounts import Principal
from db.models import ApiKey, Job, Sweep, UploadRow

RULES = ("public", "read", "write", "owner", "admin")


def _forbidden(why: str) -> HTTPException:
    return HTTPException(status.HTTP_403_FORBIDDEN, why)


async def _read(who: PrincipalDep) -> Principal:
    return who


async def _write(who: PrincipalDep) -> Principal:
    if not who.can_write:
        raise _forbidden(f"{who.name} is a {who.role}: a viewer may only read")
    return who


async def _admin(who: PrincipalDep) -> Principal:
    if not who.is_admin:
        raise _forbidden(f"{who.name} is a {who.role}: only an admin may do this")
    return who


def _owned(what: str, owner: str | None, who: Principal) -> None:
    if not who.may_change(owner):
        if not who.can_write:
            raise _forbidden(f"{who.name} is a {who.role}: a viewer may only read")
        raise _forbidden(f"{what} belongs to {owner or 'an admin'}; {who.name} may not change it")


def job_owner(job_id: JobId, db: DatabaseDep, who: PrincipalDep) -> None:
    with db.session(readonly=True) as s:
        found = s.execute(select(Job.owner).where(Job.id == job_id)).first()
    if found is None:
        raise NotFound(f"job {job_id} not found")
    _owned(f"job {job_id}", found[0], who)


def sweep_owner(sweep_id: SweepId, db: DatabaseDep, who: PrincipalDep) -> None:
    with db.session(readonly=True) as s:
        found = s.execute(select(Sweep.owner).where(Sweep.id == sweep_id)).first()
    if found is None:
        raise NotFound(f"sweep {sweep_id} not found")
    _owned(f"sweep {sweep_id}", found[0], who)


def upload_owner(kind: str) -> Callable[..., None]:
    """The owner of an uploaded checkpoint or dataset, named by the path's ``name``."""

    def check(name: str, db: DatabaseDep, who: PrincipalDep) -> None:
        with db.session(readonly=True) as s:
            found = s.execute(
                select(UploadRow.owner).where(UploadRow.kind == kind, UploadRow.name == name)
            ).first()
        # a file kept before owners were recorded has no row: an admin's
        _owned(f"{kind} {name}", found[0] if found else None, who)

    return check


def key_owner(key_id: KeyId, db: DatabaseDep, who: PrincipalDep) -> None:
    with db.session(readonly=True) as s:
        row = s.get(ApiKey, key_id)
        owner = row.user.name if row is not None else None
    if row is None:
        raise NotFound(f"API key {key_id} not found")
    if not (who.is_admin or owner == who.name):  # a viewer may revoke its own key
        raise _forbidden(f"API key {key_id} belongs to {owner}; {who.name} may not revoke it")


_SIMPLE: dict[str, Callable[..., Any] | None] = {
    "public": None,
    "read": _read,
    "write": _write,
    "admin": _admin,
}


def access(rule: str, resource: Callable[..., None] | None = None) -> dict[str, Any]:
    """Keyword arguments of a route's decorator: its rule's dependency and ``x-access``."""
    if rule not in RULES:
        raise ValueError(f"rule: {rule!r} is not one of {', '.join(RULES)}")
    if (rule == "owner") != (resource is not None):
        raise ValueError("an owner rule needs the resource whose owner it checks (and only it)")
    check = resource if rule == "owner" else _SIMPLE[rule]
    return {
        "dependencies": [Depends(check)] if check is not None else [],
        "openapi_extra": {"x-access": rule},
    }


def rule_of(route: Any) -> str | None:
    extra = getattr(route, "openapi_extra", None) or {}
    value = extra.get("x-access")
    return str(value) if value is not None else None
