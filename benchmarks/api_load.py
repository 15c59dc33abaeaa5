"""Latency of the service under load: p50 and p99 of job submission, job status and Pareto
queries, with 10,000 evaluated architectures stored, in one run.

    .venv/bin/python benchmarks/api_load.py [--architectures 10000] [--requests 300]
        [--concurrency 8] [--database-url URL]

Starts a real ``reskd serve`` (no workers) on 127.0.0.1 with a fresh SQLite database (or the URL
given), stores the architectures directly in the database (as finished jobs would), then times
requests from ``--concurrency`` client threads. Goal: Pareto p99 under 100 ms on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from db.models import Architecture
from db.session import Database
from tests.api.service import Service, tiny_config


def seed_architectures(url: str, n: int) -> None:
    db = Database(url)
    db.migrate()
    rng = random.Random(0)
    datasets, teachers = ["digits", "mnist5k", "cifar10", "cifar100"], ["resnet20", "resnet110"]
    with db.session() as s:
        s.add_all(
            Architecture(
                dataset=datasets[i % len(datasets)],
                teacher=teachers[i % len(teachers)],
                stage=rng.choice(["S0", "S1", "S1 adaptive", "S2"]),
                arch=f"resnet20-nas[C{rng.choice([4, 6, 8])}L5]",
                accuracy=rng.uniform(0.6, 0.99),
                mflops=rng.uniform(1, 300),
                adaptive_mflops=rng.uniform(1, 300),
                params=rng.randint(10_000, 2_000_000),
                energy=rng.uniform(0.5, 1.0),
                seed=i % 3,
            )
            for i in range(n)
        )
    db.dispose()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed(url: str, calls: list[tuple[str, str, dict]], concurrency: int) -> list[float]:
    def one(call: tuple[str, str, dict]) -> float:
        method, path, kwargs = call
        with httpx.Client(base_url=url, timeout=60) as http:
            started = time.perf_counter()
            r = http.request(method, path, **kwargs)
            elapsed = time.perf_counter() - started
        assert r.status_code < 300, (path, r.status_code, r.text)
        return 1000 * elapsed

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, calls))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--architectures", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=300, help="per kind of request")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="reskd-api-load-"))
    url = args.database_url or f"sqlite:///{root / 'reskd.db'}"
    seed_architectures(url, args.architectures)
    service = Service(root, workers=0, database_url=url)
    try:
        submits = [("POST", "/v1/jobs", {"json": {"kind": "reskd", "config": tiny_config()}})]
        status = [("GET", "/v1/jobs/1", {})]
        pareto = [("GET", "/v1/pareto", {"params": {"dataset": "cifar10", "teacher": "resnet110"}})]
        results = {}
        for name, call in (("submit", submits), ("job status", status), ("pareto", pareto)):
            timed(service.url, call * 10, args.concurrency)  # warm up
            results[name] = timed(service.url, call * args.requests, args.concurrency)
        front = httpx.get(f"{service.url}/v1/pareto", params={"dataset": "cifar10"}).json()
    finally:
        service.stop()
    print(
        f"{args.architectures} architectures stored; {args.requests} requests per kind from "
        f"{args.concurrency} threads; {url.split(':', 1)[0]}"
    )
    print(f"Pareto (cifar10): {front['considered']} considered, {len(front['front'])} on the front")
    for name, ms in results.items():
        print(
            f"{name:>10}: p50 {statistics.median(ms):7.1f} ms   p99 {percentile(ms, 0.99):7.1f} ms"
        )
    p99 = percentile(results["pareto"], 0.99)
    print(f"goal: Pareto p99 < 100 ms -> {'met' if p99 < 100 else 'NOT met'} ({p99:.1f} ms)")


if __name__ == "__main__":
    main()
