"""Commands about who uses a shared service: ``reskd users``, ``reskd keys``, ``reskd login /
logout / whoami`` and ``reskd audit``. Like the other client commands they import neither torch
nor the service.

``users`` and ``keys`` take what to do as their first argument (``reskd users add NAME``,
``reskd keys revoke ID``), so each is one command whose options the reference lists."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from datetime import UTC, datetime
from typing import Any

from api.cli.options import URL_HELP, Subparsers, add_client_options, client_of
from api.client import Client, ServiceError, credentials
from distill.report import format_table

ROLES = ("admin", "member", "viewer")  # db.models.ROLES: the client commands import no database
USER_ACTIONS = ("add", "list", "disable", "enable", "set")
KEY_ACTIONS = ("create", "list", "revoke")
QUOTAS = ("max_running_jobs", "max_device_hours_per_day")


def add_parsers(subparsers: Subparsers) -> None:
    _add_user_parser(subparsers)
    _add_key_parser(subparsers)
    _add_session_parsers(subparsers)
    audit = subparsers.add_parser(
        "audit", help="the audit log, newest first: who submitted, cancelled, deleted, added, "
        "created or revoked what (admins)",
    )  # fmt: skip
    audit.add_argument("--actor", help="only this user's actions")
    audit.add_argument("--action", help="only this action (job.submit, key.revoke, ...)")
    audit.add_argument("--limit", type=int, default=50, help="entries shown")
    audit.add_argument("--json", action="store_true", help="print JSON")
    add_client_options(audit)
    audit.set_defaults(func=cmd_audit)


def _quota(kind: type[int] | type[float]) -> Any:
    """A quota's option value: a number, or ``default`` (the service's)."""

    def parse(text: str) -> int | float | str:
        if text == "default":
            return text
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"{text}: a quota is 0 or more")
        return value

    parse.__name__ = f"{kind.__name__} or default"
    return parse


def _add_user_parser(subparsers: Subparsers) -> None:
    users = subparsers.add_parser(
        "users",
        help="the service's users (admins): add, list, disable, enable, or set a role or quotas",
        description="`reskd users add NAME [--role member]`, `reskd users list`, `reskd users "
        "disable NAME` (its keys are refused from then on), `reskd users enable NAME`, `reskd "
        "users set NAME --role viewer --max-running-jobs 2`. Admins only.",
    )
    users.add_argument(
        "action", choices=USER_ACTIONS, metavar="ACTION", help=f"{', '.join(USER_ACTIONS)}"
    )
    users.add_argument("name", nargs="?", metavar="NAME", help="the user (every action but list)")
    users.add_argument("--role", choices=ROLES, help="add (default member) and set")
    users.add_argument(
        "--max-running-jobs",
        type=_quota(int),
        metavar="N",
        help="add and set: jobs of the user running at once (`default`: the service's)",
    )
    users.add_argument(
        "--max-device-hours-per-day",
        type=_quota(float),
        metavar="H",
        help="add and set: device hours of the user's jobs over the last day (`default`: the "
        "service's)",
    )
    users.add_argument("--json", action="store_true", help="print JSON")
    add_client_options(users)
    users.set_defaults(func=cmd_users)


def _add_key_parser(subparsers: Subparsers) -> None:
    keys = subparsers.add_parser(
        "keys",
        help="API keys: create one (shown once), list them, revoke one",
        description="`reskd keys create [--user NAME] [--label L] [--expires-days D | "
        "--no-expiry]` prints a new key (on stdout, alone: it is never shown again), `reskd "
        "keys list` lists yours (an admin's: everyone's), `reskd keys revoke ID` revokes one.",
    )
    keys.add_argument(
        "action", choices=KEY_ACTIONS, metavar="ACTION", help=f"{', '.join(KEY_ACTIONS)}"
    )
    keys.add_argument(
        "id", nargs="?", type=int, metavar="ID", help="revoke: the key's id (keys list shows it)"
    )
    keys.add_argument(
        "--user", help="create: whose key (default: yours; another user's: admins only)"
    )
    keys.add_argument("--label", help="create: what the key is for (a laptop, a notebook)")
    expiry = keys.add_mutually_exclusive_group()
    expiry.add_argument(
        "--expires-days", type=float, metavar="D", help="create: valid for D days (default 90)"
    )
    expiry.add_argument("--no-expiry", action="store_true", help="create: a key that never expires")
    keys.add_argument("--json", action="store_true", help="print JSON")
    add_client_options(keys)
    keys.set_defaults(func=cmd_keys)


def _add_session_parsers(subparsers: Subparsers) -> None:
    login = subparsers.add_parser(
        "login",
        help="check an API key with the service and keep it (and the URL) for later commands",
        description="Reads the key from --key, else from stdin (asked for without echo on a "
        "terminal), checks it with GET /v1/me and keeps it in "
        "$XDG_CONFIG_HOME/reskd/credentials.json (~/.config/reskd/), readable by you only. "
        "Later commands given no --url, --token, $RESKD_URL or $RESKD_TOKEN use it.",
    )
    login.add_argument("--url", help=URL_HELP)
    login.add_argument("--key", help="the API key (default: read from stdin)")
    login.set_defaults(func=cmd_login)
    logout = subparsers.add_parser("logout", help="forget the key `reskd login` kept for a URL")
    logout.add_argument("--url", help=URL_HELP)
    logout.add_argument("--revoke", action="store_true", help="revoke the key at the service first")
    logout.set_defaults(func=cmd_logout)
    whoami = subparsers.add_parser("whoami", help="who the service takes you for, and with what")
    add_client_options(whoami)
    whoami.set_defaults(func=cmd_whoami)


# -- users -------------------------------------------------------------------------------------


def _unset(value: Any) -> Any:
    return None if value == "default" else value


def _user_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The options given to ``users set``, as the fields to change."""
    changes = {q: _unset(getattr(args, q)) for q in QUOTAS if getattr(args, q) is not None}
    return ({"role": args.role} if args.role else {}) | changes


def cmd_users(args: argparse.Namespace) -> int:
    given = [f"--{f.replace('_', '-')}" for f in ("role", *QUOTAS) if getattr(args, f) is not None]
    if given and args.action not in ("add", "set"):
        raise ValueError(f"{given[0]}: only with `reskd users add` or `reskd users set`")
    if (args.name is None) != (args.action == "list"):
        raise ValueError(
            f"name: `reskd users list` takes none, `reskd users {args.action}` needs one"
            if args.action == "list"
            else f"name: `reskd users {args.action}` needs the user's name"
        )
    client = client_of(args)
    if args.action == "list":
        users = client.users()
    elif args.action == "add":
        quotas = {q: _unset(getattr(args, q)) for q in QUOTAS}
        users = [client.add_user(args.name, role=args.role or "member", **quotas)]
    elif args.action == "set":
        changes = _user_changes(args)
        if not changes:
            raise ValueError("users set: give --role, --max-running-jobs or "
                             "--max-device-hours-per-day")  # fmt: skip
        users = [client.update_user(args.name, **changes)]
    else:
        users = [client.update_user(args.name, disabled=args.action == "disable")]
    if args.json:
        print(json.dumps(users if args.action == "list" else users[0], indent=2))
        return 0
    if args.action == "disable":
        print(f"user {args.name} disabled: requests with their keys are refused from now on")
    elif args.action == "enable":
        print(f"user {args.name} enabled: their keys that are not revoked or expired work again")
    elif args.action == "add":
        print(f"user {args.name} added ({users[0]['role']}); `reskd keys create --user "
              f"{args.name}` makes their key")  # fmt: skip
    print_users(users)
    return 0


def _quota_text(value: Any, unit: str = "") -> str:
    return "default" if value is None else f"{value:g}{unit}"


def print_users(users: list[dict[str, Any]]) -> None:
    """A row per user: role, state, quotas, when added."""
    rows = [
        {
            "name": u["name"],
            "role": u["role"],
            "state": "disabled" if u.get("disabled") else "active",
            "max running jobs": _quota_text(u.get("max_running_jobs")),
            "max device hours/day": _quota_text(u.get("max_device_hours_per_day"), " h"),
            "added": _when(u.get("created_at")),
        }
        for u in users
    ]
    print(format_table(rows, list(rows[0])) if rows else "no users")


# -- keys --------------------------------------------------------------------------------------


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    at = datetime.fromisoformat(text)
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)  # the service's are UTC


def _when(text: str | None) -> str:
    """``2025-03-01 14:05 UTC``, or ``-``."""
    at = _time(text)
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if at else "-"


def key_state(key: dict[str, Any], now: datetime | None = None) -> str:
    """``active``, ``revoked`` or ``expired``."""
    if key.get("revoked_at"):
        return "revoked"
    expires = _time(key.get("expires_at"))
    return "expired" if expires is not None and expires <= (now or datetime.now(UTC)) else "active"


def print_keys(keys: list[dict[str, Any]]) -> None:
    """A row per key (never the key itself): whose, what for, until when, whether it works."""
    rows = [
        {
            "id": k["id"],
            "user": k["user"],
            "label": k.get("label") or "",
            "created": _when(k["created_at"]),
            "expires": _when(k.get("expires_at")) if k.get("expires_at") else "never",
            "state": key_state(k),
        }
        for k in keys
    ]
    print(format_table(rows, list(rows[0])) if rows else "no API keys")


def cmd_keys(args: argparse.Namespace) -> int:
    given = [o for o, v in (("--user", args.user), ("--label", args.label),
                            ("--expires-days", args.expires_days),
                            ("--no-expiry", args.no_expiry or None)) if v is not None]  # fmt: skip
    if given and args.action != "create":
        raise ValueError(f"{given[0]}: only with `reskd keys create`")
    if (args.id is None) != (args.action != "revoke"):
        raise ValueError(
            "id: `reskd keys revoke` needs the key's id (reskd keys list shows it)"
            if args.action == "revoke"
            else f"id: `reskd keys {args.action}` takes none"
        )
    client = client_of(args)
    if args.action == "list":
        keys = client.keys()
        print(json.dumps(keys, indent=2)) if args.json else print_keys(keys)
        return 0
    if args.action == "revoke":
        key = client.revoke_key(args.id)
        if args.json:
            print(json.dumps(key, indent=2))
        else:
            print(f"API key {key['id']} of {key['user']} revoked: requests with it are refused")
        return 0
    days = None if args.no_expiry else (args.expires_days or 90)
    key = client.create_key(user=args.user, label=args.label, expires_in_days=days)
    if args.json:
        print(json.dumps(key, indent=2))
        return 0
    print(key["key"], flush=True)  # alone on stdout: `reskd keys create > file` keeps just it
    until = f"expires {_when(key['expires_at'])}" if key.get("expires_at") else "never expires"
    label = f" ({key['label']})" if key.get("label") else ""
    print(
        f"API key {key['id']} of {key['user']}{label}, {until}. It will not be shown again: "
        f"keep it now (`reskd login` reads it from stdin).",
        file=sys.stderr,
    )
    return 0


# -- login, logout, whoami ---------------------------------------------------------------------


def _read_key(given: str | None) -> str:
    if given is None:
        if sys.stdin.isatty():
            given = getpass.getpass("API key (or the service's token): ")
        else:
            given = sys.stdin.readline()
    key = given.strip()
    if not key:
        raise ValueError("key: none given (--key KEY, or the key on stdin)")
    return key


def cmd_login(args: argparse.Namespace) -> int:
    key = _read_key(args.key)
    client = Client(args.url, key)
    who = client.me()
    if who["name"] == "local" and who.get("key_id") is None:
        # a service without a token takes an unknown key as no key at all
        raise ValueError(
            f"key: the service at {client.url} does not know this key (it needs none on "
            "127.0.0.1); nothing stored"
        )
    path = credentials.save(client.url, key)
    print(f"signed in as {who['name']} ({who['role']}) at {client.url}")
    print(f"the key is kept in {path} (readable by you only); `reskd logout` forgets it")
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    stored = credentials.load()
    url = (args.url or os.environ.get("RESKD_URL") or stored.url or "").rstrip("/")
    key = stored.key_for(url) if url else None
    if key is None:
        print(f"no key kept for {url or 'any service'}; nothing to forget")
        return 0
    if args.revoke:
        client = Client(url, key)
        try:
            key_id = client.me().get("key_id")
        except ServiceError as exc:
            if exc.status not in (401, 403):
                raise
            key_id = None  # refused already (revoked, expired): nothing to revoke
            print(f"the service refuses this key already ({exc.detail})")
        if key_id is not None:
            client.revoke_key(int(key_id))
            print(f"API key {key_id} revoked at {url}")
    credentials.forget(url)
    print(f"signed out of {url}: its key is no longer kept in {credentials.location()}")
    return 0


def cmd_whoami(args: argparse.Namespace) -> int:
    client = client_of(args)
    who = client.me()
    print(f"{who['name']} ({who['role']}) at {client.url}")
    held = f"API key {who['key_id']}" if who.get("key_id") is not None else "the service's token"
    if client.credential is None:
        print("with no credential (a service without a token takes everyone as its local admin)")
    else:
        source = "--token" if client.credential == "given" else client.credential
        print(f"with {held}, from {source}")
    quotas = [f"{_quota_text(who.get(q))} {q.removeprefix('max_').replace('_', ' ')}"
              for q in QUOTAS if who.get(q) is not None]  # fmt: skip
    if quotas:
        print(f"quotas: {', '.join(quotas)}")
    return 0


# -- the audit log -----------------------------------------------------------------------------


def _detail_text(detail: dict[str, Any] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in (detail or {}).items() if v is not None)


def cmd_audit(args: argparse.Namespace) -> int:
    log = client_of(args).audit(actor=args.actor, action=args.action, limit=args.limit)
    if args.json:
        print(json.dumps(log, indent=2))
        return 0
    rows = [
        {
            "id": e["id"],
            "at": _when(e["at"]),
            "actor": e["actor"],
            "action": e["action"],
            "target": e["target"],
            "detail": _detail_text(e.get("detail")),
        }
        for e in log["entries"]
    ]
    print(format_table(rows, list(rows[0])) if rows else "no entries")
    print(f"{len(rows)} of {log['total']} entries, newest first")
    return 0
