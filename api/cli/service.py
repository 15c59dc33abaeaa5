"""The service: ``reskd serve`` (the HTTP API with its workers) and ``reskd worker``."""

from __future__ import annotations

import argparse
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

from api.cli.options import Subparsers

if TYPE_CHECKING:
    from api.runtime.settings import Settings


def add_parsers(subparsers: Subparsers) -> None:
    serve = subparsers.add_parser("serve", help="the HTTP API with an embedded worker pool")
    _add_service_options(serve)
    serve.set_defaults(func=cmd_serve)
    worker = subparsers.add_parser("worker", help="workers alone, against the service's database")
    _add_service_options(worker, http=False)
    worker.set_defaults(func=cmd_worker)


def _add_service_options(parser: argparse.ArgumentParser, *, http: bool = True) -> None:
    if http:  # workers serve no HTTP, and read only the paths the API has allowed
        parser.add_argument("--host", help="bind address (default 127.0.0.1; others need a token)")
        parser.add_argument("--port", type=int, help="port (default 8321)")
        parser.add_argument(
            "--data-root",
            action="append",
            metavar="DIR",
            help="a directory whose files jobs over the API may read: a job's `root` and "
            "checkpoint paths may name files under it, and GET /v1/datasets lists the "
            "image folders and CIFAR roots at or directly under it (repeatable; added to "
            "RESKD_DATA_ROOTS). Uploaded datasets (POST /v1/datasets) need none",
        )
    parser.add_argument("--artifact-root", help="files of jobs and stages (default runs/service)")
    parser.add_argument("--database-url", help="SQLAlchemy URL (default SQLite in artifact root)")
    parser.add_argument("--token", help="bearer token clients must send")
    parser.add_argument("--device", help="auto, cpu or cuda")
    parser.add_argument("--workers", type=int, help="workers (default one per GPU, else 1)")
    parser.add_argument(
        "--ray-address", help="run jobs as tasks on this Ray cluster (host:port; .[ray])"
    )


def _settings(args: argparse.Namespace) -> Settings:
    from api.runtime.settings import Settings

    overrides = {
        k: v
        for k, v in {
            "host": getattr(args, "host", None),
            "port": getattr(args, "port", None),
            "artifact_root": args.artifact_root,
            "database_url": args.database_url,
            "token": args.token,
            "device": args.device,
            "ray_address": getattr(args, "ray_address", None),
        }.items()
        if v is not None
    }
    settings = Settings(**overrides)
    added = [_data_root(d) for d in getattr(args, "data_root", None) or []]
    return settings.model_copy(update={"data_roots": [*settings.data_roots, *added]})


def _data_root(given: str) -> Path:
    path = Path(given).expanduser().resolve()
    if not path.is_dir():
        raise ValueError(f"--data-root: {given} is not a directory")
    return path


def cmd_serve(args: argparse.Namespace) -> int:
    from api.runtime.serve import serve

    serve(_settings(args), workers=args.workers)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from db.session import Database

    settings = _settings(args)
    Database(settings.url).migrate()
    if settings.ray_address:  # no local workers: claimed jobs run as Ray tasks
        _dispatch_to_ray(settings, args.workers)
    else:
        _run_workers(settings, args.workers)
    return 0


def _dispatch_to_ray(settings: Settings, capacity: int | None) -> None:
    from api.runtime.ray_dispatch import RayDispatcher

    dispatcher = RayDispatcher(settings, capacity=capacity)
    print(f"{dispatcher.describe()}; database {settings.url}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: dispatcher.stop())
    try:
        dispatcher.run_forever()
    except KeyboardInterrupt:
        dispatcher.stop()
        dispatcher.shutdown()


def _run_workers(settings: Settings, workers: int | None) -> None:
    """Worker processes until Ctrl-C or SIGTERM, which stop them with the pool."""
    from api.runtime.serve import WorkerPool

    pool = WorkerPool(settings, workers)

    def stop(*_: object) -> None:  # SIGTERM as Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    pool.start()
    print(
        f"{len(pool.processes)} worker(s) on {settings.url}{pool.describe_allocator()}; "
        "Ctrl-C stops them",
        flush=True,
    )
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pool.stop()
