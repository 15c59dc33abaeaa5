"""Deleting jobs, sweeps and uploads, collecting what nothing references, and who uses how much:
on real files under a service's artifact root, with jobs written as a worker writes them (rows
through the queue, small files) instead of trained."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from api.cli.main import main
from api.cli.retention import size_text
from api.client import Client
from api.runtime import retention
from api.runtime.accounts import Principal, add_user, create_key, uploaded
from api.runtime.settings import Settings
from api.runtime.sweeps import study_storage
from db.models import Architecture, AuditEntry, EpochMetric, Job, Stage
from tests.api.service import tiny_config

TOKEN = "retention-s3cret"
ADMIN = Principal("admin", "admin")
TEACHER = "resnet8@0123456789ab"
EPOCH = {"epoch": 1, "loss": 1.0, "train_accuracy": 0.5, "eval_accuracy": 0.5, "lr": 0.1,
         "seconds": 1.0}  # fmt: skip


@dataclass
class Svc:
    """A service without workers, its members mia and otto, and their keys' headers."""

    app: FastAPI
    client: TestClient
    root: Path
    headers: dict[str, dict[str, str]]

    @property
    def db(self) -> Any:
        return self.app.state.db

    def call(self, who: str, method: str, url: str, **kwargs: Any) -> Any:
        headers = {**self.headers[who], **kwargs.pop("headers", {})}
        return self.client.request(method, url, headers=headers, **kwargs)

    def job(
        self,
        owner: str | None,
        *,
        state: str = "succeeded",
        stages: tuple[tuple[str, str, bool], ...] = (),
        points: tuple[tuple[float, float], ...] = (),
        config: dict[str, Any] | None = None,
    ) -> int:
        """A job as its worker leaves it: its rows, ``jobs/<id>/`` and, for each stage it
        computed (not reused: the third item), ``stages/<kind>-<key>/``; ``points`` are its
        architectures' (D_v accuracy, MFLOPs)."""
        q = self.app.state.queue
        config = config or tiny_config()
        job_id = q.submit(kind="reskd", config=config, dataset="digits", name=None, owner=owner)
        for kind, key, reused in stages:
            state_now = "succeeded" if reused else "running"
            stage = q.stage_started(job_id=job_id, kind=kind, key=key, name=kind, state=state_now)
            if not reused:
                q.add_epoch(job_id=job_id, stage_id=stage, metrics=EPOCH)
                q.stage_finished(stage_id=stage, state="succeeded")
                write(self.root / "stages" / f"{kind}-{key}" / "model.pt", 3000 + len(kind))
                write(self.root / "stages" / f"{kind}-{key}" / "DONE", 40)
        report = write(self.root / "jobs" / str(job_id) / "report.json", 500 + job_id)
        artifact = {"name": "report.json", "kind": "report", "size": report,
                    "path": f"jobs/{job_id}/report.json"}  # fmt: skip
        rows = [{"dataset": "digits", "teacher": TEACHER, "stage": f"S{i + 1}", "arch": f"a{i}",
                 "accuracy": acc, "val_accuracy": acc, "mflops": mflops, "adaptive_mflops": mflops,
                 "params": 1000} for i, (acc, mflops) in enumerate(points)]  # fmt: skip
        q.add_results(job_id=job_id, artifacts=[artifact], architectures=rows)
        with self.db.session() as s:
            s.execute(update(Job).where(Job.id == job_id).values(state=state))
        return job_id


def write(path: Path, size: int) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    return size


def files(root: Path) -> dict[str, int]:
    """Every file under ``root`` but the database's, with its size (as ``du -b`` walks)."""
    return {
        p.relative_to(root).as_posix(): p.stat().st_size
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink() and not p.name.startswith("reskd.db")
    }


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[Svc]:
    app = create_app_with_token(tmp_path)
    headers = {"admin": {"Authorization": f"Bearer {TOKEN}"}}
    with app.state.db.session() as s:
        for name in ("mia", "otto"):
            _, key = create_key(s, ADMIN, add_user(s, ADMIN, name=name, role="member"))
            headers[name] = {"Authorization": f"Bearer {key}"}
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield Svc(app, client, tmp_path, headers)


def create_app_with_token(root: Path) -> FastAPI:
    from api.http.main import create_app

    return create_app(Settings(artifact_root=root, token=TOKEN))


def cli_as(svc: Svc, who: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``reskd`` commands of this module talk to ``svc`` as ``who``."""
    client = Client("http://127.0.0.1", "unused")
    client.http = TestClient(svc.app, base_url="http://127.0.0.1", headers=svc.headers[who])
    monkeypatch.setattr("api.cli.retention.client_of", lambda _: client)


def audit(svc: Svc) -> list[tuple[str, str, str]]:
    with svc.db.session(readonly=True) as s:
        return [(e.actor, e.action, e.target) for e in s.scalars(select(AuditEntry))]


# -- deletes -------------------------------------------------------------------------------------


def test_a_stage_another_job_reuses_stays_until_no_job_uses_it(svc: Svc) -> None:
    a = svc.job(
        "mia", stages=(("teacher", "aaaaaaaaaaaa", False), ("student", "bbbbbbbbbbbb", False))
    )
    b = svc.job(
        "otto", stages=(("teacher", "aaaaaaaaaaaa", True), ("student", "cccccccccccc", False))
    )
    teacher = svc.root / "stages" / "teacher-aaaaaaaaaaaa"
    before = files(svc.root)
    mine = {p: n for p, n in before.items() if p.startswith((f"jobs/{a}/", "stages/student-bbb"))}

    r = svc.call("mia", "DELETE", f"/v1/jobs/{a}")
    assert r.status_code == 200, r.text
    removed = r.json()
    assert sorted(removed["paths"]) == [f"jobs/{a}", "stages/student-bbbbbbbbbbbb"]
    assert removed["kept"] == ["stages/teacher-aaaaaaaaaaaa"]  # otto's job reuses it
    assert removed["bytes_freed"] == sum(mine.values())
    assert removed["rows"] == {"jobs": 1, "stages": 2, "epoch_metrics": 2, "artifacts": 1,
                               "architectures": 0}  # fmt: skip
    assert files(svc.root) == {p: n for p, n in before.items() if p not in mine}
    assert teacher.is_dir() and svc.call("mia", "GET", f"/v1/jobs/{a}").status_code == 404
    with svc.db.session(readonly=True) as s:
        assert s.scalars(select(Stage.job_id)).all() == [b, b]
        assert s.scalars(select(EpochMetric.job_id)).all() == [b]

    r = svc.call("otto", "DELETE", f"/v1/jobs/{b}")  # the last job that used it: it goes
    assert r.status_code == 200, r.text
    assert "stages/teacher-aaaaaaaaaaaa" in r.json()["paths"] and not teacher.exists()
    assert files(svc.root) == {}
    assert [e for e in audit(svc) if e[1] == "job.delete"] == [
        ("mia", "job.delete", f"job {a}"),
        ("otto", "job.delete", f"job {b}"),
    ]


def test_a_member_cannot_delete_another_members_job_and_nothing_changes(
    svc: Svc, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    job = svc.job("mia", stages=(("teacher", "aaaaaaaaaaaa", False),), points=((0.9, 5.0),))
    before, entries = files(svc.root), audit(svc)
    r = svc.call("otto", "DELETE", f"/v1/jobs/{job}")
    assert r.status_code == 403 and "belongs to mia" in r.json()["detail"]
    cli_as(svc, "otto", monkeypatch)
    assert main(["delete", "job", str(job)]) == 2
    assert f"HTTP 403: job {job} belongs to mia; otto may not change it" in capsys.readouterr().err
    assert files(svc.root) == before and audit(svc) == entries
    assert svc.call("otto", "GET", f"/v1/jobs/{job}").json()["state"] == "succeeded"

    cli_as(svc, "admin", monkeypatch)  # an admin may
    assert main(["delete", "job", str(job)]) == 0
    out = capsys.readouterr().out
    assert f"job {job}: removed 2 paths (" in out and "1 architectures, 1 artifacts" in out
    assert svc.call("admin", "DELETE", f"/v1/jobs/{job}").status_code == 404


@pytest.mark.parametrize("state", ["queued", "running"])
def test_a_queued_or_running_job_is_not_deleted(svc: Svc, state: str) -> None:
    job = svc.job("mia", state=state, stages=(("teacher", "aaaaaaaaaaaa", False),))
    before = files(svc.root)
    r = svc.call("mia", "DELETE", f"/v1/jobs/{job}")
    assert r.status_code == 409 and r.json()["detail"] == f"job {job} is {state}: cancel it first"
    assert files(svc.root) == before
    assert svc.call("mia", "GET", f"/v1/jobs/{job}").json()["state"] == state
    assert "job.delete" not in {action for _, action, _ in audit(svc)}


def test_the_pareto_front_no_longer_holds_a_deleted_jobs_architectures(svc: Svc) -> None:
    strong = svc.job("mia", points=((0.95, 10.0), (0.90, 4.0)))
    weak = svc.job("otto", points=((0.93, 10.0), (0.85, 4.0), (0.80, 2.0)))
    query = {"dataset": "digits", "teacher": TEACHER}

    def front() -> list[tuple[int, float]]:
        got = svc.call("otto", "GET", "/v1/pareto", params=query).json()
        return sorted((a["job_id"], a["val_accuracy"]) for a in got["front"])

    assert front() == [(strong, 0.90), (strong, 0.95), (weak, 0.80)]
    assert svc.call("mia", "DELETE", f"/v1/jobs/{strong}").json()["rows"]["architectures"] == 2
    assert front() == [(weak, 0.80), (weak, 0.85), (weak, 0.93)]  # rebuilt from what is left
    with svc.db.session(readonly=True) as s:
        assert s.scalars(select(Architecture.job_id).distinct()).all() == [weak]


def test_a_sweep_goes_with_its_trials_and_its_study(svc: Svc) -> None:
    r = svc.call("mia", "POST", "/v1/sweeps", json={"base": tiny_config(), "trials": 2})
    assert r.status_code == 201, r.text
    sweep = r.json()["id"]
    r = svc.call("mia", "DELETE", f"/v1/sweeps/{sweep}")
    assert (
        r.status_code == 409 and r.json()["detail"] == f"sweep {sweep} is running: cancel it first"
    )
    with svc.db.session() as s:
        trial = s.scalars(select(Job.id).where(Job.sweep_id == sweep).order_by(Job.id)).first()
        s.execute(update(Job).where(Job.id == trial).values(state="failed"))
    r = svc.call("mia", "DELETE", f"/v1/jobs/{trial}")  # an ended trial, but the sweep goes on
    assert r.status_code == 409 and f"a trial of sweep {sweep}, which is running" in r.text
    with svc.db.session() as s:  # the trial began on a worker, which has not stopped it yet
        s.execute(update(Job).where(Job.id == trial).values(state="running"))
    assert svc.call("mia", "POST", f"/v1/sweeps/{sweep}/cancel").status_code == 200
    r = svc.call("mia", "DELETE", f"/v1/sweeps/{sweep}")
    assert r.status_code == 409 and f"job {trial} (running)" in r.json()["detail"]
    with svc.db.session() as s:
        s.execute(update(Job).where(Job.id == trial).values(state="cancelled"))
        trials = s.scalars(select(Job.id).where(Job.sweep_id == sweep)).all()
    write(svc.root / "jobs" / str(trial) / "log.txt", 10)
    studies = study_storage(svc.db.url)
    assert f"reskd-sweep-{sweep}" in optuna.get_all_study_names(storage=studies)

    r = svc.call("mia", "DELETE", f"/v1/sweeps/{sweep}")
    assert r.status_code == 200, r.text
    assert r.json()["rows"]["jobs"] == len(trials) and r.json()["rows"]["sweeps"] == 1
    assert r.json()["paths"] == [f"jobs/{trial}"]
    assert svc.call("mia", "GET", f"/v1/sweeps/{sweep}").status_code == 404
    assert f"reskd-sweep-{sweep}" not in optuna.get_all_study_names(storage=studies)
    deletes = [(a, t) for _, a, t in audit(svc) if a.endswith(".delete")]
    assert deletes == [
        *(("job.delete", f"job {i}") for i in trials),
        ("sweep.delete", f"sweep {sweep}"),
    ]


def test_an_upload_a_queued_job_names_is_not_deleted(svc: Svc) -> None:
    r = svc.call("mia", "POST", "/v1/checkpoints", params={"name": "t.pt"},
                 content=state_dict(), headers={"Content-Type": "application/octet-stream"})  # fmt: skip
    assert r.status_code == 201, r.text
    name = r.json()["name"]
    path = svc.root / "checkpoints" / name
    job = svc.job("mia", state="queued", config=tiny_config(teacher_checkpoint=str(path.resolve())))
    r = svc.call("mia", "DELETE", f"/v1/checkpoints/{name}")
    assert r.status_code == 409
    assert (
        r.json()["detail"] == f"checkpoint {name} is named by job {job} (queued): cancel it first"
    )
    assert path.is_file()
    assert svc.call("otto", "DELETE", f"/v1/checkpoints/{name}").status_code == 403

    assert svc.call("mia", "POST", f"/v1/jobs/{job}/cancel").status_code == 200
    size = path.stat().st_size
    r = svc.call("mia", "DELETE", f"/v1/checkpoints/{name}")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "target": f"checkpoint {name}", "rows": {"uploads": 1}, "paths": [f"checkpoints/{name}"],
        "kept": [], "bytes_freed": size, "dry_run": False,
    }  # fmt: skip
    assert not path.exists() and os.listdir(path.parent) == []
    assert svc.call("admin", "DELETE", f"/v1/checkpoints/{name}").status_code == 404
    assert svc.call("admin", "DELETE", "/v1/datasets/nothing").status_code == 404
    assert ("mia", "checkpoint.delete", f"checkpoint {name}") in audit(svc)


def state_dict() -> bytes:
    import io

    import torch

    buffer = io.BytesIO()
    torch.save({"w": torch.ones(4)}, buffer)
    return buffer.getvalue()


# -- collection ----------------------------------------------------------------------------------


def test_gc_removes_what_nothing_references_and_nothing_else(
    svc: Svc, capsys: pytest.CaptureFixture[str]
) -> None:
    kept = svc.job("mia", stages=(("teacher", "aaaaaaaaaaaa", False),))
    dataset = svc.root / "datasets" / "digits5"
    write(dataset / "train" / "0" / "0.png", 70)
    svc.job("mia", config=tiny_config(root=str(dataset.resolve())))  # names it: it stays
    with svc.db.session() as s:
        uploaded(s, Principal("mia", "member"), "dataset", "digits5", 70)
        uploaded(s, Principal("mia", "member"), "checkpoint", "old-0123.pt", 90)
    write(svc.root / "checkpoints" / "old-0123.pt", 90)  # no job names it
    stale = {
        "stages/student-bbbbbbbbbbbb/model.pt": write(svc.root / "stages/student-bbbbbbbbbbbb/model.pt", 300),
        "stages/search-cccccccccccc.partial/epoch.pt": write(svc.root / "stages/search-cccccccccccc.partial/epoch.pt", 200),
        "jobs/999/log.txt": write(svc.root / "jobs/999/log.txt", 30),
        "stages/.removing-0a1b2c3d4e5f-x/model.pt": write(svc.root / "stages/.removing-0a1b2c3d4e5f-x/model.pt", 20),
    }  # fmt: skip
    temporary = {
        "checkpoints/.upload-77-1.tmp": write(svc.root / "checkpoints/.upload-77-1.tmp", 40),
        "datasets/.unpack-abc/train/0/1.png": write(svc.root / "datasets/.unpack-abc/train/0/1.png", 50),
    }  # fmt: skip
    before = files(svc.root)

    assert main(["gc", "--artifact-root", str(svc.root), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "gc: would remove 4 paths (550 B)" in out and "jobs/999" in out
    assert files(svc.root) == before

    r = svc.call("mia", "POST", "/v1/gc", json={})
    assert r.status_code == 403  # admins only
    r = svc.call("admin", "POST", "/v1/gc", json={})  # the temporary files are fresh: they stay
    assert r.status_code == 200, r.text
    assert sorted(r.json()["paths"]) == ["jobs/999", "stages/.removing-0a1b2c3d4e5f-x",
                                         "stages/search-cccccccccccc.partial",
                                         "stages/student-bbbbbbbbbbbb"]  # fmt: skip
    assert r.json()["bytes_freed"] == sum(stale.values())
    assert files(svc.root) == {p: n for p, n in before.items() if p not in stale}

    later = time.time() + retention.TEMP_GRACE_SECONDS + 60
    removed = retention.gc(svc.app.state.settings, svc.db, older_than_days=1, now=later + 86_400)
    assert sorted(removed.paths) == ["checkpoints/.upload-77-1.tmp", "checkpoints/old-0123.pt",
                                     "datasets/.unpack-abc"]  # fmt: skip
    assert removed.rows == {"uploads": 1}
    gone = {*stale, *temporary, "checkpoints/old-0123.pt"}
    assert files(svc.root) == {p: n for p, n in before.items() if p not in gone}
    assert (svc.root / "stages" / "teacher-aaaaaaaaaaaa").is_dir() and kept
    gcs = [(actor, target) for actor, action, target in audit(svc) if action == "gc"]
    assert [a for a, _ in gcs][1:] == ["admin", "gc"] and gcs[0][0].startswith("cli")


# -- usage ---------------------------------------------------------------------------------------


def test_usage_per_user_adds_up_to_what_is_on_disk(
    svc: Svc, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    now = time.time()
    mia = svc.job("mia", stages=(("teacher", "aaaaaaaaaaaa", False),))
    otto = svc.job(
        "otto", stages=(("teacher", "aaaaaaaaaaaa", True), ("student", "bbbbbbbbbbbb", False))
    )
    # a job stored before owners (the admin's) that reused a stage whose computing job is gone
    old = svc.job(None, stages=(("gate", "dddddddddddd", True),))
    running = svc.job("mia", state="running")
    with svc.db.session() as s:
        uploaded(s, Principal("otto", "member"), "checkpoint", "t-0123.pt", 1)
        for job, seconds, settled, ran_from in ((mia, 5400.0, now - 2 * 86_400, None),
                                                (otto, 1800.0, now - 600, None),
                                                (running, 0.0, None, now - 900)):  # fmt: skip
            s.execute(update(Job).where(Job.id == job)
                      .values(device_seconds=seconds, settled_at=settled, ran_from=ran_from))  # fmt: skip
    upload = write(svc.root / "checkpoints" / "t-0123.pt", 777)
    unowned = write(svc.root / "checkpoints" / "legacy.pt", 55)  # no upload row
    write(svc.root / "stages" / "gate-dddddddddddd" / "DONE", 11)  # shared
    write(svc.root / "jobs" / "999" / "log.txt", 13)  # no job
    write(svc.root / "notes.txt", 17)
    disk = files(svc.root)  # what `du -b` counts

    def under(*prefixes: str) -> int:
        return sum(n for p, n in disk.items() if p.startswith(prefixes))

    got = svc.call("otto", "GET", "/v1/usage").json()
    users = {u["user"]: u for u in got["users"]}
    assert set(users) == {"admin", "mia", "otto"}
    assert users["mia"]["jobs"] == 2 and users["otto"]["jobs"] == 1 and users["admin"]["jobs"] == 1
    assert users["mia"]["stage_bytes"] == under("stages/teacher-")  # computed it; otto reused it
    assert users["mia"]["job_bytes"] == under(f"jobs/{mia}/", f"jobs/{running}/")
    assert users["otto"]["stage_bytes"] == under("stages/student-")
    assert users["otto"]["upload_bytes"] == upload
    assert users["admin"]["disk_bytes"] == under(f"jobs/{old}/")
    assert got["shared"]["disk_bytes"] == unowned + 11 + 13 + 17
    assert got["total_bytes"] == sum(disk.values())
    assert sum(u["disk_bytes"] for u in users.values()) + got["shared"]["disk_bytes"] == sum(
        disk.values()
    )
    assert users["mia"]["device_hours"] == pytest.approx(1.5 + 0.25, abs=0.01)
    assert users["mia"]["device_hours_24h"] == pytest.approx(0.25, abs=0.01)
    assert users["otto"]["device_hours"] == users["otto"]["device_hours_24h"] == 0.5

    cli_as(svc, "otto", monkeypatch)
    assert main(["usage"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2].split()[:4] == ["admin", "1", "0", "s"]
    assert out[4].split()[:3] == ["otto", "1", "30"] and out[-2].startswith("shared")
    assert out[-1] == f"total on disk: {size_text(sum(disk.values()))} (the database aside)"
