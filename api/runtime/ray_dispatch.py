"""The Ray executor (``pip install .[ray]``): past one machine, jobs run as Ray tasks.

With ``RESKD_RAY_ADDRESS`` set (``reskd serve``, or ``reskd worker`` alone), a dispatcher claims
jobs from the same database queue and runs each as a Ray task asking ``num_gpus`` = the job's
``devices`` (1 unless it asks for more; or ``ray_cpus_per_task`` CPUs when the cluster has no
GPU). The task runs the job's stages with the
same worker code as a local worker: stages are read from and written to the shared artifact root,
progress, results and artifacts go to the same database URL, a cancel stops the running stage at
its next batch.

Failure: the dispatcher holds each job's lease while its task is pending, running or being retried.
A Ray worker process that dies mid-stage (killed, out of memory, node lost) is a system failure
that Ray retries (``ray_max_retries``); the retried task owns the same job, counts an attempt,
reuses the stages already finished and resumes the interrupted one from its last epoch checkpoint.
A task that fails past its retries fails the job with Ray's error. Only this module imports Ray.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import sys
import threading
import time
from dataclasses import asdict
from typing import Any

from api.runtime.fairshare import Policy
from api.runtime.loop import Executor
from api.runtime.queues import open_queue
from api.runtime.settings import Settings
from api.runtime.store import Claim
from db.session import Database


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ValueError("ray_address: the Ray executor needs Ray: pip install '.[ray]'") from exc
    return ray


def execute_claim(claim: dict[str, Any], settings: dict[str, Any], owner: str) -> str:
    """The body of a Ray task: run one claimed job as its owner (the dispatcher's name for it)."""
    import torch

    from api.runtime.worker import Worker

    config = Settings(**settings)
    worker = Worker(config, name=owner, exact_name=True)
    job_dir = config.job_dir(claim["job_id"])
    job_dir.mkdir(parents=True, exist_ok=True)
    executions = job_dir / "ray-executions.jsonl"
    retry = executions.exists()
    with executions.open("a") as f:  # where each try ran (a retried task appends a line)
        f.write(
            json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()})
            + "\n"
        )
    if retry:
        worker.queue.count_attempt(job_id=claim["job_id"], worker=owner)
    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, int(config.ray_cpus_per_task)))
    worker.execute(Claim(**claim))
    worker.db.dispose()
    return "done"


class RayDispatcher(Executor):
    """Claims jobs while the cluster has room and runs each as a Ray task (see the module doc)."""

    def __init__(self, settings: Settings, *, capacity: int | None = None) -> None:
        if not settings.ray_address:
            raise ValueError("ray_address: required for the Ray executor (host:port)")
        super().__init__()
        self.ray = _import_ray()
        self.settings = settings
        self.db = Database(settings.url)
        self.queue = open_queue(
            self.db, max_attempts=settings.max_attempts, policy=Policy.of(settings)
        )
        self.name = f"ray@{socket.gethostname()}:{os.getpid()}"
        self.next_beat = 0.0
        self._counter = itertools.count()
        self.inflight: dict[Any, tuple[Claim, str]] = {}  # ObjectRef -> (claim, owner)
        self.ray.init(
            address=settings.ray_address,
            namespace="reskd",
            log_to_driver=False,
            ignore_reinit_error=True,
            configure_logging=False,
        )
        resources = self.ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        if gpus:
            self.resources: dict[str, float] = {"num_gpus": 1}
            room = gpus
        else:
            cpus = settings.ray_cpus_per_task
            self.resources = {"num_cpus": cpus}
            room = max(1, int(resources.get("CPU", 1) // cpus))
        self.capacity = capacity or settings.workers or room
        self._task = self.ray.remote(max_retries=settings.ray_max_retries)(execute_claim)
        self._settings = settings.model_dump(mode="json") | {
            "artifact_root": str(settings.artifact_root.resolve()),
            "database_url": settings.url,
        }

    def resources_for(self, claim: Claim) -> dict[str, float]:
        """What a job's task asks Ray for: on GPUs, as many as the job's ``devices`` (Ray then
        makes those visible to it), else the dispatcher's CPUs."""
        if "num_gpus" not in self.resources:
            return self.resources
        devices = claim.config.get("devices", 1) if isinstance(claim.config, dict) else 1
        return {"num_gpus": float(devices)}

    def describe(self) -> str:
        what = (
            "a GPU per device the job asks for (1 by default)"
            if "num_gpus" in self.resources
            else f"{self.resources['num_cpus']:g} CPU"
        )
        return (
            f"Ray executor on {self.settings.ray_address}: up to {self.capacity} task(s) at "
            f"once, {what} each"
        )

    def look_after(self) -> None:
        self._harvest()
        if time.time() >= self.next_beat:  # hold the leases of pending, running, retried tasks
            self.next_beat = time.time() + self.settings.heartbeat_seconds
            self._renew()

    def start_jobs(self) -> int:
        started = 0
        while len(self.inflight) < self.capacity:
            owner = f"{self.name}#{next(self._counter)}"
            claim = self.queue.claim(worker=owner, lease_seconds=self.settings.lease_seconds)
            if claim is None:
                break
            started += 1
            ref = self._task.options(**self.resources_for(claim), name=f"reskd-job-{claim.job_id}")
            self.inflight[ref.remote(asdict(claim), self._settings, owner)] = (claim, owner)
        return started

    def busy(self) -> bool:
        return bool(self.inflight)

    def _harvest(self) -> None:
        if not self.inflight:
            return
        refs = list(self.inflight)
        ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)
        for ref in ready:
            claim, owner = self.inflight.pop(ref)
            try:
                self.ray.get(ref)
            except Exception as exc:  # failed past its retries: the job fails with Ray's error
                print(f"job {claim.job_id}: Ray task failed: {exc}", file=sys.stderr, flush=True)
                first = (str(exc).strip().splitlines() or [""])[0][:500]
                error = f"{type(exc).__name__}: Ray task failed after retries: {first}"
                self.queue.finish(job_id=claim.job_id, worker=owner, state="failed", error=error)
                if claim.sweep_id is not None:
                    self.advance_sweeps(claim.sweep_id)

    def _renew(self) -> None:
        for ref, (claim, owner) in list(self.inflight.items()):
            try:
                beat = self.queue.heartbeat(
                    job_id=claim.job_id, worker=owner, lease_seconds=self.settings.lease_seconds
                )
            except Exception:
                continue
            if not beat.owned:  # finished (the task returns soon) or taken over: stop it
                job_state = self._job_state(claim.job_id)
                if job_state == "running":
                    self.ray.cancel(ref, force=True)
                    self.inflight.pop(ref, None)

    def _job_state(self, job_id: int) -> str | None:
        from db.models import Job

        with self.db.session(readonly=True) as s:
            job = s.get(Job, job_id)
            return None if job is None else job.state

    def shutdown(self) -> None:
        """Hand running jobs back to the queue; they resume elsewhere from their checkpoints."""
        for ref, (claim, owner) in list(self.inflight.items()):
            self.ray.cancel(ref, force=True)
            self.queue.release(job_id=claim.job_id, worker=owner)
        self.inflight.clear()

    def start_thread(self) -> threading.Thread:
        self._thread = threading.Thread(target=self.run_forever, name="ray-dispatcher", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self) -> None:
        """Stop claiming; running jobs go back to the queue (when run in a thread, waits)."""
        self.stopping.set()
        thread = getattr(self, "_thread", None)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=15)
