"""A real ``reskd serve`` on 127.0.0.1 with a temporary SQLite database, for the service tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx


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
        }
        if database_url:
            env["RESKD_DATABASE_URL"] = database_url
        args = [sys.executable, "-m", "api.cli", "serve", "--port", str(self.port)]
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
