"""Commands that train in this process (``reskd run``, ``reskd search``), started from a shell,
restart themselves under the allocator the service's workers use (``RESKD_ALLOCATOR``, default
auto: tcmalloc if installed)."""

from __future__ import annotations

import os
import sys

TRAINING_COMMANDS = ("run", "search")


def restart_under_allocator() -> str | None:
    """Replace this process by the same command line with the allocator preloaded; returns an
    error for a ``RESKD_ALLOCATOR`` that names nothing usable, else returns only when there is
    nothing to preload (or it already is)."""
    from api.runtime.serve import with_allocator
    from api.runtime.settings import check_allocator

    try:
        choice = check_allocator(os.environ.get("RESKD_ALLOCATOR", "auto"), "RESKD_ALLOCATOR")
    except ValueError as exc:
        return str(exc)
    env = with_allocator(choice, os.environ)
    if env is not None:
        sys.stdout.flush()
        os.execve(sys.executable, sys.orig_argv, env)
    return None
