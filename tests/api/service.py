"""A real ``reskd serve`` on 127.0.0.1 with a temporary SQLite database, for the service tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import network, postgres


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    def __init__(
        self,
        root: Path,
        *,
        workers: int = 1,
        token: str | None = None,
        lease: float = 3.0,
        database_url: str | None = None,
        ray_address: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env |= {
            "RESKD_ARTIFACT_ROOT": str(root),
            "RESKD_LEASE_SECONDS": str(lease),
            "RESKD_HEARTBEAT_SECONDS": "0.3",
            "RESKD_POLL_SECONDS": "0.2",
            "OMP_NUM_THREADS": "1",
        } | (extra_env or {})
        self.database_url = database_url or f"sqlite:///{(root / 'reskd.db').resolve()}"
        if database_url:
            env["RESKD_DATABASE_URL"] = database_url
        if ray_address:
            env["RESKD_RAY_ADDRESS"] = ray_address
        args = [sys.executable, "-m", "api.cli.main", "serve", "--port", str(self.port)]
        args += ["--workers", str(workers)]
        if token:
            args += ["--token", token]
        root.mkdir(parents=True, exist_ok=True)
        self.log = (root / "serve.log").open("w")
        self.process = subprocess.Popen(
            args, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=60)
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"service did not start:\n{(root / 'serve.log').read_text()}")
            time.sleep(0.2)

    def submit(self, config: dict[str, Any], kind: str = "reskd") -> dict[str, Any]:
        r = self.http.post("/v1/jobs", json={"kind": kind, "config": config})
        assert r.status_code == 201, r.text
        return dict(r.json())

    def job(self, job_id: int) -> dict[str, Any]:
        r = self.http.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def wait(self, job_id: int, until: Any, timeout: float = 300) -> dict[str, Any]:
        deadline = time.time() + timeout
        while True:
            job = self.job(job_id)
            if until(job):
                return job
            if time.time() > deadline:
                raise TimeoutError(f"job {job_id}: {job}\n{(self.root / 'serve.log').read_text()}")
            time.sleep(0.2)

    def done(self, job_id: int, timeout: float = 300) -> dict[str, Any]:
        return self.wait(
            job_id, lambda j: j["state"] in ("succeeded", "failed", "cancelled"), timeout
        )

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.http.close()
        self.log.close()


def tiny_config(**overrides: Any) -> dict[str, Any]:
    """ResKD on the real 8x8 digits with quarter-width ResNet-8s, one epoch per stage."""
    config: dict[str, Any] = {
        "dataset": "digits",
        "val_size": 60,
        "teacher": {"model": "resnet8", "width": 0.25},
        "student": {"model": "resnet8", "width": 0.25},
        "res_students": [{"model": "resnet8", "width": 0.25}],
        "kd": {"distance": "kl"},
        "max_stages": 1,
        "preset": "cpu-tiny",
        "train": {"epochs": 1, "batch_size": 128},
    }
    return config | overrides


class RayCluster:
    """A local Ray head on 127.0.0.1 (``ray start --head``), stopped with ``ray stop``."""

    def __init__(self, root: Path, *, cpus: int = 2) -> None:
        self.ray = str(Path(sys.executable).parent / "ray")
        port = free_port()
        self.address = f"127.0.0.1:{port}"
        env = dict(os.environ) | {"RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                self.ray,
                "start",
                "--head",
                "--node-ip-address=127.0.0.1",
                f"--port={port}",
                f"--num-cpus={cpus}",
                "--num-gpus=0",
                "--include-dashboard=false",
                "--disable-usage-stats",
                "--object-store-memory=100000000",
            ],
            check=True,
            env=env,
            stdout=(root / "ray-start.log").open("w"),
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        subprocess.run([self.ray, "stop", "--force"], capture_output=True)


@contextmanager
def ray_cluster(root: Path) -> Iterator[RayCluster]:
    """A local Ray cluster; only inside the tests' isolated network (see ``tests/conftest.py``):
    Ray's GCS server listens on every interface, with no option to bind it to 127.0.0.1."""
    pytest.importorskip("ray", reason="the Ray executor needs pip install '.[ray]'")
    if not network.isolated():
        pytest.skip(f"Ray listens on every interface; {network.REASON}")
    cluster = RayCluster(root)
    try:
        yield cluster
    finally:
        cluster.stop()


@contextmanager
def backend_service(
    request: pytest.FixtureRequest, root: Path, *, workers: int
) -> Iterator[Service]:
    """The service for a ``request.param`` like ``local-sqlite`` or ``ray-postgresql``: the
    executor (local worker processes or Ray tasks) and the database (SQLite or a real
    PostgreSQL server, see ``tests/postgres.py``)."""
    executor, backend = str(request.param).split("-")
    database_url = None
    if backend == "postgresql":
        database_url = postgres.fresh_database(request.getfixturevalue("postgres_server"))
    if executor == "local":
        svc = Service(root, workers=workers, database_url=database_url)
        try:
            yield svc
        finally:
            svc.stop()
        return
    with ray_cluster(root / "ray") as cluster:
        svc = Service(root, workers=workers, database_url=database_url, ray_address=cluster.address)
        try:
            yield svc
        finally:
            svc.stop()
