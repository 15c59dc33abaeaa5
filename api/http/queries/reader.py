"""What the reads take: a route's session, or the event loop's connection (``Database.loop_read``).
They run their statements on its connection: a statement of columns run through a session's ORM
layer cost about twice as much to read back."""

from __future__ import annotations

from sqlalchemy import Connection
from sqlalchemy.orm import Session

Reader = Session | Connection


def connection_of(s: Reader) -> Connection:
    """The connection of ``s`` (a session's, in its transaction)."""
    return s.connection() if isinstance(s, Session) else s
