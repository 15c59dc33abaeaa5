"""Options that several ``reskd`` commands share, and the client they name."""

from __future__ import annotations

import argparse
from typing import TypeAlias

from api.client import Client

# what ``ArgumentParser.add_subparsers`` returns: each command group's ``add_parsers`` takes it
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

URL_HELP = (
    "service URL (default $RESKD_URL, else the one `reskd login` stored, else "
    "http://127.0.0.1:8321)"
)


def add_set_option(parser: argparse.ArgumentParser) -> None:
    """``--set KEY=VALUE`` (repeatable), read by ``api.client.with_sets``."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change a config field (YAML value, dotted key; repeatable): --set "
        "train.epochs=1 --set res_students.0.width=0.5",
    )


def add_client_options(parser: argparse.ArgumentParser, *, url: str | None = None) -> None:
    """``--url`` (with ``url`` as its help where the command has its own use for it) and
    ``--token`` of the service a command talks to."""
    parser.add_argument("--url", help=url or URL_HELP)
    parser.add_argument(
        "--token",
        help="the service's token or an API key (default $RESKD_TOKEN, else the key `reskd "
        "login` stored for the URL)",
    )


def client_of(args: argparse.Namespace) -> Client:
    """The client of the service that ``--url`` and ``--token`` name."""
    return Client(args.url, args.token)
