"""The main job (``make demo``): the service end to end on one machine.

Starts ``reskd serve`` (SQLite, one worker process by default) on 127.0.0.1, submits
two ResKD jobs over HTTP on scikit-learn's real 8x8 digits — R1 searched by STACNAS under a FLOPs
budget, and R1 handcrafted with the same budget (ResNet-8 at half width) — shows their progress,
prints each result table and the Pareto front of accuracy against MFLOPs, writes the front as a
PNG, then runs a small Optuna sweep over R1's budget (NSGA-II; each trial a job; T and S0 reused
from the first jobs, and R1 derived from the searched job's own supernet: no search again),
prints its trials and front, plots it, and stops the service. The second job reuses the first
one's teacher and S0 (a stage is computed once, under a lock: with ``workers=2`` the second job
waits for them, then trains its R1 beside the search, and sweep trials run in pairs).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from api.cli.options import Subparsers
from api.cli.tables import front_rows, metrics_text
from api.client import Client
from api.client.plots import plot_pareto, plot_sweep
from distill.report import format_table, repair_text
from space.numbers import mflops, percent

BUDGET = 0.2  # MFLOPs: ResNet-8 x0.5 on 1x8x8 costs 0.198


def demo_configs(epochs: int) -> dict[str, dict[str, Any]]:
    base: dict[str, Any] = {
        "dataset": "digits",
        "val_size": 300,
        "teacher": "resnet20",
        "student": {"model": "resnet8", "width": 0.25},
        "kd": {"method": "kd", "distance": "kl", "tau": 0.9, "t": 4.0},
        "max_stages": 1,
        "preset": "cpu-small",
        "train": {"epochs": epochs},
        "teacher_train": {"epochs": epochs + 2},
    }
    searched = {
        "search": {
            "budget_mflops": BUDGET,
            "strategy": "stacnas",
            "epochs": max(1, epochs // 2),  # the demo: 4 per stage
            "channels": "auto",  # the widest at which learnable operations fit: 4 here
            "layers": 5,
        }
    }
    return {
        "searched R1": base | {"res_students": [searched]},
        "handcrafted R1": base | {"res_students": [{"model": "resnet8", "width": 0.5}]},
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo_sweep(epochs: int, trials: int, parallel: int = 1) -> dict[str, Any]:
    """Around the searched job: R1's budget (T and S0 as in the jobs). The trials share one
    search at the largest budget (``shared_search``), the searched job's own: each trial derives
    its R1 from that job's supernet and fine-tunes it, no search again."""
    base = demo_configs(epochs)["searched R1"]
    return {
        "name": "demo: R1 budget",
        "base": base,
        "space": {"budget_mflops": [0.1, BUDGET]},
        "trials": trials,
        "parallel": parallel,
        "sampler": "nsga2",
        "seed": 0,
    }


def add_parsers(subparsers: Subparsers) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="the service end to end: ResKD jobs with a searched and a handcrafted R1 over "
        "HTTP on the shipped digits, results, Pareto front and its plot",
    )
    demo.add_argument("--out", default="runs/demo", help="output directory")
    demo.add_argument("--epochs", type=int, default=8, help="epochs per training stage")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.add_argument(
        "--sweep-trials", type=int, default=4, help="trials of the demo's Optuna sweep (0: none)"
    )
    demo.add_argument(
        "--workers",
        type=int,
        default=1,
        choices=range(1, 65),
        metavar="N",
        help="worker processes of the demo's service (default 1; 2 on 2 cores run the second "
        "job's R1 beside the search and sweep trials in pairs, about 1.5x sooner, but each "
        "worker then trains on 1 thread, so the figures differ from the README's)",
    )
    demo.add_argument(
        "--exit",
        action="store_true",
        help="stop the service at the end (default: the dashboard stays up until Ctrl-C)",
    )
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    run_demo(
        out_dir=Path(args.out),
        epochs=args.epochs,
        progress=not args.quiet,
        sweep_trials=args.sweep_trials,
        keep_serving=not args.exit,
        workers=args.workers,
    )
    return 0


def run_demo(
    *,
    out_dir: Path,
    epochs: int = 8,
    progress: bool = True,
    sweep_trials: int = 4,
    keep_serving: bool = False,
    workers: int = 1,
) -> dict[str, Any]:
    """The demo; with ``keep_serving`` the service (and its dashboard) stays up afterwards until
    Ctrl-C or SIGTERM. ``workers``: the service's worker processes. Each gets its share of the
    cores' threads, and a network's float sums (so its training, so the figures) follow its
    thread count: the default, one worker on every core, gives the figures the README quotes;
    two on 2 cores finish about 1.5x sooner with other (equally valid) figures."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if threading.current_thread() is threading.main_thread():  # SIGTERM still stops the service
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with _service(out_dir, workers) as (client, server):
        print(f"service up at {client.url} (SQLite and artifacts in {out_dir / 'service'})")
        print(
            f"dashboard: {client.url}/ (jobs live, curves, Pareto front, sweeps); API docs: "
            f"{client.url}/docs"
        )
        finished = _jobs(client, epochs, progress)
        teacher_id = next(iter(finished.values()))["teacher"]["id"]  # arch@checkpoint digest
        front, plot = _front(client, teacher_id, out_dir)
        _searched(client, finished["searched R1"], out_dir)
        result: dict[str, Any] = {"jobs": finished, "pareto": front, "plot": str(plot)}
        if sweep_trials:
            result["sweep"] = _sweep(client, epochs, sweep_trials, out_dir, progress, workers)
        if keep_serving:
            print(f"\nthe dashboard stays up at {client.url}/ : Ctrl-C stops it", flush=True)
            try:
                while server.poll() is None:
                    time.sleep(1)
            except KeyboardInterrupt:
                print("stopping the service")
        return result


@contextmanager
def _service(out_dir: Path, workers: int) -> Iterator[tuple[Client, subprocess.Popen[bytes]]]:
    """``reskd serve`` on a free port of 127.0.0.1 with its files under ``out_dir`` (its log in
    serve.log), once it answers; stopped (its whole process group) on leaving."""
    port = _free_port()
    env = dict(os.environ) | {"RESKD_ARTIFACT_ROOT": str(out_dir / "service")}
    log = (out_dir / "serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "api.cli.main", "serve", "--port", str(port),
         "--workers", str(workers)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        client = Client(f"http://127.0.0.1:{port}")
        _wait_for(client, server, out_dir)
        yield client, server
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


def _jobs(client: Client, epochs: int, progress: bool) -> dict[str, dict[str, Any]]:
    """The demo's two jobs, submitted together, followed to their end and printed; a
    RuntimeError for one that did not succeed."""
    jobs = {}
    for name, config in demo_configs(epochs).items():
        job = client.submit(config, kind="reskd", name=name)
        jobs[name] = job["id"]
        print(f"submitted job {job['id']}: ResKD on digits, {name}")
    finished = {}
    for name, job_id in jobs.items():
        job = client.wait(job_id, progress=progress)
        if job["state"] != "succeeded":
            raise RuntimeError(f"job {job_id} ({name}) {job['state']}: {job['error']}")
        finished[name] = job
        reused = [s["name"] for s in job["stages"] if s["reused"]]
        print(
            f"\njob {job_id} ({name}) succeeded"
            + (f"; reused: {', '.join(reused)}" if reused else "")
        )
        print(metrics_text(job["metrics"]))
    return finished


def _front(client: Client, teacher_id: str, out_dir: Path) -> tuple[dict[str, Any], Path]:
    """The Pareto front of the jobs' teacher, printed and plotted (pareto.png)."""
    front = client.pareto(dataset="digits", teacher=teacher_id)
    print(
        f"\nPareto front of teacher {teacher_id}, D_v accuracy against MFLOPs "
        f"({front['considered']} architectures):"
    )
    rows = front_rows(front)
    print(format_table(rows, list(rows[0])))
    everything = client.architectures(dataset="digits", limit=10000)
    teacher = next((a for a in everything if a["stage"] == "T"), None)
    plot = plot_pareto(
        front,
        [a for a in everything if a["stage"] != "T"],
        out_dir / "pareto.png",
        teacher=teacher,
    )
    print(f"\nPareto plot: {plot}")
    return front, plot


def _searched(client: Client, search: dict[str, Any], out_dir: Path) -> None:
    """The searched job's networks (genotype, MFLOPs against the budget), and its R1's genotype
    and cells plot downloaded into ``out_dir``."""
    # imported here, not before the service starts: they import torch (3 s on 2 slow cores)
    from search.cells import genotype_text
    from space.genotypes import Genotype

    totals = {m["model"]: m["mflops"] for m in search["metrics"]}
    for found in search["searches"]:
        i = found["network"].removeprefix("R")
        print(
            f"\nsearched {found['network']} ({found['channels']} channels): "
            f"{mflops(found['mflops'])} MFLOPs of its own under the "
            f"{mflops(found.get('budget_mflops') or BUDGET)} MFLOPs budget; S{i} = S0 + ... + "
            f"{found['network']} costs {mflops(totals.get(f'S{i}'))} MFLOPs in all:\n"
            f"{genotype_text(Genotype.from_dict(found['genotype']))}\n"
            f"{repair_text(found['repair'])}"
        )
    for name in ("R1-genotype.json", "R1-cells.png"):
        if any(a["name"] == name for a in search["artifacts"]):
            path = client.download(search["id"], name, out_dir / name)
            print(f"searched R1 {name.split('-')[1]} (downloaded over HTTP): {path}")


def _sweep(
    client: Client, epochs: int, trials: int, out_dir: Path, progress: bool, parallel: int
) -> dict[str, Any]:
    sweep = client.create_sweep(demo_sweep(epochs, trials, parallel))
    print(
        f"\nsweep {sweep['id']}: {trials} trials of R1's budget (NSGA-II), each derived from the "
        "searched job's supernet, "
        f"Optuna study {sweep['study_name']!r} in the service's database"
    )
    sweep = client.wait_sweep(sweep["id"], progress=progress, poll=1.0)
    if sweep["state"] != "succeeded":
        raise RuntimeError(f"sweep {sweep['id']} {sweep['state']}: {sweep['error']}")
    front = client.sweep_pareto(sweep["id"])
    on_front = {t["number"] for t in front["front"]}
    rows = [
        {
            "trial": t["number"],
            "budget (MFLOPs)": mflops(t["params"]["budget_mflops"]),
            "derived from": _derived_from(client, t["job_id"]),
            "D_v acc": percent(t.get("val_accuracy")),
            "test acc": percent(t["accuracy"]),
            "MFLOPs": mflops(t["cost"]),
            "pareto": "*" if t["number"] in on_front else "",
        }
        for t in sweep["trial_list"]
    ]
    print(format_table(rows, list(rows[0])))
    plot = plot_sweep(sweep, front, out_dir / "sweep.png")
    print(f"sweep plot: {plot}")
    return {"sweep": sweep, "pareto": front, "plot": str(plot)}


def _derived_from(client: Client, job_id: int | None) -> str:
    """The stored search a trial's R1 was derived from (its stage key), or ``-``."""
    if job_id is None:
        return "-"
    searches = client.job(job_id).get("searches") or []
    return next((s["derived_from"] for s in searches if s.get("derived_from")), "-")


def _wait_for(client: Client, server: subprocess.Popen[bytes], out_dir: Path) -> None:
    deadline = time.time() + 90
    while True:
        try:
            client.health()
            return
        except Exception:
            if server.poll() is not None or time.time() > deadline:
                raise RuntimeError(
                    f"the service did not start:\n{(out_dir / 'serve.log').read_text()}"
                ) from None
            time.sleep(0.3)
