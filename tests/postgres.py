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
import uuid
from pathlib import Path

from tests.waiting import wait_until

ENV = "RESKD_TEST_POSTGRES_URL"


def _bin(name: str) -> str | None:
    found = shutil.which(name)
    if found and name != "pg_ctl":  # /usr/bin/pg_ctl may be Debian's wrapper; prefer the real one
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else found


def free_port() -> int:
    """A port free on 127.0.0.1 now (another process may take it before it is bound)."""
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
        directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(directory, "postgres")
        log = directory / "server.log"
        run = {"check": True, "capture_output": True, "text": True}
        # A free port can be taken by another process (a parallel test worker's server) before
        # this one binds it: then the start is tried again on another.
        for attempt in range(3):
            self.port = free_port()
            try:
                if attempt == 0:
                    subprocess.run(
                        _as_server_user(
                            [initdb, "-D", str(self.data), "-U", "postgres", "-A", "trust",
                             "-E", "UTF8"]
                        ),
                        **run,  # type: ignore[call-overload]
                    )  # fmt: skip
                subprocess.run(
                    _as_server_user(
                        [pg_ctl, "-D", str(self.data), "-l", str(log), "-o",
                         f"-h 127.0.0.1 -p {self.port} -k {directory} -c fsync=off", "-w", "start"]
                    ),
                    **run,  # type: ignore[call-overload]
                )  # fmt: skip
                break
            except subprocess.CalledProcessError as exc:
                said = log.read_text() if log.exists() else ""
                if attempt < 2 and "could not bind" in said:
                    continue
                raise RuntimeError(
                    f"PostgreSQL did not start: {exc.stderr or exc.stdout}{said}"
                ) from exc
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        stop(self.dir)


def fresh_database(server_url: str) -> str:
    """A new empty database on the server (once it accepts connections); its URL."""
    import psycopg

    name = f"reskd_{uuid.uuid4().hex[:12]}"
    plain = server_url.replace("postgresql+psycopg://", "postgresql://")
    refused: list[Exception] = []

    def created() -> bool:
        try:
            with psycopg.connect(plain, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
        except psycopg.OperationalError as exc:
            refused.append(exc)
            return False
        return True

    wait_until(created, timeout=30, every=0.2, what=lambda: f"{server_url}: {refused[-1:]}")
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
