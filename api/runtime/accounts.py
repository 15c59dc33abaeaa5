"""Who may use a shared service: users with a role, their API keys, and the audit log.

- Roles: ``admin`` does everything; ``member`` reads everything and submits, and changes
  (cancels, deletes) only what it owns; ``viewer`` only reads.
- A key is ``rk_<lookup>_<secret>`` (``secrets.token_urlsafe``: 256 random bits): it is shown
  once when created; the store keeps its lookup part and the SHA-256 of the whole key (a random
  key needs no slow hash: nothing can be guessed from its digest), an optional expiry and the time
  it was revoked.
- The service's bootstrap token (``RESKD_TOKEN``) is the admin ``admin``; a token-less service
  (127.0.0.1 only) treats every request as the local admin ``local``, unless it carries a key.
- ``record`` writes one audit entry in the caller's transaction: the change and its entry are
  stored together or not at all.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import ROLES, ApiKey, AuditEntry, UploadRow, User
from db.session import Database

BOOTSTRAP = "admin"  # the user the bootstrap token stands for
LOCAL = "local"  # every request of a token-less service without a key
USER_NAME = re.compile(r"^[a-z][a-z0-9._-]{0,63}$")
KEY = re.compile(r"^rk_([A-Za-z0-9]{12})_([A-Za-z0-9_-]{20,64})$")


class AccountError(ValueError):
    """A request about users or keys that cannot be carried out (the message names the field)."""


class Conflict(AccountError):
    """It would clash with what is stored (a 409)."""


@dataclass(frozen=True)
class Principal:
    """Who sends a request."""

    name: str
    role: str
    key_id: int | None = None

    @property
    def can_write(self) -> bool:
        return self.role in ("admin", "member")

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def may_change(self, owner: str | None) -> bool:
        """Whether it may cancel or delete what ``owner`` owns (None: rows older than owners,
        an admin's)."""
        return self.is_admin or (self.role == "member" and owner is not None and owner == self.name)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh key and its lookup part."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    lookup = "".join(secrets.choice(alphabet) for _ in range(12))
    return f"rk_{lookup}_{secrets.token_urlsafe(32)}", lookup


def check_user_name(name: str) -> str:
    if not USER_NAME.match(name) or name in (BOOTSTRAP, LOCAL):
        raise AccountError(
            f"name: {name!r} is not allowed: 1-64 of a-z 0-9 . _ -, starting with a letter, "
            f"and not {BOOTSTRAP!r} or {LOCAL!r} (the service's own)"
        )
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AccountError(f"role: {role!r} is not one of {', '.join(ROLES)}")
    return role


def record(s: Session, actor: Principal | str, action: str, target: str, **detail: Any) -> None:
    """One audit entry, in the caller's transaction."""
    name = actor.name if isinstance(actor, Principal) else actor
    s.add(AuditEntry(actor=name, action=action, target=target, detail=detail or None))


def uploaded(s: Session, who: Principal, kind: str, name: str, size: int) -> None:
    """Who uploaded a checkpoint or dataset (the first to upload identical bytes keeps it)."""
    if s.get(UploadRow, (kind, name)) is None:
        s.add(UploadRow(kind=kind, name=name, owner=who.name, size=size))
    record(s, who, f"{kind}.upload", f"{kind} {name}", size=size)


# -- users -------------------------------------------------------------------------------------


def add_user(
    s: Session,
    actor: Principal,
    *,
    name: str,
    role: str,
    max_running_jobs: int | None = None,
    max_device_hours_per_day: float | None = None,
) -> User:
    user = User(
        name=check_user_name(name),
        role=check_role(role),
        disabled=False,
        max_running_jobs=max_running_jobs,
        max_device_hours_per_day=max_device_hours_per_day,
    )
    s.add(user)
    try:
        s.flush()
    except IntegrityError as exc:
        raise Conflict(f"name: a user {name!r} exists already") from exc
    record(s, actor, "user.add", f"user {name}", role=role)
    return user


def find_user(s: Session, name: str) -> User | None:
    return s.scalar(select(User).where(User.name == name))


def update_user(s: Session, actor: Principal, user: User, changes: dict[str, Any]) -> User:
    """Set a user's role, quotas or ``disabled`` (keys of a disabled user stop working)."""
    if "role" in changes:
        check_role(changes["role"])
    for field, value in changes.items():
        setattr(user, field, value)
    action = "user.disable" if changes.get("disabled") else "user.update"
    record(s, actor, action, f"user {user.name}", **changes)
    return user


# -- keys --------------------------------------------------------------------------------------


def create_key(
    s: Session,
    actor: Principal,
    user: User,
    *,
    label: str | None = None,
    expires_in_days: float | None = None,
) -> tuple[ApiKey, str]:
    """A new key of ``user``: the row and the key itself (shown once, never stored)."""
    if user.disabled:
        raise AccountError(f"user: {user.name!r} is disabled")
    key, lookup = new_key()
    expires = (
        datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days is not None else None
    )
    row = ApiKey(
        lookup=lookup, digest=digest(key), user_id=user.id, label=label, expires_at=expires
    )
    s.add(row)
    s.flush()
    record(s, actor, "key.create", f"key {row.id}", user=user.name, label=label)
    return row, key


def revoke_key(s: Session, actor: Principal, row: ApiKey) -> ApiKey:
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
        record(s, actor, "key.revoke", f"key {row.id}", user=row.user.name)
    return row


# -- authentication ----------------------------------------------------------------------------


class Keyring:
    """Turns a bearer credential into a :class:`Principal`, or says why not. Keys found in the
    database are kept for ``ttl`` seconds (a revocation through this process forgets them at
    once; through another process it takes effect within ``ttl``)."""

    def __init__(self, db: Database, *, bootstrap: str | None, ttl: float = 5.0) -> None:
        self.db = db
        self.bootstrap = bootstrap.encode() if bootstrap is not None else None
        self.ttl = ttl
        self._kept: dict[str, tuple[float, Principal | str]] = {}
        self._lock = threading.Lock()

    @property
    def required(self) -> bool:
        """Whether every request needs a credential (the service has a bootstrap token)."""
        return self.bootstrap is not None

    def anonymous(self) -> Principal:
        return Principal(LOCAL, "admin")

    def forget(self) -> None:
        with self._lock:
            self._kept.clear()

    def needs_lookup(self, given: bytes) -> bool:
        """Whether ``authenticate`` would read the database (else it answers at once)."""
        if self.bootstrap is not None and hmac.compare_digest(given, self.bootstrap):
            return False
        try:
            text = given.decode("ascii")
        except UnicodeDecodeError:
            return False
        if KEY.match(text) is None:
            return False
        with self._lock:
            kept = self._kept.get(digest(text))
        return kept is None or kept[0] < time.monotonic()

    def authenticate(self, given: bytes) -> Principal | str:
        """The principal, or why the credential is refused (a 403's text)."""
        if self.bootstrap is not None and hmac.compare_digest(given, self.bootstrap):
            return Principal(BOOTSTRAP, "admin")
        try:
            text = given.decode("ascii")
        except UnicodeDecodeError:
            return "wrong token"
        match = KEY.match(text)
        if match is None:
            return "wrong token"
        key_digest = digest(text)
        now = time.monotonic()
        with self._lock:
            kept = self._kept.get(key_digest)
        if kept is not None and kept[0] >= now:
            return kept[1]
        answer = self._look_up(match.group(1), key_digest)
        with self._lock:
            if len(self._kept) > 10_000:
                self._kept.clear()
            self._kept[key_digest] = (now + self.ttl, answer)
        return answer

    def _look_up(self, lookup: str, key_digest: str) -> Principal | str:
        with self.db.session(readonly=True) as s:
            row = s.scalar(select(ApiKey).where(ApiKey.lookup == lookup))
            if row is None or not hmac.compare_digest(row.digest, key_digest):
                return "wrong token"
            if row.revoked_at is not None:
                return f"API key {row.id} was revoked"
            if row.expires_at is not None and row.expires_at <= datetime.now(UTC):
                return f"API key {row.id} expired at {row.expires_at.isoformat(timespec='seconds')}"
            if row.user.disabled:
                return f"user {row.user.name!r} is disabled"
            return Principal(row.user.name, row.user.role, key_id=row.id)
