"""A real ``reskd serve`` on 127.0.0.1 with a temporary SQLite database, for the service tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import network, postgres
from tests.postgres import free_port
from tests.waiting import wait_until


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
        try:
            wait_until(self._ready, timeout=60, every=0.2, what="its health answers 200")
        except (TimeoutError, RuntimeError) as exc:
            raise RuntimeError(f"service did not start ({exc}):\n{self.read_log()}") from exc

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"it exited with {self.process.returncode}")
        try:
            return httpx.get(f"{self.url}/v1/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def read_log(self) -> str:
        return (self.root / "serve.log").read_text()

    def submit(self, config: dict[str, Any], kind: str = "reskd") -> dict[str, Any]:
        r = self.http.post("/v1/jobs", json={"kind": kind, "config": config})
        assert r.status_code == 201, r.text
        return dict(r.json())

    def job(self, job_id: int) -> dict[str, Any]:
        r = self.http.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def wait(self, job_id: int, until: Any, timeout: float = 300) -> dict[str, Any]:
        """The job once ``until(job)`` holds."""
        seen: list[dict[str, Any]] = []

        def reached() -> dict[str, Any] | None:
            seen[:] = [self.job(job_id)]
            return seen[0] if until(seen[0]) else None

        return wait_until(
            reached,
            timeout=timeout,
            every=0.2,
            what=lambda: f"job {job_id}: {seen}\n{self.read_log()}",
        )

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


# In a parallel run (``pytest -n 2 --dist loadgroup``) the cases that start Ray share one test
# worker: Ray keeps one cluster per machine (its session under /tmp/ray), and ``ray stop --force``
# ends every cluster there.
RAY = pytest.mark.xdist_group("ray")


def backends(module: str, *names: str) -> list[Any]:
    """The params of a module-scoped ``backend_service`` fixture (``local-sqlite``, ...), each in
    an xdist group: one module's service is started once, on one test worker; Ray's in ``RAY``."""
    groups = {name: "ray" if name.startswith("ray-") else f"{module}-{name}" for name in names}
    return [pytest.param(name, marks=pytest.mark.xdist_group(g)) for name, g in groups.items()]


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
