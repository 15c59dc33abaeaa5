"""What a service keeps: ``reskd delete job|sweep|checkpoint|dataset`` and ``reskd usage`` over
HTTP, and ``reskd gc`` on the service's own artifact root and database (read as ``reskd worker``
reads them: ``--artifact-root`` and ``--database-url``, else RESKD_ARTIFACT_ROOT and
RESKD_DATABASE_URL)."""

from __future__ import annotations

import argparse
import getpass
import json
from collections.abc import Callable
from typing import Any

from api.cli.options import Subparsers, add_client_options, client_of
from distill.report import format_table
from space.numbers import duration, significant

DELETABLE = ("job", "sweep", "checkpoint", "dataset")


def add_parsers(subparsers: Subparsers) -> None:
    delete = subparsers.add_parser(
        "delete",
        help="delete an ended job, an ended sweep with its trials, or an uploaded checkpoint or "
        "dataset, with their files (a stage another job uses stays)",
        description="`reskd delete job ID`, `reskd delete sweep ID`, `reskd delete checkpoint "
        "NAME`, `reskd delete dataset NAME`: its owner or an admin. A queued or running job, or "
        "an upload such a job names, is refused: cancel it first.",
    )
    delete.add_argument("what", choices=DELETABLE, metavar="WHAT", help=", ".join(DELETABLE))
    delete.add_argument(
        "target", metavar="ID_OR_NAME", help="a job's or sweep's id, an upload's name"
    )
    delete.add_argument("--json", action="store_true", help="print what was removed as JSON")
    add_client_options(delete)
    delete.set_defaults(func=cmd_delete)

    gc = subparsers.add_parser(
        "gc",
        help="remove the files nothing references on this service's artifact root (stage "
        "folders no job uses, deleted jobs' folders, temporary files; old uploads with "
        "--older-than)",
    )
    gc.add_argument(
        "--older-than",
        type=float,
        metavar="DAYS",
        help="also remove uploaded checkpoints and datasets older than DAYS that no job names",
    )
    gc.add_argument("--dry-run", action="store_true", help="remove nothing: list what would go")
    gc.add_argument("--artifact-root", help="the service's (default $RESKD_ARTIFACT_ROOT)")
    gc.add_argument("--database-url", help="the service's (default $RESKD_DATABASE_URL)")
    gc.add_argument("--json", action="store_true", help="print JSON")
    gc.set_defaults(func=cmd_gc)

    usage = subparsers.add_parser(
        "usage", help="per user: jobs, device time (in all and the last 24 h) and disk"
    )
    usage.add_argument("--json", action="store_true", help="print JSON")
    add_client_options(usage)
    usage.set_defaults(func=cmd_usage)


def size_text(size: int | None) -> str:
    """Bytes as a person reads them, to three significant digits: ``812 B``, ``24.6 kB``."""
    if size is None:
        return "-"
    for scale, unit in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if abs(size) >= scale:
            return f"{significant(size / scale, 3)} {unit}"
    return f"{size} B"


def cmd_delete(args: argparse.Namespace) -> int:
    client = client_of(args)
    if args.what in ("job", "sweep") and not args.target.isdigit():
        raise ValueError(f"{args.what}: {args.target!r} is not an id (a whole number)")
    calls = {
        "job": lambda: client.delete_job(int(args.target)),
        "sweep": lambda: client.delete_sweep(int(args.target)),
        "checkpoint": lambda: client.delete_checkpoint(args.target),
        "dataset": lambda: client.delete_dataset(args.target),
    }
    return _show(calls[args.what](), args.json, print_removed)


def cmd_gc(args: argparse.Namespace) -> int:
    from api.runtime import retention
    from api.runtime.settings import Settings
    from db.session import Database

    given = {"artifact_root": args.artifact_root, "database_url": args.database_url}
    settings = Settings(**{k: v for k, v in given.items() if v is not None})
    db = Database(settings.url)
    db.migrate()
    removed = retention.gc(
        settings, db, older_than_days=args.older_than, dry_run=args.dry_run, who=_operator()
    )
    return _show(removed.model_dump(), args.json, print_removed)


def cmd_usage(args: argparse.Namespace) -> int:
    return _show(client_of(args).usage(), args.json, print_usage)


def _show(found: dict[str, Any], as_json: bool, table: Callable[[dict[str, Any]], None]) -> int:
    """``found`` as JSON or as ``table`` prints it."""
    if as_json:
        print(json.dumps(found, indent=2))
    else:
        table(found)
    return 0


def _operator() -> str:
    """Who runs ``reskd gc`` (its audit entry's actor): the system's user name."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no name for this user id
        return "cli"


def print_removed(removed: dict[str, Any]) -> None:
    """What a delete or ``gc`` removed: each path, the rows, the bytes freed."""
    verb = "would remove" if removed.get("dry_run") else "removed"
    if removed["paths"]:
        print(format_table([{"path": p} for p in removed["paths"]], ["path"]))
    rows = ", ".join(f"{n} {table}" for table, n in sorted(removed["rows"].items()) if n)
    n = len(removed["paths"])
    print(
        f"{removed['target']}: {verb} {n} path{'' if n == 1 else 's'} "
        f"({size_text(removed['bytes_freed'])})" + (f"; rows: {rows}" if rows else "")
    )
    for folder in removed.get("kept") or []:
        print(f"kept {folder}: another job uses it, or a worker holds it")


def print_usage(found: dict[str, Any]) -> None:
    """``reskd usage``: a row per user, the shared line, and the total measured."""
    rows = [_usage_row(u) for u in found["users"]]
    rows.append(_usage_row(found["shared"]) | {"jobs": "-", "device time": "-", "last 24 h": "-"})
    print(format_table(rows, list(rows[0])))
    print(f"total on disk: {size_text(found['total_bytes'])} (the database aside)")


def _usage_row(line: dict[str, Any]) -> dict[str, Any]:
    return {
        "user": line["user"],
        "jobs": line["jobs"],
        "device time": duration(line["device_hours"] * 3600),
        "last 24 h": duration(line["device_hours_24h"] * 3600),
        "jobs' folders": size_text(line["job_bytes"]),
        "stages": size_text(line["stage_bytes"]),
        "uploads": size_text(line["upload_bytes"]),
        "disk": size_text(line["disk_bytes"]),
    }
