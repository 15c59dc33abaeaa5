"""The executors' one loop: local workers (``api.runtime.worker``) and the Ray dispatcher
(``api.runtime.ray_dispatch``) claim jobs, start them, look after what they started, and, when
idle, advance sweeps a dead worker left behind."""

from __future__ import annotations

import threading
import time
import traceback
from abc import ABC, abstractmethod

from api.runtime import sweeps
from api.runtime.settings import Settings
from api.runtime.store import JobQueue
from db.session import Database

SWEEP_CHECK_SECONDS = 10.0


class Executor(ABC):
    name: str
    settings: Settings
    db: Database
    queue: JobQueue

    def __init__(self) -> None:
        self.stopping = threading.Event()

    @abstractmethod
    def start_jobs(self) -> int:
        """Claim and start what there is room for; how many were started."""

    def look_after(self) -> None:
        """Between rounds: collect what ended, renew leases."""
        return None

    def busy(self) -> bool:
        return False

    def gone(self) -> bool:
        """True when this executor should stop now (its parent process died)."""
        return False

    def shutdown(self) -> None:
        """On stop: hand running jobs back."""
        return None

    def run_forever(self, *, max_jobs: int | None = None) -> None:
        started = 0
        next_sweep_check = 0.0
        while not self.stopping.is_set() and not self.gone():
            self.look_after()
            new = self.start_jobs()
            started += new
            if max_jobs is not None and started >= max_jobs:
                break
            if not new and not self.busy() and time.time() >= next_sweep_check:
                next_sweep_check = time.time() + SWEEP_CHECK_SECONDS
                self.advance_sweeps(None)  # a sweep left behind by a dead worker
            if not new:
                self.stopping.wait(self.settings.poll_seconds)
        self.shutdown()

    def advance_sweeps(self, sweep_id: int | None) -> None:
        """Tell a sweep its ended trials and ask for new ones (all running sweeps for None)."""
        try:
            if sweep_id is None:
                sweeps.advance_running(self.db, self.queue, owner=self.name)
            else:
                sweeps.advance(self.db, self.queue, sweep_id, owner=self.name)
        except Exception:  # a sweep's trouble must not stop the executor; the next check retries
            traceback.print_exc()
