"""/v1/me, /v1/users, /v1/keys and /v1/audit: who shares the service, their keys, what they did.

Admins add users (``admin``, ``member``, ``viewer``), change their role and quotas, and disable
them; a key is created for a user (by the user, or by an admin for anyone), shown once, and
revoked by its user or an admin. Every change is in the audit log, which admins read.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from api.http.access import access, key_owner
from api.http.deps import AUTH, DatabaseDep, KeyId, Offset, PrincipalDep, SessionDep, responses
from api.http.schemas import Role
from api.runtime import accounts
from db.models import ApiKey, AuditEntry, User

router = APIRouter(prefix="/v1", tags=["users and keys"], dependencies=AUTH)

UserName = Annotated[str, Path(min_length=1, max_length=64, description="a user's name")]
Quota = Annotated[int | None, Field(ge=0, le=100_000)]
Hours = Annotated[float | None, Field(ge=0, le=24 * 366)]


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1, max_length=64, description="a-z 0-9 . _ -, a letter first")
    role: Role = "member"
    max_running_jobs: Quota = Field(None, description="None: the service's default")
    max_device_hours_per_day: Hours = Field(None, description="None: the service's default")


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    role: Role | None = Field(None, description="null or left out: unchanged")
    disabled: bool | None = Field(
        None, description="a disabled user's keys stop working; null or left out: unchanged"
    )
    max_running_jobs: Quota = None
    max_device_hours_per_day: Hours = None


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    role: str
    disabled: bool = False
    max_running_jobs: int | None = None
    max_device_hours_per_day: float | None = None
    created_at: datetime | None = None


class Me(UserPublic):
    key_id: int | None = Field(None, description="the key this request was sent with")


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    user: str | None = Field(
        None, max_length=64, description="whose key (default: the caller's; others: admins only)"
    )
    label: str | None = Field(None, max_length=200)
    expires_in_days: float | None = Field(90, gt=0, le=3660, description="None: never")


class KeyPublic(BaseModel):
    id: int
    user: str
    label: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class KeyCreated(KeyPublic):
    key: str = Field(description="the key itself: shown this once, stored only as a digest")


class AuditPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    actor: str
    action: str
    target: str
    detail: dict[str, object] | None


class AuditList(BaseModel):
    entries: list[AuditPublic]
    total: int


def _key(row: ApiKey) -> KeyPublic:
    return KeyPublic(
        id=row.id,
        user=row.user.name,
        label=row.label,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


def _refused(exc: accounts.AccountError) -> HTTPException:
    """A 409, or a 422 as FastAPI's own: a list of problems, each naming its field (the
    message's first word)."""
    if isinstance(exc, accounts.Conflict):
        return HTTPException(409, str(exc))
    field = str(exc).split(":")[0]
    return HTTPException(
        422, [{"type": "value_error", "loc": ["body", field], "msg": str(exc), "input": None}]
    )


@router.get("/me", response_model=Me, responses=responses(), **access("read"))
def me(who: PrincipalDep, s: SessionDep) -> Me:
    """Who this request is (the dashboard shows it), with the user's quotas."""
    user = accounts.find_user(s, who.name)
    if user is None:  # the bootstrap admin, or the local admin of a token-less service
        return Me(name=who.name, role=who.role, key_id=who.key_id)
    return Me.model_validate(user, from_attributes=True).model_copy(update={"key_id": who.key_id})


@router.get("/users", response_model=list[UserPublic], responses=responses(), **access("admin"))
def list_users(s: SessionDep) -> list[UserPublic]:
    users = s.scalars(select(User).order_by(User.name)).all()
    return [UserPublic.model_validate(u) for u in users]


@router.post(
    "/users",
    response_model=UserPublic,
    status_code=201,
    responses=responses(400, 409, 413, 422),
    **access("admin"),
)
def add_user(body: UserCreate, db: DatabaseDep, who: PrincipalDep) -> UserPublic:
    try:
        with db.session() as s:
            user = accounts.add_user(s, who, **body.model_dump())
            return UserPublic.model_validate(user)
    except accounts.AccountError as exc:
        raise _refused(exc) from None


@router.patch(
    "/users/{name}",
    response_model=UserPublic,
    responses=responses(400, 404, 413, 422),
    **access("admin"),
)
def update_user(
    name: UserName, body: UserUpdate, request: Request, db: DatabaseDep, who: PrincipalDep
) -> UserPublic:
    """Change a user's role or quotas, or disable (or enable) the user. Fields left out stay."""
    with db.session() as s:
        user = accounts.find_user(s, name)
        if user is None:
            raise HTTPException(404, f"user {name!r} not found")
        changes = body.model_dump(exclude_unset=True)
        for unchanged in ("role", "disabled"):  # null: as if left out (they hold a value)
            if changes.get(unchanged, True) is None:
                del changes[unchanged]
        accounts.update_user(s, who, user, changes)
        out = UserPublic.model_validate(user)
    request.app.state.keyring.forget()  # a role or a disabled user counts from now on
    return out


@router.get("/keys", response_model=list[KeyPublic], responses=responses(), **access("read"))
def list_keys(who: PrincipalDep, s: SessionDep) -> list[KeyPublic]:
    """The caller's keys (an admin's: everyone's), never the keys themselves."""
    query = select(ApiKey).join(User).order_by(ApiKey.id)
    if not who.is_admin:
        query = query.where(User.name == who.name)
    return [_key(k) for k in s.scalars(query)]


@router.post(
    "/keys",
    response_model=KeyCreated,
    status_code=201,
    responses=responses(400, 404, 413, 422),
    **access("read"),
)
def create_key(body: KeyCreate, db: DatabaseDep, who: PrincipalDep) -> KeyCreated:
    """A new key for the caller (any role: a viewer may hold several), or, by an admin, for
    ``user``. The answer holds the key; it cannot be shown again."""
    name = body.user or who.name
    if name != who.name and not who.is_admin:
        raise HTTPException(403, f"only an admin may create a key for another user ({name})")
    try:
        with db.session() as s:
            user = accounts.find_user(s, name)
            if user is None and body.user:
                raise HTTPException(404, f"user {name!r} not found")
            if user is None:
                raise _refused(
                    accounts.AccountError(
                        f"user: {name} is the service's own admin and holds no keys; name a user"
                    )
                )
            row, key = accounts.create_key(
                s, who, user, label=body.label, expires_in_days=body.expires_in_days
            )
            return KeyCreated(**_key(row).model_dump(), key=key)
    except accounts.AccountError as exc:
        raise _refused(exc) from None


@router.delete(
    "/keys/{key_id}",
    response_model=KeyPublic,
    responses=responses(404, 422),
    **access("owner", key_owner),
)
def revoke_key(key_id: KeyId, request: Request, db: DatabaseDep, who: PrincipalDep) -> KeyPublic:
    """Revoke a key: requests with it are refused from now on."""
    with db.session() as s:
        row = s.get(ApiKey, key_id)
        assert row is not None  # key_owner said 404 otherwise
        out = _key(accounts.revoke_key(s, who, row))
    request.app.state.keyring.forget()
    return out


@router.get("/audit", response_model=AuditList, responses=responses(422), **access("admin"))
def audit(
    s: SessionDep,
    actor: Annotated[str | None, Query(max_length=64)] = None,
    action: Annotated[str | None, Query(max_length=32, description="e.g. job.cancel")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> AuditList:
    """Who submitted, cancelled, deleted, created or revoked what, and when; newest first."""
    where = [c == v for c, v in ((AuditEntry.actor, actor), (AuditEntry.action, action)) if v]
    total = s.scalar(select(func.count(AuditEntry.id)).where(*where)) or 0
    rows = s.scalars(
        select(AuditEntry).where(*where).order_by(AuditEntry.id.desc()).limit(limit).offset(offset)
    )
    return AuditList(entries=[AuditPublic.model_validate(r) for r in rows], total=int(total))
