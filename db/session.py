"""The database: an engine from a URL (SQLite in WAL mode with a busy timeout by default, any
SQLAlchemy URL such as PostgreSQL by setting), Alembic migrations, and ONE session context manager
that owns commit, rollback and close.

On SQLite, read-only sessions take their connections from a pool of their own: writers waiting
for the write lock (each holding a connection for up to ``write_wait`` seconds) never leave the
readers without one, and in WAL mode a reader waits for no writer.

Thread safety: a :class:`Database` is shared by threads; each ``with db.session()`` block gets its
own session and connection from the pool.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"
BUSY_TIMEOUT_MS = 30_000
READ_WAIT = 5.0  # seconds a read waits for SQLite (only while a checkpoint or a recovery runs)
T = TypeVar("T")


class DatabaseBusy(RuntimeError):
    """As many writers as a process allows wait for the database already (try again later)."""


class DatabaseGone(RuntimeError):
    """The SQLite file was deleted or replaced under a running process: its open connections
    would go on reading and writing the deleted file (and lose everything), so nothing may."""


def sqlite_connect_args(wait: float) -> dict[str, Any]:
    return {"timeout": wait, "check_same_thread": False}


class Database:
    """``write_wait``: seconds a write waits for SQLite's write lock, or for a connection of the
    pool, before it fails ("database is locked", a pool ``TimeoutError``); the API, which
    answers those as 503 with Retry-After, waits less than a worker. ``writers``: how many
    write sessions of this process may be open (waiting or writing) at once; one more waits a
    second for a place, then fails with :class:`DatabaseBusy`. A writer holding the lock for
    long then ties up that many of the API's threads, never all of them (the reads need some).
    """

    def __init__(
        self, url: str, *, write_wait: float = BUSY_TIMEOUT_MS / 1000, writers: int | None = None
    ) -> None:
        self.url = url
        self.write_wait = write_wait
        self._writers = None if writers is None else threading.BoundedSemaphore(writers)
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {"future": True}
        self.file: Path | None = None
        self._identity: tuple[int, int] | None = None
        if self.is_sqlite:
            path = url.split("///", 1)[-1]
            if path and path != ":memory:" and not url.startswith("sqlite:///:memory"):
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                self.file = Path(path)
            kwargs["connect_args"] = sqlite_connect_args(write_wait)
        else:
            kwargs |= {"pool_pre_ping": True, "pool_size": 10, "max_overflow": 20}
        if not self.is_sqlite or self.file is not None:  # a queue of connections, not one
            kwargs["pool_timeout"] = write_wait
        self.engine: Engine = create_engine(url, **kwargs)
        self._read_engine = self.engine
        if self.is_sqlite:
            serialize_sqlite_writers(self.engine, wait=write_wait)
            if self.file is not None:  # a pool of the readers' own (see the module's doc)
                self._read_engine = create_engine(
                    url, connect_args=sqlite_connect_args(READ_WAIT), pool_timeout=READ_WAIT
                )
                serialize_sqlite_writers(self._read_engine, wait=READ_WAIT)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Read-only sessions begin a plain (deferred) transaction: in WAL mode readers neither
        # wait for nor block writers.
        self._read_sessions = sessionmaker(
            self._read_engine.execution_options(reskd_readonly=True), expire_on_commit=False
        )
        self._loop_engine: Engine | None = None  # see loop_read

    @contextmanager
    def session(self, *, readonly: bool = False) -> Iterator[Session]:
        """A session committed at the end of the block, rolled back on an exception, closed
        always. ``readonly`` sessions must not write (on SQLite they do not take the write lock)."""
        self.check_file()
        writers = None if readonly else self._writers
        if writers is not None and not writers.acquire(timeout=min(1.0, self.write_wait)):
            raise DatabaseBusy("database is busy: as many writes as allowed wait for it")
        session = (self._read_sessions if readonly else self._sessions)()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()
            if writers is not None:
                writers.release()
            if self._identity is None and self.file is not None:
                self._identity = _identity(self.file)

    def loop_read(self, read: Callable[[Connection], T]) -> T:
        """``read(connection)``, read-only (on PostgreSQL in autocommit: each statement is its own
        snapshot), for short, bounded reads made on the API's event loop (a Pareto front,
        one statement): the connection comes from a pool of its own with one
        connection that only the loop's thread takes, so it never waits behind the thread
        pool's sessions (a full shared pool would stall the loop), and the read costs no hop to
        a worker thread. Without a ping per checkout (a round trip each time), a connection the
        server dropped fails once and is replaced: the read is tried once more on a new one."""
        self.check_file()
        if self._loop_engine is None:
            self._loop_engine = self._reserved_engine()
        for attempt in (1, 2):
            try:
                with self._loop_engine.connect() as connection, connection.begin():
                    return read(connection)
            except DBAPIError as exc:
                if attempt == 2 or not exc.connection_invalidated:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _reserved_engine(self) -> Engine:
        """The loop's engine, read-only (see ``loop_read``)."""
        if self.is_sqlite and self.file is None:  # in memory: one database per engine
            return self.engine.execution_options(reskd_readonly=True)
        kwargs: dict[str, Any] = {"pool_size": 1, "max_overflow": 0}
        if self.is_sqlite:
            kwargs["connect_args"] = sqlite_connect_args(READ_WAIT)
        else:  # a read of one statement needs no BEGIN and COMMIT (two more round trips)
            kwargs["isolation_level"] = "AUTOCOMMIT"
        engine = create_engine(self.url, **kwargs)
        if self.is_sqlite:
            serialize_sqlite_writers(engine, wait=READ_WAIT)
        return engine.execution_options(reskd_readonly=True)

    def check_file(self) -> None:
        """Raise :class:`DatabaseGone` if the SQLite file this process opened is gone."""
        if self._identity is None or self.file is None:
            return
        if _identity(self.file) != self._identity:
            raise DatabaseGone(
                "the database file was deleted or replaced while the service ran; nothing more "
                "is read or written: restore it and restart the service"
            )

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (creates it on an empty database)."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        from alembic.script import ScriptDirectory

        ours = {s.revision for s in ScriptDirectory.from_config(config).walk_revisions()}
        with self.engine.begin() as connection:
            _move_legacy_version_table(connection, ours)
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def dispose(self) -> None:
        self.engine.dispose()
        self._read_engine.dispose()
        if self._loop_engine is not None:
            self._loop_engine.dispose()


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def serialize_sqlite_writers(engine: Engine, *, wait: float = BUSY_TIMEOUT_MS / 1000) -> None:
    """WAL, a busy timeout, and every transaction taking SQLite's write lock up front (BEGIN
    IMMEDIATE), so two writers queue on the busy timeout instead of one failing with "database is
    locked" when its read transaction tries to become a write; ``wait`` seconds at most. Also
    used on Optuna's engine."""
    event.listen(engine, "connect", partial(_sqlite_pragmas, busy_ms=round(wait * 1000)))
    event.listen(engine, "begin", _sqlite_begin)
    engine.dispose()  # connections opened before the listeners would not have them


def _move_legacy_version_table(connection: Any, ours: set[str]) -> None:
    """Databases made before sweeps kept our revision in Alembic's default ``alembic_version``,
    which Optuna's storage uses for its own schema: move it to ``reskd_alembic_version``."""
    from sqlalchemy import inspect, text

    tables = set(inspect(connection).get_table_names())
    if "alembic_version" not in tables or "reskd_alembic_version" in tables:
        return
    revisions = {r[0] for r in connection.execute(text("SELECT version_num FROM alembic_version"))}
    if not revisions or not revisions <= ours:
        return  # Optuna's (or nobody's) revision: leave it
    connection.execute(
        text("CREATE TABLE reskd_alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
    )
    for revision in revisions:
        connection.execute(
            text("INSERT INTO reskd_alembic_version (version_num) VALUES (:r)"), {"r": revision}
        )
    connection.execute(text("DROP TABLE alembic_version"))


def _sqlite_begin(conn: Any) -> None:
    readonly = conn.get_execution_options().get("reskd_readonly", False)
    conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any, *, busy_ms: int) -> None:
    dbapi_connection.isolation_level = None  # SQLAlchemy's begin event issues BEGIN itself
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
