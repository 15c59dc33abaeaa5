"""Faults of the runtime under load and on a sick machine: jobs too large to run, workers out of
memory, a database lock held, a full or unwritable disk, a server stopped with event streams
open, and a job list that reads what it does not show."""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event

from api.http.main import create_app
from api.runtime.settings import Settings
from api.runtime.worker import Worker
from db.session import Database
from tests.api.service import Service, tiny_config
from tests.waiting import Lines, wait_until

# a genotype network whose fields are each within bounds: 2.86e9 parameters together
HUGE = {
    "genotype": {"normal": [["sep_conv_3x3", 0]] * 8, "reduce": [["sep_conv_3x3", 1]] * 8},
    "channels": 512,
    "layers": 64,
    "width": 64,
}
GIB = 1 << 30


@pytest.fixture
def client(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[TestClient]:
    options = getattr(request, "param", {})
    app = create_app(Settings(artifact_root=tmp_path, **options))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c


# -- a job's size, its worker's memory and its worker's deaths -------------------------------------


@pytest.mark.parametrize(
    ("client", "config", "loc", "words"),
    [
        ({}, tiny_config(res_students=[HUGE]), ["res_students", 0], "2.86G parameters"),
        (
            {"max_job_mflops": 1000},
            tiny_config(teacher={"model": "resnet8", "width": 64}),
            ["teacher"],
            "3020 MFLOPs, more than the 1000",
        ),
    ],
    indirect=["client"],
)
def test_a_job_whose_fields_compose_a_huge_network_is_refused_naming_it_and_the_cap(
    client: TestClient, config: dict[str, Any], loc: list[Any], words: str
) -> None:
    r = client.post("/v1/jobs", json={"kind": "reskd", "config": config})
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "config", *loc]
    assert words in error["msg"] and (
        "max_job_params" in error["msg"] or "max_job_mflops" in error["msg"]
    )
    assert client.get("/v1/jobs").json()["total"] == 0
    sweep = {"base": config, "trials": 2}
    r = client.post("/v1/sweeps", json=sweep)  # a sweep's trials are refused alike
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "base", *loc]


def _worker(root: Path, **env: str) -> tuple[subprocess.Popen[str], Lines]:
    """A ``reskd worker`` on ``root``'s database that runs one job, and its output's lines."""
    process = subprocess.Popen(
        [sys.executable, "-m", "api.runtime.worker", "--max-jobs", "1"],
        env=dict(os.environ)
        | {
            "RESKD_ARTIFACT_ROOT": str(root),
            "RESKD_DEVICE": "cpu",
            "RESKD_POLL_SECONDS": "0.1",
            "OMP_NUM_THREADS": "1",
        }
        | env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    return process, Lines(process.stdout)


@pytest.mark.slow  # starts a worker process
def test_a_worker_under_its_memory_limit_fails_a_job_too_large_naming_the_limit(
    tmp_path: Path,
) -> None:
    """RESKD_WORKER_MEMORY_BYTES caps a worker's address space: a job whose network needs 11 GB
    fails at once with an error naming the limit, and the machine's memory is left alone."""
    settings = Settings(artifact_root=tmp_path)
    db = Database(settings.url)
    db.migrate()
    process, lines = _worker(tmp_path, RESKD_WORKER_MEMORY_BYTES=str(5 * GIB))
    try:
        lines.wait_for('"worker"', timeout=120)
        limits = Path(f"/proc/{process.pid}/limits").read_text()
        address_space = next(line for line in limits.splitlines() if "address space" in line)
        assert address_space.split()[3] == str(5 * GIB), address_space
        job = Worker(settings).queue.submit(  # past the API's size check: the worker's limit
            kind="reskd", config=tiny_config(teacher=HUGE), dataset="digits", name=None
        )
        process.wait(timeout=300)
    finally:
        process.kill()
    with db.session(readonly=True) as s:
        from db.models import Job

        row = s.get(Job, job)
        assert row is not None and row.state == "failed", lines.seen[-20:]
        assert row.error == (
            "MemoryError: the job needed more than its worker's memory limit of 5.00 GiB "
            "(worker_memory_bytes, RESKD_WORKER_MEMORY_BYTES)"
        )
    db.dispose()


@pytest.mark.parametrize(
    ("raised", "error"),
    [
        (MemoryError(), "MemoryError: the job needed more than its worker's memory limit of 6.00"),
        (
            RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0"),
            "StorageError: the storage is full: no space left on device (ENOSPC)",
        ),
        (
            OSError(errno.EROFS, "Read-only file system", "/srv/runs/jobs/1/log.txt"),
            "StorageError: the storage cannot be written: read-only file system (EROFS)",
        ),
    ],
)
def test_a_job_failed_by_memory_or_storage_says_which(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, raised: Exception, error: str
) -> None:
    def run_job(*_: Any) -> None:
        raise raised

    monkeypatch.setattr("api.runtime.worker.run_job", run_job)
    worker = Worker(Settings(artifact_root=tmp_path, worker_memory_bytes=6 * GIB))
    worker.db.migrate()
    job = worker.queue.submit(kind="reskd", config={}, dataset="digits", name=None)
    assert worker.start_jobs() == 1
    with worker.db.session(readonly=True) as s:
        from db.models import Job

        row = s.get(Job, job)
        assert row is not None and row.state == "failed"
        assert row.error is not None and row.error.startswith(error), row.error
    worker.db.dispose()


# -- storage: a held lock, a full or read-only disk --------------------------------------------------


@pytest.mark.slow  # holds a lock past the store's timeout
def test_reads_and_health_answer_while_writers_wait_for_a_held_lock(tmp_path: Path) -> None:
    """Another process holds SQLite's write lock for longer than a request may wait: 45
    writes (cancels) wait for it; health and the job list answer meanwhile, the writes answer
    503 with Retry-After once their wait is over (no 500)."""
    svc = Service(tmp_path / "svc", workers=0)
    holder = sqlite3.connect(svc.root / "reskd.db", isolation_level=None)
    try:
        job = svc.submit(tiny_config())
        holder.execute("BEGIN IMMEDIATE")
        holder.execute("UPDATE jobs SET name = 'held'")
        answers: list[httpx.Response | Exception] = []

        def cancel() -> None:
            try:
                answers.append(svc.http.post(f"/v1/jobs/{job['id']}/cancel", timeout=20))
            except httpx.HTTPError as exc:
                answers.append(exc)

        writers = [threading.Thread(target=cancel) for _ in range(45)]
        for w in writers:
            w.start()
        reads = 0
        while any(w.is_alive() for w in writers):  # as long as the writers wait
            health = httpx.get(f"{svc.url}/v1/health", timeout=3)
            assert health.status_code == 200 and health.json()["status"] == "ok"
            listed = httpx.get(f"{svc.url}/v1/jobs", timeout=3)
            assert listed.status_code == 200 and listed.json()["total"] == 1
            reads += 1
        assert reads >= 2
        assert len(answers) == 45
        assert all(isinstance(a, httpx.Response) and a.status_code == 503 for a in answers), [
            a if isinstance(a, Exception) else (a.status_code, a.text) for a in answers[:3]
        ]
        first = answers[0]
        assert isinstance(first, httpx.Response) and first.headers["Retry-After"] == "5"
        assert "database is busy" in first.json()["detail"]
    finally:
        holder.close()
        svc.stop()


@pytest.mark.parametrize(
    ("pragma", "status", "words"),
    [
        ("PRAGMA max_page_count = 1", 507, "the storage is full: no space left on device (ENOSPC)"),
        (
            "PRAGMA query_only = 1",
            503,
            "the storage cannot be written: read-only file system (EROFS)",
        ),
    ],
)
def test_a_full_or_read_only_database_is_a_507_or_503_naming_the_errno(
    client: TestClient, pragma: str, status: int, words: str
) -> None:
    """SQLite's own full disk (no page beyond those it has) and read-only database, for the
    API's writes: the first write refused is answered as such (the pages' room runs out)."""
    engine = client.app.state.db.engine  # type: ignore[attr-defined]
    engine.dispose()
    event.listen(engine, "connect", lambda conn, _: conn.execute(pragma))
    for _ in range(100):
        r = client.post("/v1/jobs", json={"kind": "reskd", "config": tiny_config()})
        if r.status_code != 201:
            break
    assert (r.status_code, r.json()) == (status, {"detail": words})


def test_an_unwritable_file_is_a_503_naming_the_errno_and_no_path(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def submit(*_: Any) -> int:
        raise OSError(errno.EACCES, "Permission denied", "/srv/runs/jobs/7/config.json")

    monkeypatch.setattr("api.http.queries.jobs.submit", submit)
    r = client.post("/v1/jobs", json={"kind": "reskd", "config": tiny_config()})
    assert r.status_code == 503
    assert r.json() == {"detail": "the storage cannot be written: permission denied (EACCES)"}


def test_health_reports_an_artifact_store_it_cannot_write(tmp_path: Path) -> None:
    """/sys refuses new files (EACCES) as a read-only or full disk would refuse a checkpoint."""
    settings = Settings(artifact_root=Path("/sys/fs"), database_url=f"sqlite:///{tmp_path}/r.db")
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as c:
        r = c.get("/v1/health")
    assert r.status_code == 503
    assert r.json()["status"] == "unavailable"
    assert r.json()["problems"] == [
        "artifacts: the storage cannot be written: permission denied (EACCES)"
    ]


# -- shutdown with open event streams ----------------------------------------------------------------


@pytest.mark.slow  # starts a server
def test_sigterm_ends_open_event_streams_and_the_server_stops_within_seconds(
    tmp_path: Path,
) -> None:
    """A stream of a job that will not end soon (no worker runs it) does not hold SIGTERM: the
    stream is cut (no ``end`` event: its job has not ended) and the server exits."""
    svc = Service(tmp_path / "svc", workers=0)
    seen: list[str] = []
    job = svc.submit(tiny_config())

    def watch() -> None:
        with httpx.stream("GET", f"{svc.url}/v1/jobs/{job['id']}/events", timeout=60) as r:
            for line in r.iter_lines():
                seen.append(line)
        seen.append("<closed>")

    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    wait_until(lambda: "event: job" in seen, timeout=30, what="the stream's first event")
    started = time.monotonic()
    os.killpg(svc.process.pid, signal.SIGTERM)
    try:
        svc.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        svc.stop()  # SIGKILL
        raise
    assert time.monotonic() - started < 5, svc.read_log()
    svc.http.close()
    reader.join(timeout=5)
    assert seen[-1] == "<closed>" and "event: end" not in seen


# -- what the job list reads ---------------------------------------------------------------------------


def test_listing_jobs_reads_no_config(client: TestClient) -> None:
    """A row shows no config: GET /v1/jobs selects none (a page of a thousand jobs read a
    thousand configs of kilobytes each to throw them away)."""
    queue = client.app.state.queue  # type: ignore[attr-defined]
    for _ in range(3):
        queue.submit(kind="reskd", config=tiny_config(), dataset="digits", name=None)
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", seen)
    try:
        r = client.get("/v1/jobs")
    finally:
        event.remove(Engine, "before_cursor_execute", seen)
    assert r.status_code == 200 and r.json()["total"] == 3
    selects = [s for s in statements if "FROM jobs" in s]
    assert selects and not [s for s in selects if "jobs.config" in s], selects
    assert "config" not in r.json()["jobs"][0]
