"""The service over HTTP: a real uvicorn server on 127.0.0.1 with a temporary SQLite database."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.cli.main import main
from search.pareto import dominated
from tests.api.service import RAY, Service, backend_service, backends, ray_cluster, tiny_config

pytestmark = pytest.mark.slow  # trains models or starts servers: not in make test-fast


@pytest.fixture(
    scope="module", params=backends("service", "local-sqlite", "local-postgresql", "ray-sqlite")
)
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """The service with each executor (local worker processes, Ray tasks) and each database
    (SQLite, a real PostgreSQL server); every test of this module runs against each."""
    with backend_service(request, tmp_path_factory.mktemp(request.param), workers=2) as svc:
        yield svc


def test_job_runs_to_success_with_stages_metrics_pareto_and_artifacts(
    service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    job = service.submit(tiny_config(), kind="reskd")
    assert job["state"] == "queued" and job["dataset"] == "digits"
    job = service.done(job["id"])
    assert job["state"] == "succeeded", job["error"]
    assert [s["kind"] for s in job["stages"]] == ["teacher", "gate", "student", "residual"]
    assert "T resnet8x0.25 on D_v: " in job["stages"][1]["name"]  # the teacher gate's figure
    assert [m["model"] for m in job["metrics"]] == ["T", "S0", "S1", "S1 adaptive"]
    assert job["progress"]["stages_done"] == 4
    # every epoch of every trained stage is stored: the curves are drawn from it
    metrics = service.http.get(f"/v1/jobs/{job['id']}/metrics").json()
    assert [s["kind"] for s in metrics["stages"]] == ["teacher", "student", "residual"]
    for stage in metrics["stages"]:
        assert [e["epoch"] for e in stage["epochs"]] == [1]
        first = stage["epochs"][0]
        assert first["loss"] > 0 and 0 <= first["train_accuracy"] <= 1 and first["lr"] > 0
        assert first["seconds"] > 0 and first["expected_mflops"] is None
        assert 0 <= first["eval_accuracy"] <= 1  # on D_v: the validation curve
    assert service.http.get("/v1/jobs/999999/metrics").status_code == 404
    before = service.http.get("/v1/pareto", params={"dataset": "digits"})
    assert before.headers["cache-control"] == "no-cache" and before.json()["considered"] == 3

    # A second job with the same teacher and S0 reuses them (trained once).
    second = service.done(
        service.submit(tiny_config(res_students=[{"model": "resnet8", "width": 0.5}]))["id"]
    )
    assert [(s["kind"], s["reused"]) for s in second["stages"]] == [
        ("teacher", True),
        ("gate", True),
        ("student", True),
        ("residual", False),
    ]

    # the first front's ETag no longer matches once the second job stored its results
    fresh = service.http.get(
        "/v1/pareto",
        params={"dataset": "digits"},
        headers={"If-None-Match": before.headers["etag"]},
    )
    assert fresh.status_code == 200 and fresh.headers["etag"] != before.headers["etag"]
    same = service.http.get(
        "/v1/pareto", params={"dataset": "digits"}, headers={"If-None-Match": fresh.headers["etag"]}
    )
    assert same.status_code == 304 and same.content == b""
    pareto = fresh.json()
    assert pareto["considered"] == 6  # S0, S1, S1 adaptive of both jobs (T left out)
    assert pareto["ranked_on"] == "val_accuracy"  # D_v accuracy; test accuracy rides along
    points = [(a["val_accuracy"], a["mflops"]) for a in pareto["front"]]
    everything = service.http.get("/v1/architectures", params={"dataset": "digits"}).json()
    assert everything["total"] == 8
    for a in everything["architectures"]:
        assert a["val_accuracy"] is not None and a["accuracy"] is not None
        if a["stage"] != "T":  # the front dominates or contains every other architecture
            p = (a["val_accuracy"], a["mflops"])
            assert p in points or any(dominated(p, q) for q in points)
    assert not any(dominated(p, q) for p in points for q in points)
    adaptive = service.http.get(
        "/v1/pareto", params={"dataset": "digits", "cost": "adaptive_mflops"}
    ).json()
    assert adaptive["cost"] == "adaptive_mflops" and adaptive["front"]
    # what matches nothing is named, not answered with an empty front
    unknown = service.http.get("/v1/pareto", params={"dataset": "mnist"})
    assert unknown.status_code == 422 and "unknown dataset 'mnist'" in unknown.text
    teacher = next(a["teacher"] for a in everything["architectures"] if a["stage"] == "T")
    cli = ["pareto", "--dataset", "digits", "--url", service.url]
    assert main([*cli, "--teacher", "resnet21"]) == 2
    err = capsys.readouterr().err
    assert f"teacher 'resnet21' on digits; teachers with results: {teacher}" in err
    assert main([*cli, "--include-teacher", "--json"]) == 0
    assert "T" in {a["stage"] for a in json.loads(capsys.readouterr().out)["front"]}

    names = {a["name"] for a in job["artifacts"]}
    assert {"report.json", "combined_student.pt", "log.txt"} <= names
    r = service.http.get(f"/v1/jobs/{job['id']}/artifacts/report.json")
    assert r.status_code == 200
    stored = service.root / "jobs" / str(job["id"]) / "report.json"
    assert r.content == stored.read_bytes()

    events = service.http.get(f"/v1/jobs/{job['id']}/events").text
    assert events.startswith("event: job\ndata: ") and events.rstrip().endswith(
        "event: end\ndata: {}"
    )
    listing = service.http.get("/v1/jobs", params={"state": "succeeded", "kind": "reskd"}).json()
    assert {job["id"], second["id"]} <= {j["id"] for j in listing["jobs"]}


def test_artifacts_outside_the_root_are_unreachable(service: Service) -> None:
    job = service.done(service.submit(tiny_config(), kind="distill")["id"])
    assert job["state"] == "succeeded"
    for name in ("../../reskd.db", "..%2F..%2Freskd.db", "/etc/passwd", "%2Fetc%2Fpasswd"):
        r = service.http.get(f"/v1/jobs/{job['id']}/artifacts/{name}")
        assert r.status_code in (400, 404, 422), (name, r.status_code)  # refused either way
        assert b"sqlite" not in r.content.lower() and b"root:" not in r.content
    assert service.http.get(f"/v1/jobs/{job['id']}/artifacts/nothing.pt").status_code == 404


def test_bad_configs_are_422_naming_the_field_and_unknown_ids_404(service: Service) -> None:
    bad = [
        (tiny_config(dataset="imagenet22k"), ["body", "config", "dataset"]),
        (tiny_config(kd={"distance": "cosine"}), ["body", "config", "kd", "distance"]),
        (
            tiny_config(res_students=[{"search": {"budget_mflops": 0.1, "strategy": "x"}}]),
            ["body", "config", "res_students", 0, "search", "strategy"],
        ),
        (tiny_config(ratio="abc"), ["body", "config", "ratio"]),  # was an HTTP 500
        (tiny_config(student_kd={"tau": 2}), ["body", "config", "student_kd", "tau"]),
    ]
    for config, loc in bad:
        r = service.http.post("/v1/jobs", json={"kind": "reskd", "config": config})
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"] == loc
    r = service.http.post("/v1/jobs", json={"kind": "train-everything", "config": tiny_config()})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "kind"]
    r = service.http.post("/v1/jobs", json={"kind": "search", "config": tiny_config()})
    assert r.status_code == 422 and "search job" in r.json()["detail"][0]["msg"]
    assert service.http.get("/v1/jobs/99999").status_code == 404
    assert service.http.post("/v1/jobs/99999/cancel").status_code == 404
    assert service.http.get("/v1/jobs/99999/artifacts/report.json").status_code == 404


def test_cancel_stops_a_running_stage_within_seconds(service: Service) -> None:
    long = tiny_config(teacher_train={"epochs": 400})
    job = service.submit(long)
    service.wait(job["id"], lambda j: (j["progress"].get("epoch") or 0) >= 1, timeout=120)
    asked = time.time()
    r = service.http.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 200
    job = service.done(job["id"], timeout=30)
    # generous on a shared machine: the stage would otherwise run its 400 epochs
    assert job["state"] == "cancelled" and time.time() - asked < 20
    assert job["stages"][-1]["state"] == "cancelled"
    queued = service.submit(long)
    cancelled = service.http.post(f"/v1/jobs/{queued['id']}/cancel").json()
    assert cancelled["state"] in ("cancelled", "running")
    assert service.done(queued["id"], timeout=30)["state"] == "cancelled"


def _teacher_past_epoch(epoch: int) -> Callable[[dict[str, Any]], bool]:
    """A job's own teacher stage has reached ``epoch`` (not merely some stage's epoch)."""

    def reached(job: dict[str, Any]) -> bool:
        progress = job["progress"]
        return (progress.get("stage") or "").startswith("teacher") and (
            progress.get("epoch") or 0
        ) >= epoch

    return reached


def test_a_killed_worker_loses_at_most_its_current_epoch(tmp_path: Path) -> None:
    """SIGKILL the worker in the middle of a stage: the pool restarts it, the lease expires, the
    job is claimed again and the stage resumes from its epoch checkpoint."""
    svc = Service(tmp_path / "crash", workers=1, lease=2.0)
    try:
        config = tiny_config(teacher_train={"epochs": 4, "batch_size": 4})  # seconds, not one
        job = svc.submit(config)
        svc.wait(job["id"], _teacher_past_epoch(2), 180)
        worker = _job_worker(svc, job["id"])
        os.kill(worker, signal.SIGKILL)
        done = svc.done(job["id"], timeout=300)
        assert done["state"] == "succeeded", done["error"]
        assert done["attempts"] == 2
        teachers = [s for s in done["stages"] if s["kind"] == "teacher"]
        assert len(teachers) == 2 and teachers[-1]["state"] == "succeeded"
        assert teachers[-1]["resumed_from_epoch"] >= 2  # not every epoch repeated
        # The killed attempt's stage is closed, not left running; progress is the live one's.
        assert teachers[0]["state"] == "interrupted" and teachers[0]["finished_at"]
        assert not [s for s in done["stages"] if s["state"] == "running"]
        assert done["progress"]["stage"] == done["stages"][-1]["name"]
        for stage in done["stages"]:  # aware times, in order (reused stages too)
            assert stage["started_at"].endswith("Z") or "+" in stage["started_at"]
            assert stage["finished_at"] >= stage["started_at"]
    finally:
        svc.stop()


@RAY
def test_a_killed_ray_worker_process_is_retried_and_the_job_completes(tmp_path: Path) -> None:
    """SIGKILL the Ray worker process running a job's task mid-stage: Ray retries the task, the
    retry owns the same job (the dispatcher held its lease), counts an attempt and resumes the
    stage from its epoch checkpoint."""
    with ray_cluster(tmp_path / "ray") as cluster:
        svc = Service(tmp_path / "svc", workers=1, ray_address=cluster.address)
        try:
            # batches of 2: the teacher trains for seconds (from in-memory tensors with batches
            # of 128 its 6 epochs took about a second, and could end before the kill)
            job = svc.submit(tiny_config(teacher_train={"epochs": 6, "batch_size": 2}))
            svc.wait(job["id"], _teacher_past_epoch(2), 180)
            tries = svc.root / "jobs" / str(job["id"]) / "ray-executions.jsonl"
            first = json.loads(tries.read_text().splitlines()[0])
            os.kill(first["pid"], signal.SIGKILL)
            done = svc.done(job["id"], timeout=300)
            assert done["state"] == "succeeded", done["error"]
            runs = [json.loads(line) for line in tries.read_text().splitlines()]
            assert len(runs) == 2 and runs[1]["pid"] != first["pid"]
            assert done["attempts"] == 2
            teachers = [s for s in done["stages"] if s["kind"] == "teacher"]
            assert teachers[-1]["state"] == "succeeded"
            assert teachers[-1]["resumed_from_epoch"] >= 2  # not every epoch repeated
        finally:
            svc.stop()


def _job_worker(svc: Service, job_id: int) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{svc.root / 'reskd.db'}")
    with engine.connect() as c:
        worker = c.execute(text("select worker from jobs where id=:i"), {"i": job_id}).scalar()
    engine.dispose()
    return int(str(worker).rsplit(":", 1)[1])


def test_200_concurrent_submissions_while_workers_run(tmp_path: Path) -> None:
    svc = Service(tmp_path / "load", workers=2)
    try:
        for _ in range(2):  # both workers busy writing progress while the submissions arrive
            svc.submit(tiny_config(teacher_train={"epochs": 30}))
        svc.wait(1, lambda j: j["state"] == "running", 120)

        def submit(i: int) -> tuple[int, int]:
            with httpx.Client(base_url=svc.url, timeout=120) as http:
                r = http.post(
                    "/v1/jobs",
                    json={"kind": "distill", "config": tiny_config(), "name": f"load-{i}"},
                )
                return r.status_code, r.json().get("id", -1)

        with ThreadPoolExecutor(max_workers=32) as pool:
            results = list(pool.map(submit, range(200)))
        assert [status for status, _ in results] == [201] * 200
        ids = [job_id for _, job_id in results]
        assert len(set(ids)) == 200
        listing = svc.http.get("/v1/jobs", params={"limit": 1000}).json()
        names = [j["name"] for j in listing["jobs"] if (j["name"] or "").startswith("load-")]
        assert sorted(names) == sorted(f"load-{i}" for i in range(200))  # each exactly once
        assert "database is locked" not in (svc.root / "serve.log").read_text()
    finally:
        svc.stop()


def test_auth_with_a_token(tmp_path: Path) -> None:
    svc = Service(tmp_path / "auth", workers=0, token="s3cret")
    try:
        anonymous = httpx.Client(base_url=svc.url)
        assert anonymous.get("/v1/health").status_code == 200
        assert anonymous.get("/v1/jobs").status_code == 401
        assert (
            anonymous.get("/v1/jobs", headers={"Authorization": "Bearer nope"}).status_code == 403
        )
        assert anonymous.post("/v1/jobs", json={"config": tiny_config()}).status_code == 401
        assert svc.http.get("/v1/jobs").status_code == 200
        assert svc.submit(tiny_config())["state"] == "queued"
        anonymous.close()
    finally:
        svc.stop()


def test_openapi_documents_the_v1_routes(service: Service) -> None:
    spec = service.http.get("/openapi.json").json()
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/pareto", "/v1/health"} <= set(spec["paths"])
    assert json.dumps(spec).count("JobCreate") >= 1


def test_cli_client_submits_waits_lists_shows_and_plots(
    service: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from api.cli.main import main

    config = tmp_path / "job.json"
    config.write_text(json.dumps(tiny_config()))
    url = ["--url", service.url]
    assert main(["submit", str(config), "--kind", "distill", "--wait", "--quiet", *url]) == 0
    out = capsys.readouterr().out
    assert "succeeded" in out and "S0" in out
    assert main(["jobs", "--state", "succeeded", *url]) == 0
    assert "distill" in capsys.readouterr().out
    assert main(["show", "1", "--json", *url]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == 1
    plot = tmp_path / "front.png"
    assert main(["pareto", "--dataset", "digits", "--json", "--plot", str(plot), *url]) == 0
    front = json.loads(capsys.readouterr().out.split("\nplot:")[0])
    assert front["front"] and plot.stat().st_size > 10_000
    assert main(["show", "99999", *url]) == 2
    assert "HTTP 404" in capsys.readouterr().err
