"""Commands that talk to a service over HTTP: ``reskd submit / jobs / show / cancel / pareto /
sweep`` and ``reskd datasets --url``. They import neither torch nor the service."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

from api.cli.options import Subparsers, add_client_options, add_set_option, client_of
from api.cli.tables import (
    print_front,
    print_job,
    print_jobs,
    print_service_datasets,
    print_sweep,
    print_sweeps,
)
from api.client import TERMINAL, Client, load_json_or_yaml, with_sets
from api.runtime.kinds import JobKind, JobState
from distill.catalog import DATASETS


def add_parsers(subparsers: Subparsers) -> None:
    _add_job_parsers(subparsers)
    pareto = subparsers.add_parser(
        "pareto",
        help="the Pareto front of D_v accuracy against MFLOPs (test accuracy beside it) of one "
        "dataset and teacher: the latest job's unless --dataset or --teacher say",
    )
    pareto.add_argument("--dataset", choices=sorted(DATASETS), help="default: the latest job's")
    pareto.add_argument(
        "--teacher",
        help="a teacher identity (arch@digest) or architecture; default: the latest job's on "
        "the dataset (the others are listed)",
    )
    pareto.add_argument("--cost", default="mflops", choices=["mflops", "adaptive_mflops", "params"])
    pareto.add_argument(
        "--include-teacher", action="store_true", help="the teacher too, for reference"
    )
    pareto.add_argument("--json", action="store_true")
    pareto.add_argument("--plot", help="write a PNG of the front")
    add_client_options(pareto)
    pareto.set_defaults(func=cmd_pareto)

    sweep = subparsers.add_parser(
        "sweep",
        help="an Optuna sweep over budgets and KD settings on the service (trials are jobs); "
        "without a config or --id, the list of sweeps",
    )
    sweep.add_argument("config", nargs="?", help="sweep config (YAML or JSON): base, space, ...")
    sweep.add_argument("--id", type=int, help="show (or --wait for, or --cancel) a sweep")
    sweep.add_argument("--cancel", action="store_true", help="cancel the sweep --id")
    sweep.add_argument("--limit", type=int, default=50, help="sweeps listed (no config, no --id)")
    sweep.add_argument("--wait", action="store_true", help="wait, with a progress bar")
    sweep.add_argument("--quiet", action="store_true", help="no progress bar while waiting")
    sweep.add_argument("--json", action="store_true", help="print the sweep and front as JSON")
    sweep.add_argument("--plot", help="write a PNG of the trials and their Pareto front")
    add_set_option(sweep)
    add_client_options(sweep)
    sweep.set_defaults(func=cmd_sweep)


def _add_job_parsers(subparsers: Subparsers) -> None:
    submit = subparsers.add_parser("submit", help="submit a job to the service")
    submit.add_argument("config", help="run config (YAML or JSON)")
    submit.add_argument("--kind", default="reskd", choices=get_args(JobKind))
    submit.add_argument("--name", help="a name for the job")
    submit.add_argument(
        "--priority",
        type=int,
        default=0,
        help="-100 to 100 (default 0): claims take higher priorities first, then the owner with "
        "the least device time over the last day",
    )
    submit.add_argument("--wait", action="store_true", help="wait, with progress bars")
    submit.add_argument("--quiet", action="store_true", help="no progress bars while waiting")
    add_set_option(submit)
    add_client_options(submit)
    submit.set_defaults(func=cmd_submit)
    jobs = subparsers.add_parser("jobs", help="list jobs")
    jobs.add_argument("--state", choices=get_args(JobState))
    jobs.add_argument("--kind", choices=get_args(JobKind))
    jobs.add_argument("--owner", help="only this user's jobs")
    jobs.add_argument("--limit", type=int, default=50)
    jobs.add_argument("--json", action="store_true", help="print JSON")
    add_client_options(jobs)
    jobs.set_defaults(func=cmd_jobs)
    show = subparsers.add_parser("show", help="one job: stages, progress, metrics, artifacts")
    show.add_argument("id", type=int)
    show.add_argument("--json", action="store_true")
    add_client_options(show)
    show.set_defaults(func=cmd_show)
    cancel = subparsers.add_parser(
        "cancel", help="cancel a job (exit status 1 when it had already ended)"
    )
    cancel.add_argument("id", type=int)
    add_client_options(cancel)
    cancel.set_defaults(func=cmd_cancel)


def service_datasets(args: argparse.Namespace) -> int:
    """``reskd datasets --url URL``: what that service can use, with a job's dataset and root."""
    found = client_of(args).datasets()
    if args.json:
        print(json.dumps(found, indent=2))
    else:
        print_service_datasets(found)
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    client = client_of(args)
    config = with_sets(load_json_or_yaml(Path(args.config)), args.set)
    job = client.submit(config, kind=args.kind, name=args.name, priority=args.priority)
    print(f"job {job['id']} ({job['kind']}) {job['state']}", flush=True)
    if not args.wait:
        return 0
    job = client.wait(job["id"], progress=not args.quiet)
    print_job(job, client.url)
    return 0 if job["state"] == "succeeded" else 1


def cmd_jobs(args: argparse.Namespace) -> int:
    listing = client_of(args).jobs(
        state=args.state, kind=args.kind, owner=args.owner, limit=args.limit
    )
    if args.json:
        print(json.dumps(listing, indent=2))
    else:
        print_jobs(listing["jobs"])
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    client = client_of(args)
    job = client.job(args.id)
    print(json.dumps(job, indent=2)) if args.json else print_job(job, client.url)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel a queued job, ask a running one to stop; a job that had already ended is left as
    it was, said so on stderr, with exit status 1."""
    client = client_of(args)
    state = client.job(args.id)["state"]
    if state not in TERMINAL:
        state = client.cancel(args.id)["state"]
        if state in ("cancelled", "running"):
            print(f"job {args.id}: {state}" + (" (cancel requested)" if state == "running" else ""))
            return 0
    # ended before the cancel arrived (a cancel makes no job succeed or fail)
    print(
        f"reskd cancel: job {args.id} had already ended ({state}); nothing to cancel",
        file=sys.stderr,
    )
    return 1


def pareto_group(
    groups: Sequence[dict[str, Any]], dataset: str | None, teacher: str | None
) -> tuple[dict[str, Any], str]:
    """The one (dataset, teacher identity) ``reskd pareto`` shows, and why that one: the latest
    job's (``groups`` are newest first), within ``dataset`` and ``teacher`` where given. A
    teacher is named by its identity (``resnet20@1f2e...``) or by its architecture alone (the
    newest identity of it). A ValueError lists what there is."""
    within = [g for g in groups if dataset is None or g["dataset"] == dataset]
    if not within:
        known = ", ".join(sorted({g["dataset"] for g in groups}))
        raise ValueError(
            f"dataset: no architectures on {dataset}; datasets with results: {known or 'none'}"
        )
    if teacher is None:
        why = "the latest job's" + (f" on {dataset}" if dataset else "")
        return within[0], why
    named = [g for g in within if g["teacher"] == teacher] or [
        g for g in within if g["teacher"].split("@")[0] == teacher
    ]
    if not named:
        where = f" on {dataset}" if dataset else ""
        teachers = ", ".join(sorted({g["teacher"] for g in within}))
        raise ValueError(
            f"teacher: no architectures with teacher {teacher!r}{where}; teachers with "
            f"results: {teachers}"
        )
    return named[0], "as asked" if dataset else "the latest job's with that teacher"


def cmd_pareto(args: argparse.Namespace) -> int:
    client = client_of(args)
    groups = client.architecture_groups()
    if not groups:
        print("no architectures yet: a finished job stores its students here")
        return 0
    group, why = pareto_group(groups, args.dataset, args.teacher)
    front = client.pareto(
        dataset=group["dataset"], teacher=group["teacher"], cost=args.cost,
        include_teacher=args.include_teacher or None,
    )  # fmt: skip
    if args.json:
        print(json.dumps(front, indent=2))
    else:
        print_front(front, group, why, args.cost)
        others = [f"{g['dataset']} {g['teacher']}" for g in groups if g is not group]
        if others:
            print(f"other datasets and teachers (--dataset, --teacher): {', '.join(others)}")
    if args.plot:
        _plot_front(client, front, group, Path(args.plot))
        print(f"plot: {args.plot}")
    return 0


def _plot_front(client: Client, front: dict[str, Any], group: dict[str, Any], path: Path) -> None:
    """The front over every stored architecture of ``group``, its teacher marked."""
    from api.client.plots import plot_pareto

    everything = client.architectures(
        dataset=group["dataset"], teacher=group["teacher"], limit=10000
    )
    teachers = [a for a in everything if a["stage"] == "T"]  # one teacher: the group's
    plot_pareto(
        front,
        [a for a in everything if a["stage"] != "T"],
        path,
        teacher=teachers[-1] if teachers else None,
    )


def cmd_sweep(args: argparse.Namespace) -> int:
    client = client_of(args)
    if args.config is not None and args.id is not None:
        raise ValueError("sweep: give a sweep config (YAML or JSON) or --id, not both")
    if args.set and args.config is None:
        raise ValueError("--set: changes a sweep config; give one (YAML or JSON)")
    if args.cancel and args.id is None:
        raise ValueError("--cancel: needs --id of the sweep to cancel")
    if args.config is None and args.id is None:  # `reskd sweep`: the sweeps there are
        listing = client.sweeps(limit=args.limit)
        print(json.dumps(listing, indent=2)) if args.json else print_sweeps(listing["sweeps"])
        return 0
    if args.cancel:
        sweep = client.cancel_sweep(args.id)
        print(f"sweep {sweep['id']}: {sweep['state']}")
        return 0
    if args.config is not None:
        sweep = client.create_sweep(with_sets(load_json_or_yaml(Path(args.config)), args.set))
        print(
            f"sweep {sweep['id']}: {sweep['trials']} trials ({sweep['sampler']}), Optuna study "
            f"{sweep['study_name']!r} in the service's database",
            flush=True,
        )
    else:
        sweep = client.sweep(args.id)
    if args.wait:
        sweep = client.wait_sweep(sweep["id"], progress=not args.quiet)
    front = client.sweep_pareto(sweep["id"])
    if args.json:
        print(json.dumps({"sweep": sweep, "pareto": front}, indent=2))
    else:
        print_sweep(sweep, front)
    if args.plot:
        from api.client.plots import plot_sweep

        plot_sweep(sweep, front, Path(args.plot))
        print(f"plot: {args.plot}")
    return 0 if sweep["state"] in ("running", "succeeded") else 1
