"""A real PostgreSQL server on 127.0.0.1 for the tests.

``.ci/run`` installs Debian's postgresql package and starts one, passing its URL in
``RESKD_TEST_POSTGRES_URL``. Without that variable the tests start their own server here (initdb in a
temporary folder, as the ``postgres`` user when run as root) if the server's programs are
installed; otherwise the PostgreSQL cases are skipped with the reason.

As a script: ``python -m tests.postgres start DIR`` starts a server and prints its URL,
``python -m tests.postgres stop DIR`` stops it.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

ENV = "RESKD_TEST_POSTGRES_URL"


def _bin(name: str) -> str | None:
    found = shutil.which(name)
    if found and name != "pg_ctl":  # /usr/bin/pg_ctl may be Debian's wrapper; prefer the real one
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_server_user(args: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return args
    return ["runuser", "-u", "postgres", "--", *args]


class Server:
    """initdb + pg_ctl start on a free port, trust auth on 127.0.0.1; ``stop()`` removes it."""

    def __init__(self, directory: Path) -> None:
        initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
        if not initdb or not pg_ctl:
            raise RuntimeError(
                "PostgreSQL's server programs (initdb, pg_ctl) are not installed "
                "(Debian: apt-get install postgresql)"
            )
        self.pg_ctl = pg_ctl
        self.dir = directory
        self.data = directory / "data"
        self.port = _free_port()
        directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(directory, "postgres")
        run = {"check": True, "capture_output": True, "text": True}
        try:
            subprocess.run(
                _as_server_user(
                    [initdb, "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8"]
                ),
                **run,  # type: ignore[call-overload]
            )
            subprocess.run(
                _as_server_user(
                    [
                        pg_ctl,
                        "-D",
                        str(self.data),
                        "-l",
                        str(directory / "server.log"),
                        "-o",
                        f"-h 127.0.0.1 -p {self.port} -k {directory} -c fsync=off",
                        "-w",
                        "start",
                    ]
                ),
                **run,  # type: ignore[call-overload]
            )
        except subprocess.CalledProcessError as exc:
            log = directory / "server.log"
            raise RuntimeError(
                f"PostgreSQL did not start: {exc.stderr or exc.stdout}"
                + (log.read_text() if log.exists() else "")
            ) from exc
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        stop(self.dir)


def fresh_database(server_url: str) -> str:
    """A new empty database on the server; its URL."""
    import psycopg

    name = f"reskd_{uuid.uuid4().hex[:12]}"
    plain = server_url.replace("postgresql+psycopg://", "postgresql://")
    deadline = time.time() + 30
    while True:
        try:
            with psycopg.connect(plain, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            break
        except psycopg.OperationalError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)
    return server_url.rsplit("/", 1)[0] + f"/{name}"


def stop(directory: Path) -> None:
    """Stop the server started in ``directory`` and remove it."""
    pg_ctl = _bin("pg_ctl")
    if pg_ctl and (directory / "data").is_dir():
        subprocess.run(
            _as_server_user([pg_ctl, "-D", str(directory / "data"), "-m", "immediate", "stop"]),
            capture_output=True,
        )
    shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("start", "stop"):
        raise SystemExit("usage: python -m tests.postgres start|stop DIR")
    if sys.argv[1] == "start":
        print(Server(Path(sys.argv[2])).url)
    else:
        stop(Path(sys.argv[2]))
