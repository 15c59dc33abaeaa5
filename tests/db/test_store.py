"""The store (schema, queue, stage locks, results, sweeps' studies) against SQLite and a real
PostgreSQL server: every test runs on both backends (SQLite's in ``make test-fast``). Leases run
on a fake clock that the tests advance: nothing here waits for one to run out."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from typing import Any

import optuna
import pytest
from sqlalchemy import func, inspect, select

from api.http.kept import ParetoResponses
from api.http.queries import architectures as architecture_queries
from api.http.queries import jobs as job_queries
from api.http.queries import sweeps as sweep_queries
from api.runtime import sweeps
from api.runtime.lease import Busy, held
from api.runtime.queues import open_queue
from api.runtime.store import Clock, JobQueue
from db.models import Job, Sweep
from db.session import Database
from search.sweep import SweepSpec
from tests.api.service import tiny_config
from tests.waiting import FakeClock


def open_store(url: str, clock: Clock = time.time) -> tuple[Database, JobQueue]:
    db = Database(url)
    db.migrate()
    queue = open_queue(db, clock=clock)
    return db, queue


def test_schema_is_migrated_beside_optunas_tables(database_url: str) -> None:
    db, _ = open_store(database_url)
    optuna.storages.RDBStorage(database_url)  # Optuna's own tables and alembic_version
    db.migrate()  # again: nothing to do, and Optuna's version table is left alone
    tables = set(inspect(db.engine).get_table_names())
    assert {"jobs", "stages", "stage_locks", "artifacts", "architectures", "sweeps"} <= tables
    assert {"studies", "trials", "alembic_version", "reskd_alembic_version"} <= tables
    optuna.create_study(storage=database_url)  # Optuna still accepts its schema
    db.dispose()


def test_upgrading_a_database_of_the_first_schema_keeps_its_data(database_url: str) -> None:
    """A database made before sweeps (revision 0001, version in ``alembic_version``) upgrades in
    place: every job, stage, artifact and architecture is still there, still linked; each
    architecture gets the D_v accuracy (and the teacher identity) its job's result records, and
    the fronts rank on it (a row whose result has none is on no front)."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine, text

    from db.session import MIGRATIONS

    engine = create_engine(database_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:  # the first schema, as the earlier release made it
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
        connection.execute(text("ALTER TABLE reskd_alembic_version RENAME TO alembic_version"))
        result = {
            "rows": [
                {"model": "S0", "role": "stage", "accuracy": 0.95},  # no D_v accuracy: unranked
                {"model": "S1", "role": "stage", "accuracy": 0.9, "val_accuracy": 0.85},
            ],
            "teacher": {"arch": "resnet20", "id": "resnet20@0123456789ab"},
        }
        connection.execute(
            text(
                "INSERT INTO jobs (kind, state, config, dataset, result, attempts, "
                "cancel_requested, created_at) VALUES ('reskd', 'succeeded', '{}', 'digits', "
                ":result, 1, false, CURRENT_TIMESTAMP)"
            ),
            {"result": json.dumps(result)},
        )
        job_id = connection.execute(text("SELECT id FROM jobs")).scalar()
        connection.execute(
            text(
                "INSERT INTO stages (job_id, position, kind, key, name, state, reused, "
                "resumed_from_epoch, progress, started_at) VALUES (:j, 0, 'teacher', 'k', 'T', "
                "'succeeded', false, 0, '{}', CURRENT_TIMESTAMP)"
            ),
            {"j": job_id},
        )
        connection.execute(
            text(
                "INSERT INTO artifacts (job_id, name, kind, path, size, created_at) VALUES "
                "(:j, 'report.json', 'report', 'jobs/1/report.json', 3, CURRENT_TIMESTAMP)"
            ),
            {"j": job_id},
        )
        connection.execute(
            text(
                "INSERT INTO architectures (job_id, dataset, teacher, stage, arch, accuracy, "
                "mflops, adaptive_mflops, params, seed, created_at) VALUES (:j, 'digits', "
                "'resnet20', :stage, 'a', :acc, :cost, 0.8, 10, 0, CURRENT_TIMESTAMP)"
            ),
            [{"j": job_id, "stage": "S1", "acc": 0.9, "cost": 1.0},
             {"j": job_id, "stage": "S0", "acc": 0.95, "cost": 0.5}],
        )  # fmt: skip
    engine.dispose()
    db, _ = open_store(database_url)  # migrate(): moves the version table, upgrades to head
    with db.engine.connect() as c:
        # head: 0009 (the reads' indexes) on 0008 (users, owners) on 0007 (worker deaths) on
        # 0006 (D_v accuracy) on 0005 (the fronts' revision) on 0004 (stored Pareto fronts) on
        # 0003 (per-epoch metrics) on 0002 (sweeps)
        assert c.execute(text("SELECT version_num FROM reskd_alembic_version")).scalar() == "0009"
        indexes = {i["name"] for i in inspect(c).get_indexes("jobs")}
        assert {"ix_jobs_kind_id", "ix_jobs_dataset_id", "ix_jobs_usage"} <= indexes
        assert c.execute(text("SELECT worker_deaths FROM jobs")).scalar() == 0
        assert c.execute(text("SELECT revision FROM pareto_revision")).scalar() >= 0
        filled = c.execute(
            text("SELECT stage, teacher, val_accuracy FROM architectures ORDER BY id")
        ).all()
        identity = "resnet20@0123456789ab"
        assert [tuple(r) for r in filled] == [("S1", identity, 0.85), ("S0", identity, None)]
        # S1 is on its group's fronts, built by the migration; S0, more accurate on the test
        # set and cheaper, has no D_v accuracy: it is on none
        members = c.execute(text("SELECT architecture_id FROM pareto_members")).scalars().all()
        assert len(members) == 6 and set(members) == {1}  # 3 costs, with and without T
        groups = c.execute(text("SELECT teacher, rows FROM pareto_groups")).all()
        assert [tuple(g) for g in groups] == [(identity, 1)]
        assert "alembic_version" not in inspect(c).get_table_names()
        assert "epoch_metrics" in inspect(c).get_table_names()
        for table in ("stages", "artifacts", "architectures"):
            linked = c.execute(text(f"SELECT job_id FROM {table}")).scalars().all()
            assert set(linked) == {job_id}, table
        assert c.execute(text("SELECT sweep_id FROM jobs")).scalars().all() == [None]
    db.dispose()


def test_the_d_v_migration_goes_down_to_fronts_of_test_accuracy_and_up_again(
    database_url: str,
) -> None:
    """0006 down: the column goes and the fronts are those 0005 kept (on test accuracy); up
    again: D_v accuracy comes back from the jobs' results and the fronts rank on it."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    from db.session import MIGRATIONS

    db, queue = open_store(database_url)
    job = queue.submit(kind="reskd", config={}, dataset="digits", name=None)
    assert queue.claim(worker="w", lease_seconds=30) is not None
    # S0 best on D_v, S1 on the test set, at a higher cost: each front keeps only its own
    stored = [_row(0.9, 1.0) | {"stage": "S0", "accuracy": 0.5},
              _row(0.8, 2.0) | {"stage": "S1", "accuracy": 0.95}]  # fmt: skip
    queue.add_results(job_id=job, artifacts=[], architectures=stored)
    result = {"rows": [{"model": a["stage"], "role": "stage", "accuracy": a["accuracy"],
                        "val_accuracy": a["val_accuracy"]} for a in stored]}  # fmt: skip
    assert queue.finish(job_id=job, worker="w", state="succeeded", result=result)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))

    def front() -> list[str]:
        with db.engine.connect() as c:
            return list(c.execute(text(
                "SELECT a.stage FROM pareto_members m JOIN architectures a ON "
                "a.id = m.architecture_id WHERE m.cost = 'mflops' AND m.with_teacher "
                "ORDER BY a.stage"
            )).scalars())  # fmt: skip

    def migrate(to: str) -> None:
        with db.engine.begin() as connection:
            config.attributes["connection"] = connection
            (command.downgrade if to == "0005" else command.upgrade)(config, to)

    assert front() == ["S0"]
    migrate("0005")
    assert front() == ["S0", "S1"]  # on test accuracy, as 0005's code kept them
    with db.engine.connect() as c:
        assert "val_accuracy" not in {
            col["name"] for col in inspect(c).get_columns("architectures")
        }
    migrate("head")
    assert front() == ["S0"]
    db.dispose()


def test_concurrent_claims_hand_each_job_to_exactly_one_worker(database_url: str) -> None:
    db, queue = open_store(database_url)
    ids = [
        queue.submit(kind="reskd", config={"n": i}, dataset="digits", name=None) for i in range(24)
    ]
    got: dict[str, list[int]] = {}

    def worker(name: str) -> None:
        mine = got.setdefault(name, [])
        while (claim := queue.claim(worker=name, lease_seconds=30)) is not None:
            mine.append(claim.job_id)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = sorted(j for jobs in got.values() for j in jobs)
    assert claimed == ids
    db.dispose()


def test_leases_heartbeats_and_owner_only_finish(database_url: str) -> None:
    clock = FakeClock()
    db, queue = open_store(database_url, clock)
    job_id = queue.submit(kind="reskd", config={}, dataset="digits", name="x")
    claim = queue.claim(worker="a", lease_seconds=30)
    assert claim is not None and claim.job_id == job_id and claim.attempts == 1
    assert queue.claim(worker="b", lease_seconds=30) is None  # leased
    clock.advance(20)
    assert queue.heartbeat(job_id=job_id, worker="a", lease_seconds=30).owned
    clock.advance(20)  # 40 s after the claim: the heartbeat renewed the lease
    assert queue.claim(worker="b", lease_seconds=30) is None
    clock.advance(11)  # a's lease expires: it died
    again = queue.claim(worker="b", lease_seconds=30)
    assert again is not None and again.job_id == job_id and again.attempts == 2
    assert not queue.heartbeat(job_id=job_id, worker="a", lease_seconds=30).owned
    assert not queue.finish(job_id=job_id, worker="a", state="succeeded")
    assert queue.finish(job_id=job_id, worker="b", state="succeeded", result={"rows": []})
    with pytest.raises(ValueError, match="state: must be one of"):
        queue.finish(job_id=job_id, worker="b", state="done")
    db.dispose()


def test_a_job_whose_worker_dies_max_attempts_times_fails_instead_of_running_again(
    database_url: str,
) -> None:
    """Three deaths (the default max_attempts): the claim that finds the third fails the job
    with "worker died 3 times" and closes its stage; a worker that shuts down and hands its job
    back has not died (its attempt is not one of the three)."""
    clock = FakeClock()
    db, queue = open_store(database_url, clock)
    job_id = queue.submit(kind="reskd", config={}, dataset="digits", name="x")
    other = queue.submit(kind="reskd", config={}, dataset="digits", name="y")
    assert (claim := queue.claim(worker="w0", lease_seconds=30)) and claim.job_id == job_id
    queue.release(job_id=job_id, worker="w0")  # a server stopped: handed back, not dead
    for attempt in (2, 3, 4):
        claim = queue.claim(worker=f"w{attempt}", lease_seconds=30)
        assert claim is not None and claim.job_id == job_id and claim.attempts == attempt
        queue.stage_started(job_id=job_id, kind="teacher", key="k", name="teacher")
        clock.advance(31)  # its worker died (SIGKILL, out of memory): the lease runs out
    taken = queue.claim(worker="w5", lease_seconds=30)
    assert taken is not None and taken.job_id == other  # not the job whose worker died 3 times
    with db.session(readonly=True) as s:
        job = job_queries.get_job(s, job_id)
    assert job.state == "failed" and job.attempts == 4 and job.finished_at is not None
    assert job.error is not None and job.error.startswith("worker died 3 times")
    assert [st.state for st in job.stages] == ["interrupted"] * 3
    assert queue.claim(worker="w6", lease_seconds=30) is None
    db.dispose()


def test_a_dead_or_departed_attempt_leaves_no_stage_running(database_url: str) -> None:
    """Its stage rows close as ``interrupted`` when the job is claimed again (lease expired:
    SIGKILL) or handed back (the server stopped), and the live attempt's progress is shown."""
    clock = FakeClock()
    db, queue = open_store(database_url, clock)
    job_id = queue.submit(kind="reskd", config={}, dataset="digits", name="x")
    assert queue.claim(worker="a", lease_seconds=30) is not None
    first = queue.stage_started(job_id=job_id, kind="teacher", key="k", name="teacher")
    queue.stage_progress(stage_id=first, progress={"epoch": 3, "epochs": 8}, resumed_from=0)
    clock.advance(31)  # a died
    assert queue.claim(worker="b", lease_seconds=30) is not None
    second = queue.stage_started(job_id=job_id, kind="teacher", key="k", name="teacher")
    queue.stage_progress(stage_id=second, progress={"epoch": 1, "epochs": 8}, resumed_from=3)
    queue.release(job_id=job_id, worker="b")  # b's server stops: the job goes back
    assert queue.claim(worker="c", lease_seconds=30) is not None
    queue.stage_started(job_id=job_id, kind="teacher", key="k", name="teacher", state="succeeded")
    with db.session(readonly=True) as s:
        job = job_queries.get_job(s, job_id)
    assert [st.state for st in job.stages] == ["interrupted", "interrupted", "succeeded"]
    assert all(st.finished_at is not None and st.error for st in job.stages[:2])
    reused = job.stages[2]
    assert reused.finished_at is not None and reused.finished_at >= reused.started_at
    assert reused.started_at.tzinfo is not None
    assert job.progress.epoch is None  # not the dead attempt's "epoch 3/8"
    db.dispose()


def test_stage_locks_have_one_owner_until_released_or_expired(database_url: str) -> None:
    clock = FakeClock()
    db, queue = open_store(database_url, clock)
    assert queue.lock_stage(key="teacher-abc", worker="a", lease_seconds=30)
    assert not queue.lock_stage(key="teacher-abc", worker="b", lease_seconds=30)
    clock.advance(20)
    assert queue.lock_stage(key="teacher-abc", worker="a", lease_seconds=30)  # re-entrant
    clock.advance(20)  # renewed by a's second lock: still a's
    assert not queue.lock_stage(key="teacher-abc", worker="b", lease_seconds=30)
    clock.advance(11)
    assert queue.lock_stage(key="teacher-abc", worker="b", lease_seconds=30)  # a died
    queue.unlock_stage(key="teacher-abc", worker="a")  # not a's any more: no effect
    assert not queue.lock_stage(key="teacher-abc", worker="c", lease_seconds=30)
    queue.unlock_stage(key="teacher-abc", worker="b")
    assert queue.lock_stage(key="teacher-abc", worker="c", lease_seconds=30)
    db.dispose()


def test_held_waits_for_the_owner_then_takes_over_its_expired_lock(database_url: str) -> None:
    """``held`` gives up with :class:`Busy` after its wait while the owner's lease runs, takes
    the key once that lease has run out (its owner died), and lets it go on leaving the block;
    on the fake clock its polls are what moves time."""
    clock = FakeClock()
    db, queue = open_store(database_url, clock)
    assert queue.lock_stage(key="sweep-1", worker="a", lease_seconds=30)
    start, waits = clock(), []

    def b_holds(wait: float | None) -> contextlib.AbstractContextManager[None]:
        return held(
            queue, "sweep-1", owner="b", lease_seconds=30, wait=wait, poll=1.0,
            waiting=lambda: waits.append(clock()), clock=clock, sleep=clock.sleep,
        )  # fmt: skip

    with pytest.raises(Busy, match="sweep-1: busy"), b_holds(wait=5):
        raise AssertionError("b held a's key")
    assert 5 <= clock() - start <= 7 and len(waits) >= 5
    with b_holds(wait=None):  # no limit: until a's lease has run out
        assert 30 <= clock() - start <= 32
        assert not queue.lock_stage(key="sweep-1", worker="c", lease_seconds=30)
    assert queue.lock_stage(key="sweep-1", worker="c", lease_seconds=30)  # b let it go
    db.dispose()


def test_cancel_results_and_pareto_queries(database_url: str) -> None:
    db, queue = open_store(database_url)
    queued = queue.submit(kind="reskd", config={}, dataset="digits", name=None)
    assert queue.cancel(job_id=queued) == "cancelled"
    assert queue.cancel(job_id=12345) is None
    job_id = queue.submit(kind="reskd", config={}, dataset="digits", name=None)
    assert queue.claim(worker="w", lease_seconds=30) is not None
    assert queue.cancel(job_id=job_id) == "running"  # running: flagged for the worker
    assert queue.heartbeat(job_id=job_id, worker="w", lease_seconds=30).cancel
    # (D_v accuracy, test accuracy, MFLOPs): on the test set the order is nearly reversed
    points = [(0.90, 0.97, 1.0), (0.95, 0.91, 2.0), (0.93, 0.99, 3.0), (0.97, 0.90, 4.0),
              (0.80, 0.98, 0.5), (None, 0.999, 0.1)]  # fmt: skip
    queue.add_results(
        job_id=job_id,
        artifacts=[{"name": "report.json", "kind": "report", "path": "jobs/1/r.json", "size": 3}],
        architectures=[
            {
                "dataset": "digits",
                "teacher": "resnet20",
                "stage": f"S{i}",
                "arch": f"a{i}",
                "genotypes": None,
                "val_accuracy": val,
                "accuracy": acc,
                "mflops": cost,
                "adaptive_mflops": cost,
                "params": 10,
                "energy": None,
                "seed": 0,
            }
            for i, (val, acc, cost) in enumerate(points)
        ],
    )
    with db.session(readonly=True) as s:
        front = architecture_queries.pareto(
            s, dataset="digits", teacher=None, cost="mflops", include_teacher=False
        )
        shown = job_queries.get_job(s, job_id)
    # membership is D_v's (S2 is best on the test set but dominated on D_v by S1); the last
    # row, stored without a D_v accuracy, is on no front and not considered
    assert [(a.stage, a.val_accuracy, a.accuracy) for a in front.front] == [
        ("S4", 0.80, 0.98),
        ("S0", 0.90, 0.97),
        ("S1", 0.95, 0.91),
        ("S3", 0.97, 0.90),
    ]
    assert front.considered == 5 and front.ranked_on == "val_accuracy"
    assert [a.name for a in shown.artifacts] == ["report.json"]
    db.dispose()


def test_loop_reads_never_wait_for_the_shared_pool_and_survive_a_dropped_connection(
    database_url: str,
) -> None:
    """The API's event-loop reads (``Database.loop_read``: the Pareto route) have a connection of
    their own: with every connection of the shared pool held by other threads they still answer
    at once (a wait there would freeze the loop, every stream with it); and a connection the
    server dropped is replaced on the next read without an error."""
    db, queue = open_store(database_url)
    queue.submit(kind="reskd", config={}, dataset="digits", name=None)
    pool: Any = db.engine.pool
    held = [db.engine.connect() for _ in range(pool.size() + max(0, pool._max_overflow))]
    try:
        started = time.perf_counter()
        count = db.loop_read(lambda c: c.execute(select(func.count()).select_from(Job)).scalar())
        assert count == 1
        assert time.perf_counter() - started < 10  # the shared pool's timeout is 30 s
    finally:
        for connection in held:
            connection.close()
    if not db.is_sqlite:  # the server ends the loop's session (a restart, an idle timeout)
        pid = db.loop_read(lambda c: c.exec_driver_sql("SELECT pg_backend_pid()").scalar())
        with db.engine.connect() as admin:
            admin.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
            admin.commit()
        again = db.loop_read(lambda c: c.exec_driver_sql("SELECT pg_backend_pid()").scalar())
        assert again != pid
        # the fronts' revision, read through the driver's cursor, is retried the same way
        from api.runtime import fronts

        before = db.loop_read(fronts.revision)
        with db.engine.connect() as admin:
            admin.exec_driver_sql(f"SELECT pg_terminate_backend({int(again)})")
            admin.commit()
        assert db.loop_read(fronts.revision) == before
        last = db.loop_read(lambda c: c.exec_driver_sql("SELECT pg_backend_pid()").scalar())
        assert last != again
    db.dispose()


def test_stored_fronts_equal_the_fronts_of_all_rows_after_random_inserts_and_replacements(
    database_url: str,
) -> None:
    """The fronts kept with the rows (``api.runtime.fronts``) equal the fronts computed from
    every row, for every filter, cost and teacher option, after random stores and replacements
    of jobs' results (with ties on both axes)."""
    import random

    from api.runtime import fronts
    from db.models import COSTS, Architecture
    from search.pareto import pareto_front

    db, queue = open_store(database_url)
    rng = random.Random(0)
    jobs = [queue.submit(kind="reskd", config={}, dataset="digits", name=None) for _ in range(12)]
    datasets, teachers = ["digits", "mnist5k"], ["resnet20", "resnet8"]

    def rows() -> list[dict[str, Any]]:
        return [
            {
                "dataset": rng.choice(datasets), "teacher": rng.choice(teachers),
                "stage": rng.choice(["T", "S0", "S1", "S1 adaptive"]), "arch": "a",
                "genotypes": None, "accuracy": rng.random(),
                "val_accuracy": rng.choice([None, 0.5, 0.6, 0.7, 0.8, rng.random()]),
                "mflops": rng.choice([1.0, 2.0, 3.0, 10 * rng.random()]),
                "adaptive_mflops": 10 * rng.random(), "params": rng.randint(1, 5), "energy": None,
                "seed": 0,
            }
            for _ in range(rng.randint(0, 6))
        ]  # fmt: skip

    def check() -> None:
        with db.session(readonly=True) as s:
            everything = s.execute(select(Architecture)).scalars().all()
            for dataset in (None, *datasets):
                for teacher in (None, *teachers):
                    for cost in COSTS:
                        for include_teacher in (True, False):
                            chosen = [
                                (a.id, a.val_accuracy, float(getattr(a, cost))) for a in everything
                                if a.val_accuracy is not None
                                and (dataset is None or a.dataset == dataset)
                                and (teacher is None or a.teacher == teacher)
                                and (include_teacher or a.stage != "T")
                            ]  # fmt: skip
                            expected = pareto_front(
                                sorted(chosen), accuracy=lambda p: p[1], cost=lambda p: p[2]
                            )
                            got = architecture_queries.pareto(
                                s, dataset=dataset, teacher=teacher, cost=cost,
                                include_teacher=include_teacher,
                            )  # fmt: skip
                            assert [a.id for a in got.front] == [p[0] for p in expected]
                            assert got.considered == len(chosen)

    # the API's kept responses (few: evictions too) answer as the fronts do after every write
    kept = ParetoResponses(entries=3)
    keys = [(d, t, c, w) for d in (None, "digits") for t in (None, "resnet8") for c in COSTS
            for w in (True, False)]  # fmt: skip

    def check_kept() -> None:
        for key in rng.sample(keys, 6):
            _, body = db.loop_read(lambda c, key=key: kept.read(c, key, None))
            with db.session(readonly=True) as s:
                fresh = architecture_queries.pareto(
                    s, dataset=key[0], teacher=key[1], cost=key[2], include_teacher=key[3]
                )
            assert body is not None and json.loads(body) == json.loads(fresh.model_dump_json())

    for step in range(40):  # a job's results stored for the first time or replaced
        queue.add_results(job_id=rng.choice(jobs), artifacts=[], architectures=rows())
        check_kept()
        if step % 8 == 7:
            check()
    with db.session() as s:  # a rebuild from scratch finds the same fronts
        before = s.execute(select(fronts.M)).all()
        fronts.rebuild(s)
        assert sorted(s.execute(select(fronts.M)).all()) == sorted(before)
    check()
    db.dispose()


def test_pareto_responses_are_kept_per_revision_and_revalidated_by_etag(
    database_url: str,
) -> None:
    """A repeated query with no write between is the kept response (the same bytes); every
    stored result raises the fronts' revision, so the next query reads the fronts again and the
    old ETag no longer matches; the current one (weak or not, in a list, or ``*``) does."""
    from api.runtime import fronts

    db, queue = open_store(database_url)
    job = queue.submit(kind="reskd", config={}, dataset="digits", name=None)
    kept = ParetoResponses(entries=4)
    key = ("digits", None, "mflops", False)
    start = db.loop_read(fronts.revision)
    tag, empty = db.loop_read(lambda c: kept.read(c, key, None))
    assert empty is not None and json.loads(empty)["front"] == []
    queue.add_results(job_id=job, artifacts=[], architectures=[_row(0.9, 2.0)])
    assert db.loop_read(fronts.revision) > start
    new_tag, first = db.loop_read(lambda c: kept.read(c, key, tag))  # the old tag: a new body
    assert new_tag != tag and first is not None
    assert [a["val_accuracy"] for a in json.loads(first)["front"]] == [0.9]
    _, again = db.loop_read(lambda c: kept.read(c, key, None))
    assert again is first  # kept: not read nor serialised again
    for known in (new_tag, new_tag.removeprefix("W/"), f'"x", {new_tag}', "*"):
        assert db.loop_read(lambda c, known=known: kept.read(c, key, known)) == (new_tag, None)
    queue.add_results(job_id=job, artifacts=[], architectures=[_row(0.95, 1.0)])  # replaced
    _, replaced = db.loop_read(lambda c: kept.read(c, key, new_tag))
    front = json.loads(replaced or b"{}")["front"]
    assert [a["val_accuracy"] for a in front] == [0.95]
    off = ParetoResponses(entries=0)  # keeps nothing: every query reads the fronts
    _, one = db.loop_read(lambda c: off.read(c, key, None))
    _, two = db.loop_read(lambda c: off.read(c, key, None))
    assert one == two and one is not two
    db.dispose()


def _row(val_accuracy: float, mflops: float) -> dict[str, Any]:
    return {
        "dataset": "digits", "teacher": "resnet20", "stage": "S1", "arch": "a", "genotypes": None,
        "val_accuracy": val_accuracy, "accuracy": 0.5, "mflops": mflops,
        "adaptive_mflops": mflops, "params": 1, "energy": None, "seed": 0,
    }  # fmt: skip


def fake_result(val_accuracy: float, mflops: float, accuracy: float = 0.5) -> dict[str, Any]:
    """A finished ResKD job's result rows (what the pipeline reports; the sweep reads S_n): D_v
    accuracy ``val_accuracy``, test accuracy ``accuracy``."""
    return {
        "rows": [
            {"model": "T", "role": "teacher", "accuracy": 0.99, "val_accuracy": 0.99,
             "mflops": 5.0, "adaptive_mflops": 5.0},
            {"model": "S0", "role": "stage", "accuracy": accuracy - 0.02,
             "val_accuracy": val_accuracy - 0.02, "mflops": mflops / 2},
            {"model": "S1", "role": "stage", "accuracy": accuracy, "val_accuracy": val_accuracy,
             "mflops": mflops, "adaptive_mflops": mflops},
            {"model": "S1 adaptive", "role": "adaptive", "accuracy": accuracy,
             "val_accuracy": val_accuracy, "mflops": mflops, "adaptive_mflops": 0.7 * mflops},
        ]
    }  # fmt: skip


def test_sweep_ask_tell_marks_a_failed_trial_and_goes_on(database_url: str) -> None:
    """The orchestration alone (workers simulated with the queue): trials are queued ``parallel``
    at a time, a failed trial is FAIL in the study and replaced, the sweep ends after the last
    trial, and its Pareto front is Optuna's ``best_trials``. Optuna is told each trial's D_v
    accuracy; its test accuracy, ordered the other way here, is kept beside and ranks nothing."""
    db, queue = open_store(database_url)
    base = tiny_config(
        res_students=[{"search": {"budget_mflops": 0.1, "channels": 4, "layers": 3}}]
    )
    spec = SweepSpec.from_dict(
        {
            "base": base,
            "space": {"budget_mflops": [0.06, 0.2], "t": [2, 6], "res_students": 1},
            "trials": 6,
            "parallel": 2,
            "sampler": "tpe",
        }
    )
    sweep_id = sweeps.create(db, queue, spec, owner="api")
    # (D_v accuracy, MFLOPs, test accuracy)
    # (D_v accuracy, MFLOPs, test accuracy); None: the job failed; "old": it succeeded with a
    # result that has no D_v accuracy (nothing to rank it on: a failed trial, saying why)
    outcomes = iter(
        [(0.9, 0.1, 0.99), None, (0.95, 0.2, 0.80), (0.92, 0.05, 0.85), (0.95, 0.2, 0.81), "old"]
    )
    waiting = []
    while (claim := queue.claim(worker="w", lease_seconds=30)) is not None:
        assert claim.sweep_id == sweep_id
        with db.session(readonly=True) as s:
            queued = s.scalars(
                select(Job.id).where(Job.sweep_id == sweep_id, Job.state == "queued")
            ).all()
        waiting.append(len(queued))
        outcome = next(outcomes)
        if outcome is None:
            queue.finish(job_id=claim.job_id, worker="w", state="failed", error="RuntimeError: x")
        elif outcome == "old":
            rows = fake_result(0.99, 0.01)["rows"]
            old = {"rows": [{k: v for k, v in r.items() if k != "val_accuracy"} for r in rows]}
            queue.finish(job_id=claim.job_id, worker="w", state="succeeded", result=old)
        else:
            result = fake_result(*outcome)
            queue.finish(job_id=claim.job_id, worker="w", state="succeeded", result=result)
        state = sweeps.advance(db, queue, sweep_id, owner="w")
    assert state == "succeeded"
    assert waiting == [1, 1, 1, 1, 1, 0]  # parallel 2: one running, one queued, until the last
    with db.session(readonly=True) as s:
        sweep = s.get(Sweep, sweep_id)
        assert sweep is not None and sweep.state == "succeeded"
        trials = sweep_queries.trials(s, sweep_id)
        front = sweep_queries.sweep_pareto(s, sweep_id)
    states = ["complete", "fail", "complete", "complete", "complete", "fail"]
    assert [t.state for t in trials] == states
    assert trials[1].error == "RuntimeError: x"
    assert "S1 has no val_accuracy" in (trials[5].error or "")
    assert all(t.params["res_students"] == 1 for t in trials)  # a fixed parameter
    study = optuna.load_study(study_name=f"reskd-sweep-{sweep_id}", storage=database_url)
    # Trial 3 dominates trial 0; trials 2 and 4 tie (both kept, as Optuna keeps them).
    assert {t.number for t in study.best_trials} == {t.number for t in front.front} == {2, 3, 4}
    assert [(t.val_accuracy, t.cost) for t in front.front] == [
        (0.92, 0.05),
        (0.95, 0.2),
        (0.95, 0.2),
    ]
    assert [t.accuracy for t in front.front] == [0.85, 0.80, 0.81]  # beside, not ranked on
    assert trials[0].accuracy == 0.99 and trials[0].val_accuracy == 0.9  # best on test: dominated
    assert front.ranked_on == "val_accuracy" and front.considered == 4
    assert study.metric_names == ["val_accuracy", "mflops"]
    db.dispose()


def test_cancelling_a_sweep_cancels_its_trials(database_url: str) -> None:
    db, queue = open_store(database_url)
    base = tiny_config(
        res_students=[{"search": {"budget_mflops": 0.1, "channels": 4, "layers": 3}}]
    )
    spec = SweepSpec.from_dict({"base": base, "space": {"tau": [0.5, 0.9]}, "trials": 4})
    sweep_id = sweeps.create(db, queue, spec, owner="api")
    running = queue.claim(worker="w", lease_seconds=30)
    assert running is not None
    assert sweeps.cancel(db, queue, sweep_id, owner="api") == "cancelled"
    assert queue.heartbeat(job_id=running.job_id, worker="w", lease_seconds=30).cancel
    with db.session(readonly=True) as s:
        states = s.scalars(select(Job.state).where(Job.sweep_id == sweep_id)).all()
    assert sorted(states) == ["cancelled", "running"]  # the running one stops at its next batch
    study = optuna.load_study(study_name=f"reskd-sweep-{sweep_id}", storage=database_url)
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL"]
    assert sweeps.advance(db, queue, sweep_id, owner="w") == "cancelled"
    db.dispose()
