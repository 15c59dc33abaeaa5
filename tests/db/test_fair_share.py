"""Who runs next, on SQLite and PostgreSQL: the claim order (priority, then each user's recent
device time, then age), the quotas (running jobs, device-hours in 24 h, disabled users), the device
time a job's attempts add up to, and the reason a queued job gives for waiting. Time is a fake
clock that the tests advance: a job "runs an hour" in no time."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from api.cli.tables import print_job
from api.http.main import create_app
from api.http.queries import jobs as job_queries
from api.runtime.fairshare import UNLIMITED, Ledger, Policy
from api.runtime.queues import open_queue
from api.runtime.settings import Settings
from api.runtime.store import JobQueue
from db.models import Job, User
from db.session import Database
from tests.waiting import FakeClock

HOUR = 3600.0
LEASE = 100 * HOUR  # outlasts every test's clock; the tests where a worker dies lease less


def open_store(url: str, clock: FakeClock, policy: Policy = UNLIMITED) -> tuple[Database, JobQueue]:
    db = Database(url)
    db.migrate()
    return db, open_queue(db, clock=clock, policy=policy)


def add_user(db: Database, name: str, **fields: Any) -> None:
    with db.session() as s:
        s.add(User(name=name, role="member", **fields))


def submit(queue: JobQueue, owner: str | None, priority: int = 0) -> int:
    return queue.submit(
        kind="reskd", config={}, dataset="digits", name=None, owner=owner, priority=priority
    )


def used_before(db: Database, owner: str, *, hours: float, ended_ago: float, now: float) -> None:
    """A finished job of ``owner`` that ran ``hours``, its last attempt ``ended_ago`` hours ago."""
    with db.session() as s:
        s.add(
            Job(
                kind="reskd",
                config={},
                dataset="digits",
                state="succeeded",
                owner=owner,
                device_seconds=hours * HOUR,
                settled_at=now - ended_ago * HOUR,
            )
        )


def held(db: Database, job_id: int, clock: FakeClock, policy: Policy = UNLIMITED) -> str | None:
    with db.session(readonly=True) as s:
        return job_queries.get_job(s, job_id, policy=policy, now=clock()).held


def job(db: Database, job_id: int) -> Job:
    with db.session(readonly=True) as s:
        found = s.get(Job, job_id)
        assert found is not None
        return found


def run_one(queue: JobQueue, clock: FakeClock, *, hours: float = 1.0) -> int | None:
    """One worker claims a job, runs it for ``hours`` and finishes it; its id (None: no job)."""
    claim = queue.claim(worker="w", lease_seconds=LEASE)
    if claim is None:
        return None
    clock.advance(hours * HOUR)
    assert queue.finish(job_id=claim.job_id, worker="w", state="succeeded")
    return claim.job_id


def three_users_nine_jobs(db: Database, queue: JobQueue, clock: FakeClock) -> list[int]:
    """alice used 3 h of the last day, bob 1.5 h, carol none (her 10 h ended 30 h ago, outside
    the window); their nine queued jobs, ids 1 to 9 in submission order."""
    for name in ("alice", "bob", "carol"):
        add_user(db, name)
    used_before(db, "alice", hours=3, ended_ago=1, now=clock())
    used_before(db, "bob", hours=1.5, ended_ago=2, now=clock())
    used_before(db, "carol", hours=10, ended_ago=30, now=clock())
    owners = ["alice", "alice", "bob", "bob", "carol", "carol", "alice", "bob", "carol"]
    priorities = [0, 0, 0, 0, 0, 0, 5, 0, -1]
    return [submit(queue, o, p) for o, p in zip(owners, priorities, strict=True)]


def test_one_worker_takes_jobs_by_priority_then_least_recent_device_time(
    database_url: str,
) -> None:
    """Each job runs an hour, which its owner's usage then counts: job 7 first (priority 5);
    carol's two (least used, and still less than bob's 1.5 h after her first hour); bob's three;
    alice's two (4 h by then: her 3 and job 7); job 9 last (priority -1)."""
    clock = FakeClock()
    db, queue = open_store(database_url, clock)
    ids = three_users_nine_jobs(db, queue, clock)
    order = [run_one(queue, clock) for _ in ids]
    assert order == [ids[i - 1] for i in (7, 5, 6, 3, 4, 8, 1, 2, 9)]
    assert run_one(queue, clock) is None
    db.dispose()


def test_a_running_attempt_counts_in_its_owners_usage_as_it_goes(database_url: str) -> None:
    """bob (1.5 h used) goes before alice (3 h); after 2 h of his running job he has 3.5 h, so
    alice's job comes before his next one."""
    clock = FakeClock()
    db, queue = open_store(database_url, clock)
    used_before(db, "alice", hours=3, ended_ago=1, now=clock())
    used_before(db, "bob", hours=1.5, ended_ago=2, now=clock())
    b1, b2, a1 = submit(queue, "bob"), submit(queue, "bob"), submit(queue, "alice")
    assert (claim := queue.claim(worker="w", lease_seconds=LEASE)) and claim.job_id == b1
    assert held(db, a1, clock) == "priority: 1 queued job comes first"
    clock.advance(2 * HOUR)
    assert held(db, b2, clock) == "priority: 1 queued job comes first"
    assert held(db, a1, clock) is None
    assert (claim := queue.claim(worker="v", lease_seconds=LEASE)) and claim.job_id == a1
    db.dispose()


def test_held_says_how_many_queued_jobs_come_first(database_url: str) -> None:
    """Before any job runs, the queue's order is 7, 5, 6, 3, 4, 8, 1, 2, 9: each job's reason
    counts the jobs before it; the first has none. The list reads the usage once for all rows
    and agrees with the job's own page."""
    clock = FakeClock()
    db, queue = open_store(database_url, clock)
    ids = three_users_nine_jobs(db, queue, clock)
    expected = {
        ids[n - 1]: None
        if k == 0
        else f"priority: {k} queued job{'s' * (k > 1)} come{'s' * (k == 1)} first"
        for k, n in enumerate((7, 5, 6, 3, 4, 8, 1, 2, 9))
    }
    with db.session(readonly=True) as s:
        listing = job_queries.list_jobs(
            s, state=None, kind=None, dataset=None, limit=50, offset=0, now=clock()
        )
    assert {row.id: row.held for row in listing.jobs if row.state == "queued"} == expected
    assert held(db, ids[4], clock) == "priority: 1 queued job comes first"
    assert held(db, ids[8], clock) == "priority: 8 queued jobs come first"
    assert run_one(queue, clock) == ids[6]  # the one said to be next
    assert held(db, ids[6], clock) is None  # not queued any more
    db.dispose()


def test_a_reads_places_are_the_claims_order_as_usage_changes(database_url: str) -> None:
    """What a read says of the queue (``Ledger.places``, ranked from the usage it read) is the
    claim's own order (``Ledger.order``, ranked by the database), job after job, while one runs
    and after each has run."""
    clock = FakeClock()
    db, queue = open_store(database_url, clock)
    three_users_nine_jobs(db, queue, clock)

    def agree() -> int:
        with db.session(readonly=True) as s:
            ledger = Ledger(s, UNLIMITED, clock())
            order = {job_id: i for i, job_id in enumerate(s.scalars(ledger.order()))}
            assert ledger.places(s) == order
        return len(order)

    waiting = [agree()]
    while (claim := queue.claim(worker="w", lease_seconds=LEASE)) is not None:
        clock.advance(0.5 * HOUR)
        waiting.append(agree())  # the running job counts in its owner's usage as it goes
        clock.advance(0.5 * HOUR)
        assert queue.finish(job_id=claim.job_id, worker="w", state="succeeded")
    assert waiting == list(range(9, -1, -1))
    db.dispose()


def test_running_jobs_cap_and_disabled_users_hold_jobs_back(database_url: str) -> None:
    """alice may run one job (her own max_running_jobs), carol is disabled, the admin's job
    (no owner) has no quota. alice's second job runs once her first has finished, and her
    running job whose worker died does not count: it is taken over."""
    clock = FakeClock()
    db, queue = open_store(database_url, clock, Policy(max_running_jobs=5))
    add_user(db, "alice", max_running_jobs=1)
    add_user(db, "carol", disabled=True)
    a1, a2, c1, admins = (
        submit(queue, "alice"),
        submit(queue, "alice"),
        submit(queue, "carol"),
        submit(queue, None),
    )
    first = queue.claim(worker="w1", lease_seconds=60)
    assert first is not None and first.job_id == a1
    assert held(db, a2, clock) == "quota: alice runs 1 job, the limit is 1 (max_running_jobs)"
    assert held(db, c1, clock) == "user carol is disabled"
    assert held(db, admins, clock) is None
    assert (second := queue.claim(worker="w2", lease_seconds=60)) and second.job_id == admins
    assert queue.claim(worker="w3", lease_seconds=60) is None
    assert queue.finish(job_id=admins, worker="w2", state="succeeded")
    clock.advance(30)
    assert queue.finish(job_id=a1, worker="w1", state="succeeded")
    assert held(db, a2, clock) is None
    assert (third := queue.claim(worker="w3", lease_seconds=60)) and third.job_id == a2
    clock.advance(61)  # w3 died: its lease ran out
    retried = queue.claim(worker="w4", lease_seconds=60)
    assert retried is not None and retried.job_id == a2 and retried.attempts == 2
    db.dispose()


def test_concurrent_claims_never_exceed_a_running_jobs_cap(database_url: str) -> None:
    """Eight workers claim at once from alice's ten jobs (she may run two): two run, however the
    claims interleave (on PostgreSQL a claim checks her quota again with her row locked)."""
    clock = FakeClock()
    db, queue = open_store(database_url, clock)
    add_user(db, "alice", max_running_jobs=2)
    for _ in range(10):
        submit(queue, "alice")
    start = threading.Barrier(8)

    def claim(name: str) -> None:
        start.wait()
        queue.claim(worker=name, lease_seconds=LEASE)

    workers = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    while queue.claim(worker="late", lease_seconds=LEASE) is not None:  # if a claim gave way
        pass
    with db.session(readonly=True) as s:
        running = s.scalar(select(func.count(Job.id)).where(Job.state == "running"))
    assert running == 2
    db.dispose()


def test_device_hours_cap_counts_running_time_and_frees_after_a_day(database_url: str) -> None:
    """The service's default: 2 device-hours a day. bob's job that ran 2 h holds his next one
    back, running and finished, until its hours leave the 24 h window."""
    clock = FakeClock()
    policy = Policy(device_hours_per_day=2)
    db, queue = open_store(database_url, clock, policy)
    add_user(db, "bob")
    b1, b2 = submit(queue, "bob"), submit(queue, "bob")
    assert (claim := queue.claim(worker="w", lease_seconds=LEASE)) and claim.job_id == b1
    clock.advance(2 * HOUR)
    at_cap = "quota: bob used 2.0 of 2 device-hours in the last 24 h (default_device_hours_per_day)"
    assert held(db, b2, clock, policy) == at_cap
    assert queue.claim(worker="v", lease_seconds=LEASE) is None
    assert queue.finish(job_id=b1, worker="w", state="succeeded")
    assert held(db, b2, clock, policy) == at_cap
    assert queue.claim(worker="v", lease_seconds=LEASE) is None
    clock.advance(24 * HOUR + 1)
    assert held(db, b2, clock, policy) is None
    assert (claim := queue.claim(worker="v", lease_seconds=LEASE)) and claim.job_id == b2
    db.dispose()


def test_a_dead_workers_job_whose_owner_may_not_run_waits_in_the_queue(database_url: str) -> None:
    """alice is disabled while her job runs; its worker dies: the next claim hands it back to
    the queue (her death counted, its attempt ended at the lease's end, its stage closed), where
    it says why it waits, until she may run jobs again."""
    clock = FakeClock()
    db, queue = open_store(database_url, clock)
    add_user(db, "alice")
    job_id = submit(queue, "alice")
    assert queue.claim(worker="w", lease_seconds=60)
    queue.stage_started(job_id=job_id, kind="train", key="k", name="T")
    with db.session() as s:
        s.execute(update(User).where(User.name == "alice").values(disabled=True))
    clock.advance(100)
    assert queue.claim(worker="v", lease_seconds=60) is None
    back = job(db, job_id)
    assert (back.state, back.worker, back.worker_deaths) == ("queued", None, 1)
    assert (back.device_seconds, back.ran_from) == (60, None)
    assert held(db, job_id, clock) == "user alice is disabled"
    with db.session(readonly=True) as s:
        assert [st.state for st in job_queries.get_job(s, job_id).stages] == ["interrupted"]
    with db.session() as s:
        s.execute(update(User).where(User.name == "alice").values(disabled=False))
    again = queue.claim(worker="v", lease_seconds=60)
    assert again is not None and again.job_id == job_id and again.attempts == 2
    db.dispose()


def test_device_seconds_add_up_over_a_release_and_a_finish(database_url: str) -> None:
    """100 s, handed back, 50 s queued (not counted), 30 s more: 130 s, settled at the end."""
    clock = FakeClock()
    db, queue = open_store(database_url, clock)
    job_id = submit(queue, None)
    start = clock()
    assert queue.claim(worker="a", lease_seconds=LEASE)
    assert job(db, job_id).ran_from == start
    clock.advance(100)
    queue.release(job_id=job_id, worker="a")
    released = job(db, job_id)
    assert (released.device_seconds, released.settled_at, released.ran_from) == (
        100,
        start + 100,
        None,
    )
    clock.advance(50)
    assert queue.claim(worker="b", lease_seconds=LEASE)
    assert job(db, job_id).ran_from == start + 150
    clock.advance(30)
    assert queue.finish(job_id=job_id, worker="b", state="succeeded")
    done = job(db, job_id)
    assert (done.device_seconds, done.settled_at, done.ran_from) == (130, start + 180, None)
    db.dispose()


def test_a_dead_workers_attempt_ends_at_its_lease(database_url: str) -> None:
    """Worker a's lease ran out 20 s after its claim; b takes the job over 100 s in: a's attempt
    counts 20 s. A Ray retry (count_attempt) 10 s later ends b's first attempt and begins the
    next, which finishes 5 s after: 35 s in all."""
    clock = FakeClock()
    db, queue = open_store(database_url, clock)
    job_id = submit(queue, None)
    start = clock()
    assert queue.claim(worker="a", lease_seconds=20)
    clock.advance(100)
    assert queue.claim(worker="b", lease_seconds=LEASE)
    taken = job(db, job_id)
    assert (taken.device_seconds, taken.settled_at, taken.ran_from) == (20, start + 20, start + 100)
    clock.advance(10)
    queue.count_attempt(job_id=job_id, worker="b")
    assert (job(db, job_id).device_seconds, job(db, job_id).ran_from) == (30, start + 110)
    clock.advance(5)
    assert queue.finish(job_id=job_id, worker="b", state="failed", error="x")
    assert job(db, job_id).device_seconds == 35
    db.dispose()


def test_the_service_passes_its_default_quota_to_the_reads_and_reskd_show_prints_it(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """RESKD_DEFAULT_MAX_RUNNING_JOBS=1 (as a Settings field): GET /v1/jobs/{id} and the list
    say why dave's second job waits, and ``reskd show`` prints it."""
    settings = Settings(
        artifact_root=tmp_path / "service", database_url=database_url, default_max_running_jobs=1
    )
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        db = client.app.state.db  # type: ignore[attr-defined]
        queue = client.app.state.queue  # type: ignore[attr-defined]
        add_user(db, "dave")
        first, second = submit(queue, "dave"), submit(queue, "dave")
        assert (claim := queue.claim(worker="w", lease_seconds=LEASE)) and claim.job_id == first
        why = "quota: dave runs 1 job, the limit is 1 (default_max_running_jobs)"
        shown = client.get(f"/v1/jobs/{second}").json()
        assert shown["held"] == why
        rows = {j["id"]: j["held"] for j in client.get("/v1/jobs").json()["jobs"]}
        assert rows == {first: None, second: why}
    print_job(shown)
    assert f"held: {why}\n" in capsys.readouterr().out
