"""Workers: claim a job, run its stages, record progress, results and artifacts.

A worker is one process (``reskd worker``, or one of ``reskd serve``'s pool) bound to one device.
While it runs a job, a heartbeat thread renews its lease and polls for a cancel; the running stage
sees the cancel between batches and stops. A worker killed with SIGKILL stops renewing; when its
lease expires another worker claims the job, finished stages are reused from the shared stage
store and the interrupted stage resumes from its last epoch checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from api.runtime.devices import DeviceLocks
from api.runtime.exits import EXIT_DATABASE_GONE
from api.runtime.fairshare import Policy
from api.runtime.lease import held
from api.runtime.limits import limit_memory, memory_error, out_of_memory
from api.runtime.loop import Executor
from api.runtime.queues import open_queue
from api.runtime.runner import run_job
from api.runtime.settings import Settings
from api.runtime.storage import storage_fault
from api.runtime.store import Claim, JobQueue
from db.session import Database, DatabaseGone
from distill import observe
from distill.observe import Cancelled


class Lost(Cancelled):
    """The worker no longer owns its job (its lease expired and another worker took it)."""


class _Observer:
    """Writes a job's stages and progress to the database; holds stage locks there."""

    def __init__(self, queue: JobQueue, job_id: int, worker: str, settings: Settings) -> None:
        self.queue = queue
        self.job_id = job_id
        self.worker = worker
        self.settings = settings
        self.cancel = threading.Event()
        self.lost = threading.Event()
        self.stage_id: int | None = None
        self.last_write = 0.0  # the last progress written (batches write a few per minute)
        self.resumed_from = 0
        # The running phase (a training within the stage: a STACNAS search has two) and its
        # pace: the first position seen in it (batches done since the phase began) and when.
        self.phase: str | None = None
        self.pace: tuple[int, float] | None = None
        self.batches: int | None = None
        # the running stage's peak memory at its last epoch (``distill.memory.peak``)
        self.peak: dict[str, Any] = {}

    def check(self) -> None:
        if self.lost.is_set():
            raise Lost(f"job {self.job_id}: lease lost")
        if self.cancel.is_set():
            raise Cancelled(f"job {self.job_id}: cancelled")

    @contextmanager
    def exclusive(self, kind: str, key: str) -> Iterator[None]:
        # Another job's worker may compute this stage: wait (unless cancelled), then reuse it.
        with held(
            self.queue,
            f"{kind}-{key}",
            owner=self.worker,
            lease_seconds=self.settings.lease_seconds,
            poll=self.settings.poll_seconds,
            waiting=self.check,
        ):
            yield

    def stage_started(self, kind: str, key: str, name: str) -> None:
        self.stage_id = self.queue.stage_started(job_id=self.job_id, kind=kind, key=key, name=name)
        self.phase, self.pace, self.batches, self.peak = None, None, None, {}

    def stage_reused(self, kind: str, key: str, name: str) -> None:
        self.queue.stage_started(
            job_id=self.job_id, kind=kind, key=key, name=name, state="succeeded"
        )

    def stage_finished(self, kind: str, key: str, seconds: float) -> None:
        if self.stage_id is not None:
            self.queue.stage_finished(stage_id=self.stage_id, state="succeeded")
        self.stage_id = None

    def epoch(
        self, record: Any, total: int, resumed_from: int, extra: dict[str, Any] | None = None
    ) -> None:
        if self.stage_id is None:
            return
        self.queue.add_epoch(
            job_id=self.job_id,
            stage_id=self.stage_id,
            metrics={
                "epoch": record.epoch,
                "loss": record.loss,
                "train_accuracy": record.train_accuracy,
                "eval_accuracy": record.eval_accuracy,
                "lr": record.lr,
                "seconds": record.seconds,
                "expected_mflops": (extra or {}).get("expected_mflops"),
                "phase": (extra or {}).get("phase"),
            },
        )
        phase = (extra or {}).get("phase")
        self.peak = {k: (extra or {}).get(k) for k in ("peak_memory_bytes", "peak_memory_of")}
        self._enter(phase, record.epoch - 1, resumed_from, time.time() - record.seconds)
        self.resumed_from = resumed_from
        self.last_write = time.time()
        eta, rate, unit = self._pace(record.epoch, 0, total)
        self.queue.stage_progress(
            stage_id=self.stage_id,
            progress={
                "phase": phase,
                "epoch": record.epoch,
                "epochs": total,
                "batch": None,
                "batches": self.batches,
                "loss": record.loss,
                "accuracy": record.train_accuracy,
                "eval_accuracy": record.eval_accuracy,
                "seconds_per_epoch": record.seconds,
                "eta_seconds": eta,
                "rate": rate,
                "unit": unit,
                **self.peak,
            },
            resumed_from=resumed_from,
        )

    def batch(
        self,
        epoch: int,
        batch: int,
        batches: int,
        loss: float,
        epochs: int,
        phase: str | None = None,
    ) -> None:
        """Progress inside an epoch, written at most once per heartbeat period."""
        now = time.time()
        if self.stage_id is None:
            return
        self.batches = batches
        self._enter(phase, epoch, epoch, now, batch)
        if now - self.last_write < self.settings.heartbeat_seconds:
            return
        self.last_write = now
        eta, rate, unit = self._pace(epoch, batch, epochs)
        self.queue.stage_progress(
            stage_id=self.stage_id,
            progress={
                "phase": phase,
                "epoch": epoch,  # epochs completed
                "epochs": epochs,
                "batch": batch,
                "batches": batches,
                "loss": loss,
                "eta_seconds": eta,
                "rate": rate,
                "unit": unit,
                **self.peak,
            },
            resumed_from=self.resumed_from,
        )

    def _enter(
        self, phase: str | None, epoch: int, resumed_from: int, t0: float, batch: int = 0
    ) -> None:
        """Start timing a phase the first time it is seen (a resumed one starts mid-way)."""
        if self.pace is not None and phase == self.phase:
            return
        self.phase, self.resumed_from = phase, resumed_from
        self.pace = (epoch * (self.batches or 1) + batch, t0)

    def _pace(self, epoch: int, batch: int, epochs: int) -> tuple[float | None, float | None, str]:
        """ETA, rate and its unit of the running phase: batches per second once its batches are
        known, else epochs per second; measured over the phase so far (not the stage: a search's
        second supernet does not inherit its first's pace)."""
        per = self.batches or 1
        unit = "batch" if self.batches else "epoch"
        position = epoch * per + batch
        assert self.pace is not None
        first, t0 = self.pace
        elapsed = time.time() - t0
        if position <= first or elapsed <= 0:
            return None, None, unit
        rate = (position - first) / elapsed
        return (epochs * per - position) / rate, rate, unit

    def fail_stage(self, state: str, error: str) -> None:
        if self.stage_id is not None:
            self.queue.stage_finished(stage_id=self.stage_id, state=state, error=error)


class Worker(Executor):
    def __init__(
        self,
        settings: Settings,
        *,
        name: str | None = None,
        parent: int | None = None,
        exact_name: bool = False,
    ) -> None:
        super().__init__()
        self.settings = settings
        # The pid is part of the name: a job's worker can be found (and signalled) from it.
        # A Ray task keeps the name its dispatcher claimed the job with (``exact_name``).
        self.name = name if exact_name and name else f"{name or socket.gethostname()}:{os.getpid()}"
        self.db = Database(settings.url)
        self.queue = open_queue(
            self.db, max_attempts=settings.max_attempts, policy=Policy.of(settings)
        )
        self.parent = parent  # a pool's worker stops when the process that started it is gone
        self.devices = DeviceLocks(settings.artifact_root / "devices")  # its GPU, held per job

    def gone(self) -> bool:
        return self.parent is not None and os.getppid() != self.parent

    def start_jobs(self) -> int:
        with self.devices.own() as free:
            if not free:  # its GPU is lent to a job of another worker that asked for several
                return 0
            claim = self.queue.claim(worker=self.name, lease_seconds=self.settings.lease_seconds)
            if claim is None:
                return 0
            self.execute(claim)
            return 1

    def execute(self, claim: Claim) -> None:
        observer = _Observer(self.queue, claim.job_id, self.name, self.settings)
        beating = threading.Event()
        beater = threading.Thread(target=self._beat, args=(claim.job_id, observer, beating))
        beater.daemon = True
        beater.start()
        state, error, result = "succeeded", None, None
        try:
            with observe.observing(observer):
                result = run_job(claim, self.settings, self.queue, self.settings.device)
        except Lost:
            if self.stopping.is_set():  # shutting down: hand the job back, it resumes elsewhere
                self.queue.release(job_id=claim.job_id, worker=self.name)
            return  # or another worker owns the job now: write nothing
        except Cancelled:
            state, error = "cancelled", "cancelled by request"
            observer.fail_stage("cancelled", error)
        except DatabaseGone:
            raise
        except Exception as exc:  # the record says what failed; the log keeps the traceback
            state, error = "failed", self.public_error(exc)
            print(f"job {claim.job_id} failed:\n{traceback.format_exc()}", file=sys.stderr)
            observer.fail_stage("failed", error)
        finally:
            beating.set()
            beater.join()
        self.queue.finish(
            job_id=claim.job_id, worker=self.name, state=state, error=error, result=result
        )
        if claim.sweep_id is not None:  # a trial ended: tell the study, ask for the next one
            self.advance_sweeps(claim.sweep_id)

    def public_error(self, exc: BaseException) -> str:
        """One line a user can act on, without the server's paths (the artifact root is shown as
        ``<artifacts>``) and without a traceback; an allocation that failed names the memory
        limit, a full or read-only disk the errno."""
        if out_of_memory(exc):
            return memory_error(self.settings.worker_memory_bytes)
        if (fault := storage_fault(exc)) is not None:
            return f"StorageError: {fault}"
        text = f"{type(exc).__name__}: {exc}".splitlines()[0][:2000]
        root = str(self.settings.artifact_root.resolve())
        return text.replace(root, "<artifacts>")

    def _beat(self, job_id: int, observer: _Observer, stop: threading.Event) -> None:
        while not stop.wait(self.settings.heartbeat_seconds):
            if self.gone():
                self.stopping.set()
            if self.stopping.is_set():
                observer.lost.set()  # stop the running stage at its next batch
                return
            try:
                beat = self.queue.heartbeat(
                    job_id=job_id, worker=self.name, lease_seconds=self.settings.lease_seconds
                )
            except Exception:
                continue
            if not beat.owned:
                observer.lost.set()
            if beat.cancel:
                observer.cancel.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reskd worker", description="one job worker")
    parser.add_argument("--name", help="worker name (default host:pid)")
    parser.add_argument("--max-jobs", type=int, help="exit after this many jobs")
    parser.add_argument("--parent", type=int, help="stop when this process is gone")
    args = parser.parse_args(argv)
    settings = Settings()
    worker = Worker(settings, name=args.name, parent=args.parent)
    if worker.db.file is not None and not worker.db.file.exists():
        print(
            f"worker {worker.name}: no database at {worker.db.file}; workers join the database "
            "of a running `reskd serve` (they never create one, which would hide a lost file)",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_DATABASE_GONE
    signal.signal(signal.SIGTERM, lambda *_: worker.stopping.set())
    limit_memory(settings.worker_memory_bytes)
    worker.db.migrate()
    print(
        json.dumps({"worker": worker.name, "device": settings.device, "db": settings.url}),
        flush=True,
    )
    try:
        worker.run_forever(max_jobs=args.max_jobs)
    except DatabaseGone as exc:
        print(f"worker {worker.name} stops: {exc}", file=sys.stderr, flush=True)
        return EXIT_DATABASE_GONE
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
