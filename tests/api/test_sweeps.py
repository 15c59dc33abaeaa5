"""Optuna budget sweeps through the HTTP API: trials are jobs run by 2 workers on real digits."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

from api.cli.main import main as cli
from search.pareto import dominated
from tests.api.service import Service, backend_service, backends, tiny_config
from tests.waiting import wait_until

pytestmark = pytest.mark.slow  # trains models or starts servers: not in make test-fast


def sweep_body(**overrides: Any) -> dict[str, Any]:
    """Tiny searched res-students (C4, 3 cells, 1 epoch per search stage) on the 8x8 digits."""
    base = tiny_config(
        res_students=[{"search": {"budget_mflops": 0.1, "epochs": 1, "channels": 4, "layers": 3}}],
        val_size=60,
    )
    body: dict[str, Any] = {
        "base": base,
        "space": {
            "budget_mflops": [0.06, 0.16],
            "res_students": [1, 2],
            "t": [2.0, 6.0],
            "tau": [0.5, 0.95],
            "flops_weight": [0.5, 4.0],
        },
        "trials": 6,
        "parallel": 2,
        "sampler": "nsga2",
        "seed": 3,
        "name": "digits budgets",
    }
    return body | overrides


@pytest.fixture(scope="module", params=backends("sweeps", "local-sqlite", "ray-postgresql"))
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """Two workers: local processes on SQLite, and Ray tasks on a real PostgreSQL server."""
    with backend_service(request, tmp_path_factory.mktemp(request.param), workers=2) as svc:
        yield svc


def wait_sweep(service: Service, sweep_id: int, timeout: float = 600) -> dict[str, Any]:
    """The sweep once it is no longer running."""
    seen: list[dict[str, Any]] = []

    def ended() -> dict[str, Any] | None:
        seen[:] = [service.http.get(f"/v1/sweeps/{sweep_id}").json()]
        return dict(seen[0]) if seen[0]["state"] != "running" else None

    return wait_until(
        ended, timeout=timeout, every=0.5, what=lambda: f"{seen}\n{service.read_log()}"
    )


def test_a_sweep_of_six_trials_runs_over_http_with_two_workers(
    service: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = service.http.post("/v1/sweeps", json=sweep_body())
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["state"] == "running" and created["trials"] == 6
    # Two trials are queued at once (parallel: 2): both workers get one.
    assert len(created["trial_list"]) == 2

    sweep = wait_sweep(service, created["id"])
    assert sweep["state"] == "succeeded", sweep
    trials = sweep["trial_list"]
    assert [t["number"] for t in trials] == list(range(6))
    assert all(t["state"] == "complete" and t["job_state"] == "succeeded" for t in trials)
    assert set(trials[0]["params"]) == {"budget_mflops", "res_students", "t", "tau", "flops_weight"}
    # NSGA-II's first generation (population 4 here) is drawn at random: no repeated draw,
    # although each ask/tell step builds its sampler afresh in whichever process runs it.
    assert len({t["params"]["budget_mflops"] for t in trials[:4]}) == 4

    # The study lives in the service's database: Optuna (and optuna-dashboard) open it by URL.
    study = optuna.load_study(study_name=sweep["study_name"], storage=service.database_url)
    assert len(study.trials) == 6
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.metric_names == ["val_accuracy", "mflops"]
    front = service.http.get(f"/v1/sweeps/{sweep['id']}/pareto").json()
    assert front["considered"] == 6 and front["ranked_on"] == "val_accuracy"
    assert {t["number"] for t in front["front"]} == {t.number for t in study.best_trials}
    points = [(t["val_accuracy"], t["cost"]) for t in front["front"]]
    assert not any(dominated(p, q) for p in points for q in points)
    for t in trials:  # every trial is on the front or dominated by it, on D_v accuracy
        p = (t["val_accuracy"], t["cost"])
        assert p in points or any(dominated(p, q) for q in points)

    # Each trial is a ResKD job whose objectives are its S_n's D_v accuracy and MFLOPs (its
    # test accuracy kept beside, as the trial's user attribute), its
    # res-students' budgets are the sampled one, and the teacher and S0 were trained once.
    jobs = [service.job(t["job_id"]) for t in trials]
    first_trained = {"teacher": 0, "student": 0}
    for trial, job in zip(trials, jobs, strict=True):
        assert job["sweep_id"] == sweep["id"] and job["trial"] == trial["number"]
        s_n = [m for m in job["metrics"] if m["role"] == "stage"][-1]
        assert (s_n["val_accuracy"], s_n["mflops"]) == (trial["val_accuracy"], trial["cost"])
        assert s_n["accuracy"] == trial["accuracy"]
        assert study.trials[trial["number"]].values[0] == s_n["val_accuracy"]
        searches = [s for s in job["stages"] if s["kind"] == "search"]
        assert 1 <= len(searches) <= trial["params"]["res_students"]
        assert job["config"]["kd"]["t"] == pytest.approx(trial["params"]["t"])
        budget = job["config"]["res_students"][0]["search"]["budget_mflops"]
        assert budget == pytest.approx(trial["params"]["budget_mflops"])
        for s in job["stages"]:
            if s["kind"] in first_trained and not s["reused"]:
                first_trained[s["kind"]] += 1
    assert first_trained == {"teacher": 1, "student": 1}

    # The command line shows it, and plots it.
    plot = tmp_path / "sweep.png"
    assert cli(["sweep", "--id", str(sweep["id"]), "--url", service.url, "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "succeeded" in out and "Pareto front: trials" in out and "D_v acc" in out
    assert plot.stat().st_size > 10_000
    # `reskd sweep` alone lists the sweeps (it was an error); --json on the listing
    assert cli(["sweep", "--url", service.url]) == 0
    listed = capsys.readouterr().out
    rows = [line.split() for line in listed.splitlines()[2:]]
    assert "trial jobs" in listed and any(r[0] == str(sweep["id"]) for r in rows), listed
    assert cli(["sweep", "--url", service.url, "--json"]) == 0
    ids = [w["id"] for w in json.loads(capsys.readouterr().out)["sweeps"]]
    assert sweep["id"] in ids


def test_bad_sweeps_are_422_naming_the_field(service: Service) -> None:
    cases = [
        (sweep_body(sampler="grid"), ["body", "sampler"]),
        (sweep_body(trials=0), ["body", "trials"]),
        (sweep_body(space={"budget": [1, 2]}), ["body", "space", "budget"]),
        (sweep_body(space={"tau": [0.5, 1.5]}), ["body", "space", "tau"]),
        (sweep_body(space={"res_students": [2, 1]}), ["body", "space", "res_students"]),
        # The low end is below the smallest network of the search space.
        (sweep_body(space={"budget_mflops": [0.01, 0.1]}), ["body", "space"]),
        (sweep_body(base={**tiny_config(), "dataset": "nope"}), ["body", "base", "dataset"]),
    ]
    before = service.http.get("/v1/sweeps").json()["sweeps"]
    for body, loc in cases:
        r = service.http.post("/v1/sweeps", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["detail"][0]["loc"] == loc, r.text
    r = service.http.post("/v1/sweeps", json=sweep_body(space={"budget_mflops": [0.01, 0.1]}))
    assert "below the minimum" in r.json()["detail"][0]["msg"]
    assert service.http.get("/v1/sweeps").json()["sweeps"] == before  # nothing stored
    assert service.http.get("/v1/sweeps/999").status_code == 404


def test_a_sweep_is_cancelled_from_the_command_line(
    service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    # Many trials: two tiny ones could both finish (T and S0 reused) before the cancel arrives.
    created = service.http.post("/v1/sweeps", json=sweep_body(trials=500)).json()
    assert cli(["sweep", "--id", str(created["id"]), "--cancel", "--url", service.url]) == 0
    assert capsys.readouterr().out.strip() == f"sweep {created['id']}: cancelled"
    assert service.http.get(f"/v1/sweeps/{created['id']}").json()["state"] == "cancelled"
    assert cli(["sweep", "--cancel", "--url", service.url]) == 2
    assert "--cancel: needs --id" in capsys.readouterr().err
