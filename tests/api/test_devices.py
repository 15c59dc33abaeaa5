"""Several devices for one job: a local worker borrows idle GPUs of the other workers of its
machine (lock files), their workers claim nothing while they are lent, and the Ray dispatcher
asks for as many GPUs as the job's ``devices``."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from api.runtime.devices import GPUS_ENV, DeviceLocks
from api.runtime.ray_dispatch import RayDispatcher
from api.runtime.serve import worker_env
from api.runtime.settings import Settings
from api.runtime.store import Claim
from distill.distributed import DEVICES_ENV


def _worker(root: Path, gpu: int, machine: str = "0,1,2") -> DeviceLocks:
    return DeviceLocks(root, {"CUDA_VISIBLE_DEVICES": str(gpu), GPUS_ENV: machine})


class Cancelled(Exception):
    pass


def test_a_job_borrows_idle_gpus_and_their_workers_wait_meanwhile(tmp_path: Path) -> None:
    first, second, third = (_worker(tmp_path, g) for g in range(3))
    with first.own() as free, first.borrow(3, waiting=lambda: None, poll=0):
        assert free
        assert os.environ[DEVICES_ENV] == "0,1,2"  # what the job's ranks see
        for lent in (second, third):
            with lent.own() as lent_free:
                assert not lent_free  # lent: it claims nothing
    assert DEVICES_ENV not in os.environ
    with second.own() as free:
        assert free  # given back with the job


def test_a_job_waits_for_a_busy_gpu_and_a_cancel_stops_the_wait(tmp_path: Path) -> None:
    first, second = _worker(tmp_path, 0, "0,1"), _worker(tmp_path, 1, "0,1")
    released, waited = threading.Event(), threading.Event()
    busy = second.own()
    assert busy.__enter__()  # its worker runs a job of its own

    def waiting() -> None:  # called between polls: the other job ends after the first
        waited.set()
        busy.__exit__(None, None, None)
        released.set()

    with first.borrow(2, waiting=waiting, poll=0):
        assert waited.is_set() and os.environ[DEVICES_ENV] == "0,1"
    assert released.is_set()
    with second.own() as free:
        held = second.own()
        assert free and not held.__enter__()  # held now by its own worker: no second holder
        held.__exit__(None, None, None)

    def cancel() -> None:
        raise Cancelled

    with second.own(), pytest.raises(Cancelled), first.borrow(2, waiting=cancel, poll=0):
        pass  # never reached: gpu 1 stays busy
    assert not list(tmp_path.glob("*.wanted"))  # nothing left marked


def test_more_devices_than_the_machine_has_name_the_count(tmp_path: Path) -> None:
    too_many = pytest.raises(ValueError, match="devices: 4 asked for; this machine has 3 GPU")
    with too_many, _worker(tmp_path, 0).borrow(4, waiting=lambda: None):
        pass


def test_a_worker_that_sees_its_gpus_borrows_nothing(tmp_path: Path) -> None:
    """``reskd worker`` started with several GPUs visible, or a Ray task given N: its own."""
    alone = DeviceLocks(tmp_path, {"CUDA_VISIBLE_DEVICES": "0,1"})
    with alone.own() as free, alone.borrow(2, waiting=lambda: None):
        assert free and DEVICES_ENV not in os.environ


def test_pool_workers_learn_the_machines_gpus_only_when_each_has_its_own() -> None:
    env = worker_env(Settings(), gpu=1, threads=4, gpus=[0, 1])
    assert env["CUDA_VISIBLE_DEVICES"] == "1" and env[GPUS_ENV] == "0,1"
    assert GPUS_ENV not in worker_env(Settings(), gpu=1, threads=4)


def test_ray_tasks_ask_for_the_jobs_devices() -> None:
    gpus = SimpleNamespace(resources={"num_gpus": 1})
    cpus = SimpleNamespace(resources={"num_cpus": 2.0})
    claim = Claim(job_id=1, kind="reskd", config={"devices": 4}, attempts=0)
    plain = Claim(job_id=2, kind="reskd", config={}, attempts=0)
    assert RayDispatcher.resources_for(gpus, claim) == {"num_gpus": 4.0}  # type: ignore[arg-type]
    assert RayDispatcher.resources_for(gpus, plain) == {"num_gpus": 1.0}  # type: ignore[arg-type]
    assert RayDispatcher.resources_for(cpus, claim) == {"num_cpus": 2.0}  # type: ignore[arg-type]
