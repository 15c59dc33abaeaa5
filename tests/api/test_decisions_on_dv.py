"""D_v decides, test accuracy is shown beside: where the two disagree, the stored front, the
architecture groups, the jobs list's best and ``reskd pareto`` follow D_v, one dataset and one
teacher at a time. In process (the ASGI app on a temporary SQLite database), so it runs in make
test-fast."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.cli import main as cli
from api.cli import remote
from api.client import Client
from api.http.main import create_app
from api.runtime.settings import Settings

OLD, NEW = "resnet20@0123456789ab", "resnet20@fedcba987654"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(Settings(artifact_root=tmp_path))
    with TestClient(app, base_url="http://127.0.0.1") as http:
        yield http
    app.state.db.dispose()


def arch(stage: str, val: float | None, test: float, mflops: float, **fields: Any) -> dict:
    return {
        "dataset": "digits", "teacher": NEW, "stage": stage, "arch": f"a-{stage}",
        "genotypes": None, "val_accuracy": val, "accuracy": test, "mflops": mflops,
        "adaptive_mflops": mflops, "params": 1, "energy": None, "seed": 0,
    } | fields  # fmt: skip


def finished(client: TestClient, result: dict[str, Any], architectures: list[dict]) -> int:
    """A job that succeeded with ``result`` and stored ``architectures``."""
    queue = client.app.state.queue  # type: ignore[attr-defined]
    job = queue.submit(kind="reskd", config={}, dataset="digits", name=None)
    assert queue.claim(worker="w", lease_seconds=30).job_id == job
    queue.add_results(job_id=job, artifacts=[], architectures=architectures)
    assert queue.finish(job_id=job, worker="w", state="succeeded", result=result)
    return int(job)


def rows(*rows: tuple[str, str, float | None, float]) -> list[dict[str, Any]]:
    """Report rows: (model, role, D_v accuracy, test accuracy)."""
    return [
        {"model": m, "role": role, "val_accuracy": val, "accuracy": test, "mflops": 1.0,
         "adaptive_mflops": 0.5}
        for m, role, val, test in rows
    ]  # fmt: skip


def test_the_front_and_the_jobs_best_follow_d_v_where_test_accuracy_disagrees(
    client: TestClient,
) -> None:
    # S1 is best on the test set, S2 on D_v; an old row has no D_v accuracy at all
    finished(
        client,
        {"rows": rows(("S1", "stage", 0.80, 0.99), ("S2", "stage", 0.90, 0.85))},
        [arch("S1", 0.80, 0.99, 2.0), arch("S2", 0.90, 0.85, 2.0), arch("S3", None, 0.999, 1.0)],
    )
    front = client.get("/v1/pareto", params={"dataset": "digits", "teacher": NEW}).json()
    assert [(a["stage"], a["val_accuracy"], a["accuracy"]) for a in front["front"]] == [
        ("S2", 0.90, 0.85)
    ]
    assert front["ranked_on"] == "val_accuracy" and front["considered"] == 2
    points = client.get("/v1/architectures/points", params={"teacher": NEW}).json()
    assert points["val_accuracy"] == [0.80, 0.90, None] and points["accuracy"][2] == 0.999

    # the jobs list's best: the report's deploy when it has one (what the export ships), else
    # the row best on D_v; a result without D_v accuracy has none (never chosen on test)
    deploy = {"stage": 1, "model": "S1", "threshold": 0.7, "val_accuracy": 0.93,
              "accuracy": 0.91, "adaptive_mflops": 0.6}  # fmt: skip
    with_deploy = finished(
        client,
        {"rows": rows(("S0", "stage", 0.90, 0.97), ("S1", "stage", 0.93, 0.91),
                      ("S2", "stage", 0.92, 0.99)), "deploy": deploy},
        [],
    )  # fmt: skip
    without = finished(
        client,
        {"rows": rows(("T", "teacher", 0.99, 0.99), ("S0", "stage", 0.90, 0.97),
                      ("S1", "stage", 0.94, 0.93), ("S1 adaptive", "adaptive", 0.94, 0.95),
                      ("KD", "baseline", 0.98, 0.98))},
        [],
    )  # fmt: skip
    old = finished(client, {"rows": rows(("S1", "stage", None, 0.99))}, [])
    best = {j["id"]: j["best"] for j in client.get("/v1/jobs").json()["jobs"]}
    assert best[with_deploy] == {
        "model": "S1", "val_accuracy": 0.93, "accuracy": 0.91, "mflops": 0.6, "deployed": True,
    }  # fmt: skip
    # S1 and S1 adaptive are equal on D_v: the first; the teacher and baselines are not students
    assert best[without] == {
        "model": "S1", "val_accuracy": 0.94, "accuracy": 0.93, "mflops": 1.0, "deployed": False,
    }  # fmt: skip
    assert best[old] is None
    assert client.get(f"/v1/jobs/{with_deploy}").json()["best"]["model"] == "S1"


def test_groups_and_reskd_pareto_show_one_teacher_and_name_the_others(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # an older job with another checkpoint of the same architecture, far more accurate on the
    # test set: never mixed into the newer teacher's front
    finished(client, {"rows": []}, [arch("S1", 0.97, 0.999, 0.5, teacher=OLD)])
    newest = finished(
        client,
        {"rows": [], "teacher": {"arch": "resnet20", "id": NEW}},
        [arch("T", 0.95, 0.96, 40.0), arch("S1", 0.85, 0.80, 1.0), arch("S2", 0.9, 0.7, 2.0),
         arch("S0", None, 0.5, 0.1)],
    )  # fmt: skip
    groups = client.get("/v1/architectures/groups").json()
    assert [(g["teacher"], g["architectures"], g["ranked"]) for g in groups["groups"]] == [
        (NEW, 4, 3),
        (OLD, 1, 1),
    ]
    assert groups["default"]["teacher"] == NEW and groups["default"]["latest_job_id"] == newest

    service = Client("http://127.0.0.1")
    service.http = client  # the CLI's requests go to the app in this process
    monkeypatch.setattr(remote, "client_of", lambda args: service)
    assert cli.main(["pareto"]) == 0
    out = capsys.readouterr().out
    assert f"Pareto front of digits, teacher {NEW} (the latest job's)" in out
    table = out.split("\n")[1:5]
    assert table[0].split() == ["stage", "arch", "D_v", "acc", "test", "acc", "mflops", "job"]
    assert [line.split()[:4] for line in table[2:]] == [
        ["S1", "a-S1", "85.00%", "80.00%"],
        ["S2", "a-S2", "90.00%", "70.00%"],
    ]
    assert "on no front: 1 stored before D_v accuracy was recorded" in out
    assert f"other datasets and teachers (--dataset, --teacher): digits {OLD}" in out

    assert cli.main(["pareto", "--teacher", OLD, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["teacher"] == OLD and [a["stage"] for a in shown["front"]] == ["S1"]
    assert cli.main(["pareto", "--teacher", "resnet20"]) == 0  # the architecture: its newest
    assert f"teacher {NEW}" in capsys.readouterr().out.splitlines()[0]

    assert cli.main(["pareto", "--teacher", "resnet56"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "reskd pareto: error: teacher: no architectures with teacher 'resnet56'; teachers with "
        f"results: {OLD}, {NEW}"
    )
    assert cli.main(["pareto", "--dataset", "mnist5k"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("dataset: no architectures on mnist5k; datasets with results: digits")
