"""Latency of the service under load: p50 and p99 of job submission, job status and Pareto
queries, with 10,000 (or ``--architectures``) evaluated architectures stored, in one run.

    python -m benchmarks.api_load [--architectures 10000] [--requests 300]
        [--concurrency 8] [--database-url URL] [--client stdlib|httpx] [--record FILE]

Starts a real ``reskd serve`` (no workers) on 127.0.0.1 with a fresh SQLite database (or the URL
given), stores the architectures directly in the database (as finished jobs would), then times
requests from ``--concurrency`` client threads. Goal: Pareto p99 at most 20 ms on 2 CPU
cores, at 10,000 and at 1,000,000 architectures, on SQLite and on PostgreSQL: the query reads the
stored fronts (``api.runtime.fronts``), not the archive.
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from api.cli.demo import demo_configs
from benchmarks.common import add_record_option, announce, write_record
from db.models import Architecture
from db.session import Database


def serve(root: Path, url: str, cached: bool = True) -> tuple[subprocess.Popen[bytes], str]:
    """A real ``reskd serve`` with no workers on 127.0.0.1; returns it and its base URL.
    ``cached=False``: without the API's kept Pareto responses (every query reads the fronts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = os.environ | {"RESKD_ARTIFACT_ROOT": str(root), "RESKD_DATABASE_URL": url}
    if not cached:
        env["RESKD_PARETO_CACHE_ENTRIES"] = "0"
    args = [sys.executable, "-m", "api.cli.main", "serve", "--port", str(port), "--workers", "0"]
    log = (root / "serve.log").open("w")
    process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{base}/v1/health", timeout=1).status_code == 200:
                return process, base
        except httpx.TransportError:
            time.sleep(0.2)
    process.terminate()
    raise RuntimeError(f"service did not start:\n{(root / 'serve.log').read_text()}")


def seed_architectures(url: str, n: int) -> float:
    """``n`` architectures stored in bulk (as finished jobs would leave them), then their Pareto
    fronts built once (``api.runtime.fronts.rebuild``); returns the seconds the fronts took."""
    from sqlalchemy import insert

    from api.runtime import fronts

    db = Database(url)
    db.migrate()
    rng = random.Random(0)
    datasets, teachers = ["digits", "mnist5k", "cifar10", "cifar100"], ["resnet20", "resnet110"]
    chunk = 50_000
    with db.session() as s:
        for first in range(0, n, chunk):
            s.execute(
                insert(Architecture),
                [
                    {
                        "dataset": rng.choice(datasets), "teacher": rng.choice(teachers),
                        "stage": rng.choice(["T", "S0", "S1", "S1 adaptive", "S2"]),
                        "arch": f"resnet20-nas[C{rng.choice([4, 6, 8])}L5]",
                        "accuracy": rng.uniform(0.6, 0.99), "mflops": rng.uniform(1, 300),
                        "adaptive_mflops": rng.uniform(1, 300),
                        "params": rng.randint(10_000, 2_000_000),
                        "energy": rng.uniform(0.5, 1.0), "seed": i % 3,
                    }
                    for i in range(first, min(n, first + chunk))
                ],
            )  # fmt: skip
    started = time.perf_counter()
    with db.session() as s:
        fronts.rebuild(s)
    seconds = time.perf_counter() - started
    if not db.is_sqlite:  # what one does after a bulk load (autovacuum would do it mid-run)
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    db.dispose()
    return seconds


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed(
    url: str, calls: list[tuple[str, str, dict]], concurrency: int, client: str = "stdlib"
) -> list[float]:
    """Milliseconds per request, from ``concurrency`` threads, each with its own keep-alive
    connection made before the clock starts (as a client that calls the service repeatedly
    holds one; a fresh client per request measured its own setup, and the CPU it took on
    these 2 cores slowed the server). ``client``: ``stdlib`` (``http.client``) or ``httpx``.
    The clients run on the service's cores, so their CPU is read as the service's latency:
    httpx took 2.2-2.8 ms of CPU a request on the 2-core AMD EPYC (more than the service's
    kept Pareto answer), ``http.client`` 0.5-0.6 ms."""
    local = threading.local()
    connections: list[Any] = []
    lock = threading.Lock()
    target = urlsplit(url)

    def connect() -> Any:
        if not hasattr(local, "conn"):
            if client == "httpx":
                local.conn = httpx.Client(base_url=url, timeout=60)
                local.conn.get("/v1/health")  # connected before anything is timed
            else:
                host = target.hostname or "127.0.0.1"
                local.conn = http.client.HTTPConnection(host, target.port, timeout=60)
                local.conn.request("GET", "/v1/health")
                local.conn.getresponse().read()
            with lock:
                connections.append(local.conn)
        return local.conn

    def one(call: tuple[str, str, dict]) -> float:
        method, path, kwargs = call
        conn = connect()
        if client == "httpx":
            started = time.perf_counter()
            r = conn.request(method, path, **kwargs)
            elapsed = time.perf_counter() - started
            status, text = r.status_code, r.text
        else:
            query = f"?{urlencode(kwargs['params'])}" if "params" in kwargs else ""
            body = json.dumps(kwargs["json"]).encode() if "json" in kwargs else None
            headers = {"Content-Type": "application/json"} if body is not None else {}
            started = time.perf_counter()
            conn.request(method, path + query, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            elapsed = time.perf_counter() - started
            status, text = response.status, data[:500].decode(errors="replace")
        assert status < 300, (path, status, text)
        return 1000 * elapsed

    with ThreadPoolExecutor(concurrency, initializer=connect) as pool:
        try:
            return list(pool.map(one, calls))
        finally:
            for conn in connections:
                conn.close()


Call = tuple[str, str, dict[str, Any]]  # method, path, httpx keyword arguments


def run(
    root: Path,
    url: str,
    kinds: tuple[tuple[str, list[Call]], ...],
    args: argparse.Namespace,
    cached: bool,
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Each kind's request latencies (ms) from a fresh service, and cifar10's front."""
    process, base = serve(root, url, cached)
    try:
        results = {}
        for name, call in kinds:
            timed(base, call * 10, args.concurrency, args.client)  # warm up
            results[name] = timed(base, call * args.requests, args.concurrency, args.client)
        front = httpx.get(f"{base}/v1/pareto", params={"dataset": "cifar10"}).json()
    finally:
        process.terminate()
        process.wait(timeout=30)
    return results, front


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--architectures", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=300, help="per kind of request")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--database-url")
    parser.add_argument(
        "--client",
        choices=("stdlib", "httpx"),
        default="stdlib",
        help="the client threads' HTTP library (its CPU counts in the latency on shared cores)",
    )
    parser.add_argument(
        "--no-uncached",
        action="store_true",
        help="skip the second service that answers every Pareto query from the fronts' rows",
    )
    add_record_option(parser)
    args = parser.parse_args()
    announce()
    root = Path(tempfile.mkdtemp(prefix="reskd-api-load-"))
    url = args.database_url or f"sqlite:///{root / 'reskd.db'}"
    started = time.perf_counter()
    built = seed_architectures(url, args.architectures)
    print(
        f"stored {args.architectures} architectures in {time.perf_counter() - started:.0f} s "
        f"(their fronts built in {built:.1f} s)",
        flush=True,
    )
    # The seeding's objects stay out of this process's collections: a full collection over them
    # paused every client thread at once (tens of ms), which read as the service's latency.
    gc.collect()
    gc.freeze()
    config = demo_configs(1)["handcrafted R1"]
    submits = [("POST", "/v1/jobs", {"json": {"kind": "reskd", "config": config}})]
    status: list[Call] = [("GET", "/v1/jobs/1", {})]
    pareto = [("GET", "/v1/pareto", {"params": {"dataset": "cifar10", "teacher": "resnet110"}})]
    across = [("GET", "/v1/pareto", {"params": {"cost": "adaptive_mflops"}})]  # every group
    kinds = (("submit", submits), ("job status", status), ("pareto", pareto),
             ("pareto all", across))  # fmt: skip
    results, front = run(root, url, kinds, args, cached=True)
    if not args.no_uncached:  # the same queries when each reads the stored fronts (after a write)
        uncached, _ = run(root, url, kinds[2:], args, cached=False)
        results |= {f"{name} (uncached)": ms for name, ms in uncached.items()}
    print(
        f"{args.architectures} architectures stored; {args.requests} requests per kind from "
        f"{args.concurrency} threads ({args.client} client); {url.split(':', 1)[0]}"
    )
    print(f"Pareto (cifar10): {front['considered']} considered, {len(front['front'])} on the front")
    for name, ms in results.items():
        print(
            f"{name:>21}: p50 {statistics.median(ms):7.1f} ms   p99 {percentile(ms, 0.99):7.1f} ms"
        )
    p99 = max(percentile(results["pareto"], 0.99), percentile(results["pareto all"], 0.99))
    print(f"goal: Pareto p99 <= 20 ms -> {'met' if p99 <= 20 else 'NOT met'} ({p99:.1f} ms)")
    if args.record:
        figures = {
            "architectures": args.architectures,
            "database": url.split(":", 1)[0],
            "ms": {
                name: {"p50": statistics.median(ms), "p99": percentile(ms, 0.99)}
                for name, ms in results.items()
            },
        }
        print(f"record: {write_record(args.record, figures)}")


if __name__ == "__main__":
    main()
