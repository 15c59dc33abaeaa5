"""Storage faults: a full, read-only or unwritable disk under the artifact root or the database,
told apart from bugs so that the HTTP API answers them as 507 or 503 naming the errno, a failed
job's error says which, and ``/v1/health`` reports a store it cannot write.

The same fault reaches the service in several dresses: an ``OSError`` with its errno (a file
written under the artifact root), SQLite's or PostgreSQL's words wrapped in SQLAlchemy's
``OperationalError`` ("database or disk is full", "attempt to write a readonly database"), or
PyTorch's serializer's ("unexpected pos", "file write failed": a checkpoint cut short).
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

FULL = (errno.ENOSPC, errno.EDQUOT)
UNWRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO)
# the databases' and PyTorch's words for the same faults, and the errno each stands for
WORDS = (
    ("database or disk is full", errno.ENOSPC),
    ("no space left on device", errno.ENOSPC),
    ("disk quota exceeded", errno.EDQUOT),
    ("attempt to write a readonly database", errno.EROFS),
    ("read-only file system", errno.EROFS),
    ("read-only transaction", errno.EROFS),
    ("disk i/o error", errno.EIO),
    ("unable to open database file", errno.EACCES),
    ("unexpected pos", errno.ENOSPC),  # PyTorch's zip writer: fewer bytes written than asked
    ("file write failed", errno.ENOSPC),
)
BUSY = ("database is locked", "database is busy", "lock timeout", "could not obtain lock")


@dataclass(frozen=True)
class StorageFault:
    errno: int

    @property
    def full(self) -> bool:
        """Out of space (HTTP 507) rather than not writable (HTTP 503)."""
        return self.errno in FULL

    @property
    def name(self) -> str:
        return errno.errorcode.get(self.errno, str(self.errno))

    def __str__(self) -> str:
        what = "the storage is full" if self.full else "the storage cannot be written"
        return f"{what}: {os.strerror(self.errno).lower()} ({self.name})"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def storage_fault(exc: BaseException) -> StorageFault | None:
    """The storage fault behind ``exc`` (or one it was raised from), None if it is none."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in (*FULL, *UNWRITABLE):
            return StorageFault(e.errno)
        text = str(e).lower()
        found = next((code for words, code in WORDS if words in text), None)
        if found is not None:
            return StorageFault(found)
    return None


def busy(exc: BaseException) -> bool:
    """Whether ``exc`` is a database lock that was not released in time (try again later)."""
    return any(words in str(e).lower() for e in _chain(exc) for words in BUSY)


def write_probe(directory: Path) -> str | None:
    """What fails when a few bytes are written, flushed to disk and removed in ``directory``
    (None when it can be written): a full disk fails here as a checkpoint would."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".health-") as f:
            f.write(b"reskd health probe\n" * 16)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        fault = storage_fault(exc)
        return str(fault) if fault else f"{type(exc).__name__}: {exc.strerror or exc}"
    return None
