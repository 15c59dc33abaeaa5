"""A busy service's jobs, stored in bulk for ``benchmarks.api_load``: ``n`` jobs of 8 users (and
an admin's) with their stages, epoch metrics, results and artifacts, and one sweep whose trials
are among them, its Optuna study beside it. Written through SQLAlchemy core (and Optuna's own
storage for the study), as finished jobs would have left them, in seconds rather than days.

Each job that ran has 5 stages of 6 epochs (30 epoch rows) and 6 artifacts; a succeeded one has
a report (rows, teacher, deploy, warnings; a search job's searched network). The newest jobs are
queued (some at their owner's quota, so that ``held`` says why) or running.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from api.cli.demo import demo_configs
from api.runtime.runner import config_for_job
from api.runtime.sweeps import study_storage
from db.models import Artifact, EpochMetric, Job, Stage, Sweep, User
from db.session import Database
from search.config import RunConfig
from search.sweep import OBJECTIVE, SweepSpec

OWNERS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")
DATASETS = ("digits", "mnist5k", "cifar10", "cifar100")
KINDS = (("reskd", 70), ("search", 15), ("finetune", 10), ("distill", 5))
ENDED = (("succeeded", 85), ("failed", 9), ("cancelled", 6))
STAGES = (("teacher", "T resnet20"), ("student", "S0 resnet14x0.25"),
          ("assistant", "A1 resnet8x0.25"), ("res_student", "S1 resnet8x0.25"),
          ("res_student", "S2 resnet8x0.5"))  # fmt: skip
EPOCHS = 6  # per stage: 30 epoch rows a job
FILES = (("report.json", "report"), ("report.txt", "report"), ("log.txt", "log"),
         ("config.json", "config"), ("combined_student.pt", "combined_student"),
         ("S1-cells.png", "plot"))  # fmt: skip
QUEUED, RUNNING = 150, 8  # the newest jobs: waiting, then running
SWEEP_TRIALS = 40
CHUNK = 20_000


@dataclass
class Seeded:
    """What was stored: job ids by state, the ids of jobs with stages, the sweep's id."""

    jobs: list[int] = field(default_factory=list)
    ran: list[int] = field(default_factory=list)
    sweep: int = 0


def _weighted(rng: random.Random, choices: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([c for c, _ in choices], weights=[w for _, w in choices])[0]


def _configs() -> dict[str, dict[str, Any]]:
    """A stored config per dataset, as the queue keeps a submitted job's (all its fields)."""
    checked = config_for_job(RunConfig.model_validate(demo_configs(1)["searched R1"]), "reskd")
    return {d: checked.to_dict() | {"dataset": d} for d in DATASETS}


def _rows(rng: random.Random) -> list[dict[str, Any]]:
    """A report's rows: the teacher, S0..S2 (S1 also adaptive) and two baselines."""
    out = []
    for model, role in (("T", "teacher"), ("S0", "stage"), ("S1", "stage"),
                        ("S1 adaptive", "adaptive"), ("S2", "stage"), ("KD", "baseline"),
                        ("together", "baseline")):  # fmt: skip
        mflops = rng.uniform(1, 40)
        out.append({
            "model": model, "role": role, "accuracy": rng.uniform(0.6, 0.99),
            "val_accuracy": rng.uniform(0.6, 0.99), "mflops": mflops,
            "adaptive_mflops": mflops * rng.uniform(0.5, 1), "params": rng.randint(10**4, 10**6),
            "energy": rng.uniform(0.5, 1.0), "seconds": rng.uniform(10, 900),
        })  # fmt: skip
    return out


def _search(rng: random.Random) -> dict[str, Any]:
    ops = ["sep_conv_3x3", "dil_conv_3x3", "skip_connect", "max_pool_3x3"]
    cell = [[rng.choice(ops), rng.randint(0, i + 1)] for i in range(8)]
    return {
        "network": "S1", "strategy": "darts",
        "genotype": {"normal": cell, "normal_concat": [2, 3, 4, 5], "reduce": cell,
                     "reduce_concat": [2, 3, 4, 5]},
        "channels": 6, "layers": 5, "mflops": rng.uniform(5, 20), "budget_mflops": 20.0,
        "repair": {"operations_changed": 1, "channels_changed": 0, "mflops_before": 24.0,
                   "mflops_after": 19.0},
        "directory": "/srv/reskd/searches/S1",
    }  # fmt: skip


def _result(rng: random.Random, kind: str) -> dict[str, Any]:
    rows = _rows(rng)
    s1 = rows[2]
    result: dict[str, Any] = {
        "rows": rows,
        "teacher": {"arch": "resnet20", "kind": "trained", "digest": f"{rng.getrandbits(48):012x}",
                    "id": "resnet20@" + f"{rng.getrandbits(48):012x}",
                    "val_accuracy": rows[0]["val_accuracy"]},
        "deploy": {"stage": 1, "model": "S1", "threshold": 0.7,
                   "val_accuracy": s1["val_accuracy"], "accuracy": s1["accuracy"],
                   "adaptive_mflops": s1["adaptive_mflops"]},
        "warnings": ["S2 lowered D_v accuracy"] if rng.random() < 0.2 else [],
        "stop_reason": "max_stages reached",
    }  # fmt: skip
    if kind == "search":
        result["search"] = _search(rng)
    return result


def _job(rng: random.Random, i: int, n: int, configs: dict[str, Any], now: float) -> dict:
    """Job ``i`` of ``n`` (oldest first): ended, then the newest running, then queued."""
    kind, dataset = _weighted(rng, KINDS), rng.choice(DATASETS)
    age = (n - i) * 60.0  # a job a minute
    state = ("queued" if i >= n - QUEUED else "running" if i >= n - QUEUED - RUNNING
             else _weighted(rng, ENDED))  # fmt: skip
    created = datetime.fromtimestamp(now - age, UTC)
    started = None if state == "queued" else created + timedelta(seconds=5)
    ended = state not in ("queued", "running")
    seconds = rng.uniform(60, 3600) if ended else 0.0
    return {
        "kind": kind, "name": f"{kind} {dataset} #{i}" if rng.random() < 0.5 else None,
        "state": state, "config": configs[dataset], "dataset": dataset,
        "error": "RuntimeError: CUDA out of memory" if state == "failed" else None,
        "result": _result(rng, kind) if state == "succeeded" else None,
        "worker": "worker-1" if state == "running" else None,
        "lease_until": now + 600 if state == "running" else None,
        "attempts": 0 if state == "queued" else 1, "worker_deaths": 0,
        "cancel_requested": False, "created_at": created, "started_at": started,
        "finished_at": started + timedelta(seconds=seconds) if ended and started else None,
        "owner": OWNERS[i % len(OWNERS)] if i % 10 else None,
        "priority": rng.choice((0, 0, 0, 5, -5)), "device_seconds": seconds,
        "ran_from": now - 300 if state == "running" else None,
        "settled_at": now - age + seconds if ended else None,
    }  # fmt: skip


def _stages(rng: random.Random, job: dict[str, Any], job_id: int) -> list[dict[str, Any]]:
    running = job["state"] == "running"
    out = []
    for position, (kind, name) in enumerate(STAGES):
        last = position == len(STAGES) - 1
        state = "running" if running and last else job["state"] if last else "succeeded"
        progress = {
            "phase": "train", "epoch": EPOCHS, "epochs": EPOCHS, "batch": 40, "batches": 40,
            "loss": rng.uniform(0.1, 2), "accuracy": rng.uniform(0.6, 0.99),
            "eta_seconds": rng.uniform(0, 300), "rate": rng.uniform(5, 50), "unit": "batch",
        }  # fmt: skip
        out.append({
            "job_id": job_id, "position": position, "kind": kind,
            "key": f"{rng.getrandbits(64):016x}", "name": name, "state": state,
            "reused": position == 0 and rng.random() < 0.5, "resumed_from_epoch": 0,
            "progress": progress, "started_at": job["started_at"],
            "finished_at": None if state == "running" else job["finished_at"],
            "error": job["error"] if last else None,
        })  # fmt: skip
    return out


def _epochs(rng: random.Random, stage: dict[str, Any], stage_id: int) -> list[dict[str, Any]]:
    return [
        {
            "job_id": stage["job_id"],
            "stage_id": stage_id,
            "epoch": e,
            "loss": 2.0 / e,
            "train_accuracy": rng.uniform(0.5, 0.99),
            "eval_accuracy": rng.uniform(0.5, 0.99),
            "lr": 0.05 * (1 - e / (EPOCHS + 1)),
            "seconds": rng.uniform(2, 60),
            "expected_mflops": rng.uniform(5, 20) if stage["kind"] == "search" else None,
            "phase": None,
            "created_at": stage["started_at"],
        }
        for e in range(1, EPOCHS + 1)
    ]


def _artifacts(job: dict[str, Any], job_id: int) -> list[dict[str, Any]]:
    return [
        {
            "job_id": job_id,
            "name": name,
            "kind": kind,
            "path": f"jobs/{job_id}/{name}",
            "size": 4096 + 37 * job_id,
            "created_at": job["finished_at"],
        }
        for name, kind in FILES
    ]


def _insert(s: Session, table: type, rows: list[dict[str, Any]], *, ids: bool = False) -> list:
    """``rows`` inserted in chunks; with ``ids``, their new ids in order."""
    out: list[int] = []
    for first in range(0, len(rows), CHUNK):
        chunk = rows[first : first + CHUNK]
        if ids:
            statement = insert(table).returning(table.id, sort_by_parameter_order=True)  # type: ignore[attr-defined]
            out += s.scalars(statement, chunk).all()
        else:
            s.execute(insert(table), chunk)
    return out


def seed_jobs(db: Database, n: int, *, seed: int = 0) -> Seeded:
    """``n`` jobs (see the module's doc) and a sweep of ``SWEEP_TRIALS`` of them."""
    rng, now, configs = random.Random(seed), time.time(), _configs()
    jobs = [_job(rng, i, n, configs, now) for i in range(n)]
    seeded = Seeded()
    with db.session() as s:
        _insert(s, User, [{"name": o, "role": "member", "disabled": False,
                           "max_running_jobs": 1 if o == "alice" else None,
                           "max_device_hours_per_day": None} for o in OWNERS])  # fmt: skip
        seeded.jobs = _insert(s, Job, jobs, ids=True)
        ran = [(j, i) for j, i in zip(jobs, seeded.jobs, strict=True) if j["started_at"]]
        seeded.ran = [i for _, i in ran]
        stages = [st for j, i in ran for st in _stages(rng, j, i)]
        stage_ids = _insert(s, Stage, stages, ids=True)
        epochs = [e for st, i in zip(stages, stage_ids, strict=True) for e in _epochs(rng, st, i)]
        _insert(s, EpochMetric, epochs)
        ended = [(j, i) for j, i in ran if j["finished_at"]]
        _insert(s, Artifact, [a for j, i in ended for a in _artifacts(j, i)])
    seeded.sweep = _seed_sweep(db, configs["digits"], [i for _, i in ended][:SWEEP_TRIALS], rng)
    return seeded


def _seed_sweep(db: Database, base: dict[str, Any], trial_jobs: list[int], rng: Any) -> int:
    """A finished sweep whose trials are ``trial_jobs`` (ended jobs), with its Optuna study."""
    import optuna
    from sqlalchemy import update

    spec = SweepSpec.model_validate({"base": base, "space": {"t": [2.0, 6.0], "tau": [0.5, 0.95]},
                                     "trials": len(trial_jobs), "name": "budgets"})  # fmt: skip
    with db.session() as s:
        sweep_id = _insert(s, Sweep, [{
            "name": spec.name, "study_name": "reskd-sweep-pending", "state": "succeeded",
            "spec": spec.to_dict(), "dataset": base["dataset"], "trials": spec.trials,
            "owner": OWNERS[0], "priority": 0,
        }], ids=True)[0]  # fmt: skip
        s.execute(update(Sweep).where(Sweep.id == sweep_id)
                  .values(study_name=f"reskd-sweep-{sweep_id}"))  # fmt: skip
        for number, job_id in enumerate(trial_jobs):
            s.execute(update(Job).where(Job.id == job_id).values(sweep_id=sweep_id, trial=number))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=f"reskd-sweep-{sweep_id}",
        storage=study_storage(db.url),
        directions=spec.directions,
    )
    study.set_user_attr("reskd_sweep_id", sweep_id)
    study.set_user_attr("objective", OBJECTIVE)
    uniform = optuna.distributions.FloatDistribution
    distributions: dict[str, optuna.distributions.BaseDistribution] = {
        "t": uniform(2.0, 6.0),
        "tau": uniform(0.5, 0.95),
    }
    study.add_trials([
        optuna.trial.create_trial(
            params={"t": rng.uniform(2, 6), "tau": rng.uniform(0.5, 0.95)},
            distributions=distributions,
            values=[rng.uniform(0.6, 0.99), rng.uniform(1, 40)],
            user_attrs={"accuracy": rng.uniform(0.6, 0.99), "job_id": job_id},
        )
        for job_id in trial_jobs
    ])  # fmt: skip
    return sweep_id
