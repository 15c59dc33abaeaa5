"""The ``reskd`` command line. Only entry points parse arguments; the library never does.

Each command group is a module with its own ``add_parsers``: ``local`` (flops, models, datasets,
run, search), ``service`` (serve, worker), ``remote`` (submit, jobs, show, cancel, pareto,
sweep), ``accounts`` (users, keys, login, logout, whoami, audit), ``export`` (export, predict)
and ``demo``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from api.cli import accounts, demo, export, local, remote, retention, service
from api.cli.allocator import TRAINING_COMMANDS, restart_under_allocator
from api.client import ServiceError
from distill.catalog import DatasetError


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("reskd")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reskd",
        description="Residual-guided knowledge distillation with searched res-students",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for group in (local, service, remote, accounts, retention, export, demo):  # --help's order
        group.add_parsers(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if argv is None and args.command in TRAINING_COMMANDS:  # not when called in process (tests)
        error = restart_under_allocator()
        if error:
            print(f"reskd {args.command}: error: {error}", file=sys.stderr)
            return 2
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # here, where a closed pipe is caught, not at the interpreter's exit
        return code
    except (DatasetError, ValueError, ServiceError) as exc:
        print(f"reskd {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `reskd show 3 --json | head`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a command cut off by its pipe


if __name__ == "__main__":
    raise SystemExit(main())
