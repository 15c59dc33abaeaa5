"""The exit statuses of a worker process that its supervisor (``serve.WorkerPool``) acts on."""

from __future__ import annotations

EXIT_DATABASE_GONE = 3  # its database file was deleted: restarting would open a new, empty one
