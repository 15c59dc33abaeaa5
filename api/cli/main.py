"""The ``reskd`` command line. Only entry points parse arguments; the library never does."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from api.client import ServiceError
from api.client.progress import phase_name, status_text
from api.runtime.kinds import JobKind, JobState
from distill.catalog import DATASETS, DatasetError, dataset_info
from distill.report import SUMMARY_COLUMNS, format_table, metrics_table, repair_text
from space.catalog import MODEL_NAMES


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("reskd")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _counts_cache() -> Path:
    """Counted params and MFLOPs, kept per version of the zoo's code (thop profiles a model in
    seconds; ``reskd models`` counts twelve)."""
    import space

    sources = sorted(Path(space.__file__).parent.glob("*.py"))
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:16]
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "reskd"
    return root / f"counts-{digest}.json"


def _model_row(name: str, dataset: str, width: float) -> dict[str, object]:
    info = dataset_info(dataset)
    cache = _counts_cache()
    key = f"{name}|{dataset}|{width!r}"
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if key not in known:
        from distill.models import build_model, complexity

        c = complexity(build_model(name, info, width=width), info)
        known[key] = {"params": c.params, "macs": c.macs}
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(known))
            tmp.replace(cache)
        except OSError:
            pass  # a read-only home: count again next time
    params, macs = known[key]["params"], known[key]["macs"]
    return {
        "model": name,
        "dataset": dataset,
        "width": width,
        "input": "x".join(map(str, info.input_shape)),
        "num_classes": info.num_classes,
        "params": params,
        "mparams": round(params / 1e6, 4),
        "macs": macs,
        "mflops": round(macs / 1e6, 3),
    }


def cmd_flops(args: argparse.Namespace) -> int:
    row = _model_row(args.model, args.dataset, args.width)
    if args.json:
        print(json.dumps(row, indent=2))
    else:
        print(
            f"{row['model']} (width {row['width']}) on {row['dataset']} {row['input']}, "
            f"{row['num_classes']} classes: {row['mparams']} M params, "
            f"{row['mflops']} MFLOPs (MACs)"
        )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    rows = [_model_row(name, args.dataset, args.width) for name in MODEL_NAMES]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows, ["model", "input", "num_classes", "mparams", "mflops"]))
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    if args.url:
        return _service_datasets(args)
    rows = [
        {
            "dataset": i.name,
            "classes": i.num_classes,
            "input": "x".join(map(str, i.input_shape)),
            "needs root": "yes" if i.needs_root else "no (shipped)",
            "description": i.description,
        }
        for i in DATASETS.values()
    ]
    print(json.dumps(rows, indent=2) if args.json else format_table(rows, list(rows[0])))
    return 0


def _service_datasets(args: argparse.Namespace) -> int:
    """``reskd datasets --url URL``: what that service can use, with a job's dataset and root."""
    found = _client(args).datasets()
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    rows = [
        {
            "name": d["name"],
            "kind": d["kind"],
            "dataset": d["dataset"],
            "root": d["root"] or "-",
            "classes": d["num_classes"],
            "train": d["train_images"],
            "test": d["test_images"],
            "size": _size_text(d),
            "channels": d["channels"],
            "problem": d["problem"] or "",
        }
        for d in found
    ]
    print(format_table(rows, list(rows[0])) if rows else "no datasets")
    return 0


def _size_text(d: dict[str, Any]) -> str:
    """``28x28``, or the first image's ``64x48 mixed`` where a folder's sizes differ."""
    if not d["width"]:
        return "-"
    return f"{d['width']}x{d['height']}" + (" mixed" if d["mixed_sizes"] else "")


def cmd_demo(args: argparse.Namespace) -> int:
    from api.cli.demo import run_demo

    run_demo(
        out_dir=Path(args.out),
        epochs=args.epochs,
        progress=not args.quiet,
        sweep_trials=args.sweep_trials,
        keep_serving=not args.exit,
        workers=args.workers,
    )
    return 0


def with_sets(raw: dict[str, Any], sets: Sequence[str]) -> dict[str, Any]:
    """``--set train.epochs=1`` (repeatable): a YAML value at a dotted key of the config; list
    items by index (``res_students.0.width=0.5``)."""
    import copy

    import yaml

    raw = copy.deepcopy(raw)
    for item in sets:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set: expected KEY=VALUE (e.g. train.epochs=1), got {item!r}")
        *path, last = key.split(".")
        node: Any = raw
        for i, part in enumerate(path):
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ValueError(f"--set {key}: {'.'.join(path[:i])} has no item {part}")
                node = node[int(part)]
            else:
                node = node.setdefault(part, {})
            if not isinstance(node, dict | list):
                raise ValueError(f"--set {key}: {'.'.join(path[: i + 1])} is not a mapping")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise ValueError(f"--set {key}: {'.'.join(path)} has no item {last}")
            node[int(last)] = value
        else:
            node[last] = value
    return raw


def _run_config(args: argparse.Namespace) -> Any:
    from api.client import load_json_or_yaml
    from search.config import RunConfig

    return RunConfig.from_dict(with_sets(load_json_or_yaml(Path(args.config)), args.set))


def cmd_run(args: argparse.Namespace) -> int:
    from search.pipeline import run

    config = _run_config(args)
    if args.dry_run:
        from search.dryrun import dry_run

        dry_run(config, timing_batch=args.timing_batch)
        return 0
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    run(config, out_dir=out, progress=not args.quiet)
    print(f"\nreport, stage checkpoints and the deployable student in {out}")
    return 0


STUDENT_FILES = ("combined_student.pt", "assisted_student.pt")


@dataclass
class StudentSource:
    """Where ``reskd export`` reads a student from, and what its run recorded beside it."""

    path: Path  # combined_student.pt or assisted_student.pt
    dataset: str | None  # the run's dataset (the export is checked on its test images)
    root: str | None  # the run's dataset root (CIFAR, image folders)
    preprocessing: dict[str, Any] | None  # the run's preprocessing.json, where it wrote one
    out: Path  # the output directory unless --out says otherwise


def _read_json(path: Path) -> dict[str, Any] | None:
    return dict(json.loads(path.read_text())) if path.is_file() else None


def _student_source(args: argparse.Namespace, scratch: Path) -> StudentSource:
    """The student file, from a file, a run directory or a job id (downloaded into ``scratch``
    with the job's config.json and preprocessing.json), with what its run recorded."""
    target = Path(args.source)
    if target.is_dir():
        found = [target / n for n in STUDENT_FILES if (target / n).is_file()]
        if not found:
            raise ValueError(f"JOB_OR_FILE: {target} holds no {' or '.join(STUDENT_FILES)}")
        target = found[0]
    if target.is_file():
        config = _read_json(target.parent / "config.json") or {}
        dataset = args.dataset or config.get("dataset")
        return StudentSource(
            target,
            dataset,
            config.get("root") if dataset == config.get("dataset") else None,
            _read_json(target.parent / "preprocessing.json"),
            target.parent / f"{target.stem}-{args.format}",
        )
    if not args.source.isdigit():
        raise ValueError(f"JOB_OR_FILE: {args.source!r} is no file, run directory or job id")
    client = _client(args)
    job = client.job(int(args.source))
    names = {a["name"] for a in job["artifacts"]}
    name = next((n for n in STUDENT_FILES if n in names), None)
    if name is None:
        raise ValueError(
            f"JOB_OR_FILE: job {job['id']} ({job['state']}) has no deployable student yet"
        )
    recorded = {
        n: _read_json(client.download(job["id"], n, scratch / n))
        for n in ("config.json", "preprocessing.json")
        if n in names
    }
    config = recorded.get("config.json") or {}
    dataset = args.dataset or config.get("dataset") or job.get("dataset")
    return StudentSource(
        client.download(job["id"], name, scratch / name),
        dataset,
        config.get("root") if dataset == config.get("dataset") else None,
        recorded.get("preprocessing.json"),
        Path(f"job{job['id']}-{args.format}"),
    )


def _check_root(dataset: str, source: StudentSource, given: str | None) -> str | None:
    """The local root of the dataset the export is checked on: --root, else the run's."""
    if given is not None or not dataset_info(dataset).needs_root:
        return given
    if source.root is not None and Path(source.root).expanduser().is_dir():
        return source.root
    recorded = f"the run's root {source.root} is not here" if source.root else "no root known"
    raise ValueError(
        f"--root: the export is checked on {dataset} test images, read from a local directory, "
        f"and {recorded}; give it with --root DIR, or check on another dataset of the same input "
        f"with --dataset (one of {', '.join(DATASETS)})"
    )


def _shipped(model: Any, stages: int | None, path: Path) -> tuple[Any, str | None]:
    """S_k to ship (``--stages``, else the stage best on D_v, else all) and a line saying why,
    when it holds fewer res-students than the file."""
    from distill.combined import CombinedStudent

    if not isinstance(model, CombinedStudent):
        if stages is not None:
            raise ValueError("--stages: an assisted student (S + A) has no res-students to cut")
        return model, None
    n = model.num_stages
    if stages is not None and not 0 <= stages <= n:
        raise ValueError(f"--stages: must be in 0..{n} (the res-students in {path}), got {stages}")
    k = stages if stages is not None else model.deploy_stage
    if k is None or k == n:
        return model, None
    if model.thresholds is None:
        raise ValueError(
            f"--stages: {path} holds no per-stage thresholds (written before them); only "
            f"--stages {n} can be shipped"
        )
    why = (
        "as --stages asked"
        if stages is not None
        else f"S{k} was the best on the validation set D_v (--stages {n} ships all)"
    )
    kept = "S0 alone" if k == 0 else "S0 + R1" + (f"..R{k}" if k > 1 else "")
    return model.truncated(k), f"shipping S{k} ({kept}) of the {n} res-students in the file: {why}"


def cmd_export(args: argparse.Namespace) -> int:
    import tempfile

    if args.samples < 1:
        raise ValueError(f"--samples: must be >= 1, got {args.samples}")
    with tempfile.TemporaryDirectory(prefix="reskd-export-") as scratch:
        return _export(args, Path(scratch))


def _export(args: argparse.Namespace, scratch: Path) -> int:
    from distill.adaptive_runner import check_preprocessing
    from distill.data import load_dataset
    from distill.export import dataset_preprocessing, export, load_student

    source = _student_source(args, scratch)
    dataset = source.dataset
    if dataset is None:
        raise ValueError(
            "--dataset: the export is checked on real test images; name their dataset with "
            f"--dataset (one of {', '.join(DATASETS)})"
        )
    model, note = _shipped(load_student(source.path), args.stages, source.path)
    preprocessing = getattr(model, "preprocessing", None) or source.preprocessing
    if preprocessing is not None:
        check_preprocessing(preprocessing)  # before the check images are made with it
    import torch

    # the check images as the student's preprocessing makes them (size, mean, std)
    made = {k: v for k, v in (preprocessing or {}).items() if k in ("image_size", "mean", "std")}
    root = _check_root(dataset, source, args.root)
    data = load_dataset(dataset, root=root, augment=False, **made)
    n = min(args.samples, len(data.test))  # type: ignore[arg-type]
    images = torch.stack([data.test[k][0] for k in range(n)])
    if preprocessing is None:
        preprocessing = dataset_preprocessing(data.info)
        p, names = preprocessing, preprocessing["class_names"]
        print(
            f"preprocessing: {source.path.name} carries none (written before it did); using "
            f"{dataset}'s: {p['channels']}x{p['image_size']}x{p['image_size']}, mean {p['mean']}, "
            f"std {p['std']}, classes {names[0]}..{names[-1]}"
        )
    if note:
        print(note)
    out = Path(args.out) if args.out else source.out
    manifest, agreement = export(model, out, args.format, images, preprocessing=preprocessing)
    parts = json.loads(manifest.read_text())["parts"]
    print(f"{args.format}: {', '.join(p['file'] for p in parts)} in {out}")
    print(
        f"checked on {agreement.samples} {dataset} test images: max |logit difference| "
        f"{agreement.max_abs_full:.1e} (all networks), {agreement.max_abs_adaptive:.1e} "
        f"(adaptive); res-students used: same on {agreement.used_equal} of {agreement.samples}"
        f" (mean {agreement.mean_used:.2f})"
    )
    print(f"run it: python {out / 'predict.py'} IMAGE...  (or: reskd predict {out} IMAGE...)")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from distill.adaptive_runner import ExportedStudent, report

    manifest = Path(args.dir) / "manifest.json"
    if not manifest.is_file():
        raise ValueError(f"DIR: {args.dir} holds no manifest.json (write one with reskd export)")
    student = ExportedStudent(manifest)
    predictions = student.predict([Path(p) for p in args.images])
    print(report(predictions, stages=student.stages, as_json=args.json))
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from search.pipeline import search

    config = _run_config(args)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    log = (
        (lambda line: print(line, file=sys.stderr)) if args.json else print
    )  # JSON alone on stdout
    found = search(config, out_dir=out, progress=not args.quiet, log=log)
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    from search.cells import genotype_text
    from space.genotypes import Genotype

    print(
        f"\n{found['network']} searched ({found['strategy']}): {found['mflops']:.4f} MFLOPs counted"
        f" (budget {found['budget_mflops']:g}), {found['channels']} channels, "
        f"{found['layers']} cells\n{genotype_text(Genotype.from_dict(found['genotype']))}\n"
        f"{repair_text(found['repair'])}\ngenotype {json.dumps(found['genotype'])}\n"
        f"cells: {found['cells']}\narchitecture weights plot: {found['plot']}\n"
        f"stage directory: {found['directory']}"
    )
    return 0


def _settings(args: argparse.Namespace) -> Any:
    from api.runtime.settings import Settings

    overrides = {
        k: v
        for k, v in {
            "host": getattr(args, "host", None),
            "port": getattr(args, "port", None),
            "artifact_root": args.artifact_root,
            "database_url": args.database_url,
            "token": args.token,
            "device": args.device,
            "ray_address": getattr(args, "ray_address", None),
        }.items()
        if v is not None
    }
    settings = Settings(**overrides)
    added = [_data_root(d) for d in getattr(args, "data_root", None) or []]
    return settings.model_copy(update={"data_roots": [*settings.data_roots, *added]})


def _data_root(given: str) -> Path:
    path = Path(given).expanduser().resolve()
    if not path.is_dir():
        raise ValueError(f"--data-root: {given} is not a directory")
    return path


def cmd_serve(args: argparse.Namespace) -> int:
    from api.runtime.serve import serve

    serve(_settings(args), workers=args.workers)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from api.runtime.serve import WorkerPool

    settings = _settings(args)
    from db.session import Database

    Database(settings.url).migrate()
    if settings.ray_address:  # no local workers: claimed jobs run as Ray tasks
        from api.runtime.ray_dispatch import RayDispatcher

        dispatcher = RayDispatcher(settings, capacity=args.workers)
        print(f"{dispatcher.describe()}; database {settings.url}", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: dispatcher.stop())
        try:
            dispatcher.run_forever()
        except KeyboardInterrupt:
            dispatcher.stop()
            dispatcher.shutdown()
        return 0
    pool = WorkerPool(settings, args.workers)

    def stop(*_: object) -> None:  # SIGTERM as Ctrl-C: the workers stop with the pool
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    pool.start()
    print(
        f"{len(pool.processes)} worker(s) on {settings.url}{pool.describe_allocator()}; "
        "Ctrl-C stops them",
        flush=True,
    )
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pool.stop()
    return 0


def _client(args: argparse.Namespace) -> Any:
    from api.client import Client

    return Client(args.url, args.token)


def cmd_submit(args: argparse.Namespace) -> int:
    from api.client import load_json_or_yaml

    client = _client(args)
    config = with_sets(load_json_or_yaml(Path(args.config)), args.set)
    job = client.submit(config, kind=args.kind, name=args.name)
    print(f"job {job['id']} ({job['kind']}) {job['state']}", flush=True)
    if not args.wait:
        return 0
    job = client.wait(job["id"], progress=not args.quiet)
    _print_job(job, client.url)
    return 0 if job["state"] == "succeeded" else 1


def _print_job(job: dict[str, Any], base_url: str = "") -> None:
    print(f"job {job['id']} ({job['kind']}, {job['dataset']}): {job['state']}")
    if job.get("error"):
        print(f"error: {job['error']}")
    teacher = job.get("teacher") or {}
    if teacher.get("val_accuracy") is not None:
        print(f"teacher {teacher['id']}: {100 * teacher['val_accuracy']:.2f}% on D_v")
    for warning in job.get("warnings") or []:
        print(f"warning: {warning}")
    p = job["progress"]
    if job["state"] == "running" and p.get("stage"):
        print(", ".join(x for x in (f"stage {phase_name(p)}", status_text(p)) if x))
    if job["stages"]:
        rows = [
            {
                "stage": s["name"],
                "kind": s["kind"],
                "state": s["state"] + (" (reused)" if s["reused"] else ""),
                "resumed_from": s["resumed_from_epoch"],
                "progress": status_text(s["progress"], live=False) or "-",
            }
            for s in job["stages"]
        ]
        print(format_table(rows, list(rows[0])))
    if job["metrics"]:
        print()
        print(metrics_table(job["metrics"], SUMMARY_COLUMNS))
    for found in job.get("searches") or []:
        line = f"\n{found['network']} searched: {found['mflops']:.4f} MFLOPs"
        if found.get("repair"):
            line += f"; {repair_text(found['repair'])}"
        print(line + (f"\ncells: {base_url}{found['cells']}" if found.get("cells") else ""))
    if job["artifacts"]:
        print("\nartifacts: " + ", ".join(a["name"] for a in job["artifacts"]))


def percent(fraction: float | None) -> str:
    """An accuracy as a person reads it: percent with two decimals (a fixed width, so a column
    of them lines up); "-" where there is none."""
    return "-" if fraction is None else f"{100 * fraction:6.2f}"


def cmd_jobs(args: argparse.Namespace) -> int:
    listing = _client(args).jobs(state=args.state, kind=args.kind, limit=args.limit)
    if args.json:
        print(json.dumps(listing, indent=2))
        return 0
    rows = []
    for j in listing["jobs"]:
        best = j.get("best") or {}
        rows.append(
            {k: j[k] for k in ("id", "kind", "name", "dataset", "state", "attempts", "created_at")}
            | {
                "best (on D_v)": best.get("model", "-"),
                "D_v acc %": percent(best.get("val_accuracy")) if best else "-",
                "test acc %": percent(best.get("accuracy")) if best else "-",
            }
        )
    print(format_table(rows, list(rows[0])) if rows else "no jobs")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    client = _client(args)
    job = client.job(args.id)
    print(json.dumps(job, indent=2)) if args.json else _print_job(job, client.url)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    job = _client(args).cancel(args.id)
    print(
        f"job {job['id']}: {job['state']}"
        + (" (cancel requested)" if job["state"] == "running" else "")
    )
    return 0


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
    client = _client(args)
    groups = client._call("GET", "/v1/architectures/groups")["groups"]
    if not groups:
        print("no architectures yet: a finished job stores its students here")
        return 0
    group, why = pareto_group(groups, args.dataset, args.teacher)
    dataset, teacher = group["dataset"], group["teacher"]
    front = client.pareto(
        dataset=dataset, teacher=teacher, cost=args.cost,
        include_teacher=args.include_teacher or None,
    )  # fmt: skip
    others = [f"{g['dataset']} {g['teacher']}" for g in groups if g is not group]
    if args.json:
        print(json.dumps(front, indent=2))
    else:
        print(
            f"Pareto front of {dataset}, teacher {teacher} ({why}): {len(front['front'])} of "
            f"{front['considered']} architectures, D_v accuracy against {args.cost}"
        )
        rows = [
            {
                "stage": a["stage"],
                "arch": a["arch"],
                "D_v acc %": percent(a["val_accuracy"]),
                "test acc %": percent(a["accuracy"]),
                args.cost: a[args.cost],
                "job": a["job_id"],
            }
            for a in front["front"]
        ]
        print(format_table(rows, list(rows[0])) if rows else "no architectures with a D_v accuracy")
        print(
            "ranked on D_v accuracy (drawn from the training set); test accuracy is shown "
            "beside it, never ranked on"
        )
        unranked = group["architectures"] - group["ranked"]
        if unranked:
            print(f"on no front: {unranked} stored before D_v accuracy was recorded")
        if others:
            print(f"other datasets and teachers (--dataset, --teacher): {', '.join(others)}")
    if args.plot:
        from api.client.plots import plot_pareto

        everything = client._call(
            "GET",
            "/v1/architectures",
            params={"dataset": dataset, "teacher": teacher, "limit": 10000},
        )["architectures"]
        teachers = [a for a in everything if a["stage"] == "T"]  # one teacher: the group's
        plot_pareto(
            front,
            [a for a in everything if a["stage"] != "T"],
            Path(args.plot),
            teacher=teachers[-1] if teachers else None,
        )
        print(f"plot: {args.plot}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from api.client import load_json_or_yaml
    from api.client.plots import plot_sweep

    client = _client(args)
    if args.config is not None and args.id is not None:
        raise ValueError("sweep: give a sweep config (YAML or JSON) or --id, not both")
    if args.cancel and args.id is None:
        raise ValueError("--cancel: needs --id of the sweep to cancel")
    if args.config is None and args.id is None:  # `reskd sweep`: the sweeps there are
        listing = client.sweeps(limit=args.limit)
        if args.json:
            print(json.dumps(listing, indent=2))
            return 0
        rows = [
            {k: w[k] for k in ("id", "name", "state", "dataset", "trials", "sampler", "cost")}
            | {"trial jobs": ", ".join(f"{k} {v}" for k, v in sorted(w["trial_states"].items()))}
            for w in listing["sweeps"]
        ]
        print(format_table(rows, list(rows[0])) if rows else "no sweeps")
        return 0
    if args.cancel:
        sweep = client.cancel_sweep(args.id)
        print(f"sweep {sweep['id']}: {sweep['state']}")
        return 0
    if args.config is not None:
        sweep = client.create_sweep(load_json_or_yaml(Path(args.config)))
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
        _print_sweep(sweep, front)
    if args.plot:
        plot_sweep(sweep, front, Path(args.plot))
        print(f"plot: {args.plot}")
    return 0 if sweep["state"] in ("running", "succeeded") else 1


def _print_sweep(sweep: dict[str, Any], front: dict[str, Any]) -> None:
    states = ", ".join(f"{k} {v}" for k, v in sorted(sweep["trial_states"].items()))
    print(f"sweep {sweep['id']} ({sweep['dataset']}): {sweep['state']}; trial jobs: {states}")
    if sweep.get("error"):
        print(f"error: {sweep['error']}")
    on_front = {t["number"] for t in front["front"]}
    rows = [
        {
            "trial": t["number"],
            "state": t["state"],
            "job": t["job_id"],
            **{k: round(v, 4) if isinstance(v, float) else v for k, v in t["params"].items()},
            "D_v acc %": percent(t["val_accuracy"]),
            "test acc %": percent(t["accuracy"]),
            front["cost"]: None if t["cost"] is None else round(t["cost"], 4),
            "pareto": "*" if t["number"] in on_front else "",
        }
        for t in sweep["trial_list"]
    ]
    if rows:
        print(format_table(rows, list(rows[0])))
    unranked = f" ({front['unranked']} without a D_v accuracy)" if front.get("unranked") else ""
    print(
        f"Pareto front: trials {sorted(on_front)} of {front['considered']} complete{unranked}; "
        f"D_v accuracy of S_n against {front['cost']} (test accuracy beside it, never ranked on)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reskd",
        description="Residual-guided knowledge distillation with searched res-students",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")

    def overrides(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="change a config field (YAML value, dotted key; repeatable): --set "
            "train.epochs=1 --set res_students.0.width=0.5",
        )

    sub = parser.add_subparsers(dest="command", required=True)
    datasets = sorted(DATASETS)

    flops = sub.add_parser("flops", help="params and MFLOPs (multiply-accumulates) of a model")
    flops.add_argument(
        "model", choices=MODEL_NAMES, metavar="MODEL", help=f"one of: {', '.join(MODEL_NAMES)}"
    )
    flops.add_argument("--dataset", required=True, choices=datasets)
    flops.add_argument("--width", type=float, default=1.0, help="channel width multiplier")
    flops.add_argument("--json", action="store_true", help="print JSON")
    flops.set_defaults(func=cmd_flops)

    models = sub.add_parser("models", help="the model zoo with params and MFLOPs on a dataset")
    models.add_argument("--dataset", required=True, choices=datasets)
    models.add_argument("--width", type=float, default=1.0, help="channel width multiplier")
    models.add_argument("--json", action="store_true", help="print JSON")
    models.set_defaults(func=cmd_models)

    ds = sub.add_parser(
        "datasets",
        help="the datasets known by name; with --url, those a service can use (shipped, "
        "uploaded, under its data roots) with the dataset and root a job's config gives",
    )
    ds.add_argument("--json", action="store_true", help="print JSON")
    ds.set_defaults(func=cmd_datasets)

    run = sub.add_parser("run", help="run a ResKD pipeline locally from a YAML or JSON config")
    run.add_argument("config", help="path to the run config (YAML or JSON)")
    run.add_argument("--out", help="output directory (default runs/<config name>)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    overrides(run)
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="check the config against its data, print every stage with its MFLOPs, parameters "
        "and estimated device hours (from a short timing), and train nothing",
    )
    run.add_argument(
        "--timing-batch",
        type=int,
        metavar="N",
        help="--dry-run: images per timed step (default: the config's batch on a GPU, 8 on a CPU)",
    )
    run.set_defaults(func=cmd_run)

    search = sub.add_parser(
        "search",
        help="run the first searched network of a ResKD config (teacher and earlier stages "
        "are trained or reused first); prints the genotype, its MFLOPs and the weights plot",
    )
    search.add_argument("config", help="path to the run config (YAML or JSON)")
    search.add_argument("--out", help="output directory (default runs/<config name>)")
    search.add_argument("--quiet", action="store_true", help="no progress bars")
    search.add_argument("--json", action="store_true", help="print the result as JSON")
    overrides(search)
    search.set_defaults(func=cmd_search)

    def service_options(p: argparse.ArgumentParser, *, http: bool = True) -> None:
        if http:  # workers serve no HTTP, and read only the paths the API has allowed
            p.add_argument("--host", help="bind address (default 127.0.0.1; others need a token)")
            p.add_argument("--port", type=int, help="port (default 8321)")
            p.add_argument(
                "--data-root",
                action="append",
                metavar="DIR",
                help="a directory whose files jobs over the API may read: a job's `root` and "
                "checkpoint paths may name files under it, and GET /v1/datasets lists the "
                "image folders and CIFAR roots at or directly under it (repeatable; added to "
                "RESKD_DATA_ROOTS). Uploaded datasets (POST /v1/datasets) need none",
            )
        p.add_argument("--artifact-root", help="files of jobs and stages (default runs/service)")
        p.add_argument("--database-url", help="SQLAlchemy URL (default SQLite in artifact root)")
        p.add_argument("--token", help="bearer token clients must send")
        p.add_argument("--device", help="auto, cpu or cuda")
        p.add_argument("--workers", type=int, help="workers (default one per GPU, else 1)")
        p.add_argument(
            "--ray-address", help="run jobs as tasks on this Ray cluster (host:port; .[ray])"
        )

    serve = sub.add_parser("serve", help="the HTTP API with an embedded worker pool")
    service_options(serve)
    serve.set_defaults(func=cmd_serve)
    worker = sub.add_parser("worker", help="workers alone, against the service's database")
    service_options(worker, http=False)
    worker.set_defaults(func=cmd_worker)

    def client_options(p: argparse.ArgumentParser, url: str | None = None) -> None:
        p.add_argument(
            "--url", help=url or "service URL (default $RESKD_URL or http://127.0.0.1:8321)"
        )
        p.add_argument("--token", help="bearer token (default $RESKD_TOKEN)")

    client_options(ds, url="list what the service at this URL can use (without: the local catalog)")

    submit = sub.add_parser("submit", help="submit a job to the service")
    submit.add_argument("config", help="run config (YAML or JSON)")
    submit.add_argument("--kind", default="reskd", choices=get_args(JobKind))
    submit.add_argument("--name", help="a name for the job")
    submit.add_argument("--wait", action="store_true", help="wait, with progress bars")
    submit.add_argument("--quiet", action="store_true", help="no progress bars while waiting")
    overrides(submit)
    client_options(submit)
    submit.set_defaults(func=cmd_submit)
    jobs = sub.add_parser("jobs", help="list jobs")
    jobs.add_argument("--state", choices=get_args(JobState))
    jobs.add_argument("--kind", choices=get_args(JobKind))
    jobs.add_argument("--limit", type=int, default=50)
    jobs.add_argument("--json", action="store_true", help="print JSON")
    client_options(jobs)
    jobs.set_defaults(func=cmd_jobs)
    show = sub.add_parser("show", help="one job: stages, progress, metrics, artifacts")
    show.add_argument("id", type=int)
    show.add_argument("--json", action="store_true")
    client_options(show)
    show.set_defaults(func=cmd_show)
    cancel = sub.add_parser("cancel", help="cancel a job")
    cancel.add_argument("id", type=int)
    client_options(cancel)
    cancel.set_defaults(func=cmd_cancel)
    pareto = sub.add_parser(
        "pareto",
        help="the Pareto front of D_v accuracy against MFLOPs (test accuracy beside it) of one "
        "dataset and teacher: the latest job's unless --dataset or --teacher say",
    )
    pareto.add_argument("--dataset", choices=datasets, help="default: the latest job's")
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
    client_options(pareto)
    pareto.set_defaults(func=cmd_pareto)

    sweep = sub.add_parser(
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
    client_options(sweep)
    sweep.set_defaults(func=cmd_sweep)

    export = sub.add_parser(
        "export",
        help="the deployable student (combined_student.pt with adaptive inference, or "
        "assisted_student.pt) as ONNX, TorchScript or a torch.export program, checked against "
        "PyTorch",
    )
    export.add_argument(
        "source",
        metavar="JOB_OR_FILE",
        help="a job id, a run directory, or a combined_student.pt / assisted_student.pt",
    )
    export.add_argument(
        "--format",
        default="onnx",
        choices=["onnx", "torchscript", "exported-program"],
        help="onnx (default; predict.py then needs only onnxruntime, NumPy and Pillow), "
        "torchscript or exported-program (need torch)",
    )
    export.add_argument(
        "--out", help="output directory (default: beside the file; jobN-FORMAT for a job)"
    )
    export.add_argument(
        "--stages",
        type=int,
        metavar="K",
        help="ship S_K = S0 + R1..RK (default: the stage best on the validation set D_v)",
    )
    export.add_argument(
        "--dataset", choices=datasets, help="test images to check on (default: the run's)"
    )
    export.add_argument(
        "--root", help="local root of that dataset (CIFAR, image folders; default: the run's)"
    )
    export.add_argument(
        "--samples", type=int, default=512, help="test images the export is checked on"
    )
    client_options(export)
    export.set_defaults(func=cmd_export)

    predict = sub.add_parser(
        "predict",
        help="classify image files with an export (reskd export): each image's class and the "
        "res-students it used",
    )
    predict.add_argument("dir", metavar="DIR", help="the export's directory (manifest.json)")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="PNG, JPEG, ... files")
    predict.add_argument("--json", action="store_true", help="print JSON")
    predict.set_defaults(func=cmd_predict)

    demo = sub.add_parser(
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
    return parser


# Commands that train in this process: started from a shell, they restart themselves under the
# allocator the service's workers use (``RESKD_ALLOCATOR``, default auto: tcmalloc if installed)
TRAINING_COMMANDS = ("run", "search")


def _restart_under_allocator() -> str | None:
    """Replace this process by the same command line with the allocator preloaded; returns an
    error for a ``RESKD_ALLOCATOR`` that names nothing usable, else returns only when there is
    nothing to preload (or it already is)."""
    from api.runtime.serve import with_allocator
    from api.runtime.settings import check_allocator

    try:
        choice = check_allocator(os.environ.get("RESKD_ALLOCATOR", "auto"), "RESKD_ALLOCATOR")
    except ValueError as exc:
        return str(exc)
    env = with_allocator(choice, os.environ)
    if env is not None:
        sys.stdout.flush()
        os.execve(sys.executable, sys.orig_argv, env)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if argv is None and args.command in TRAINING_COMMANDS:  # not when called in process (tests)
        error = _restart_under_allocator()
        if error:
            print(f"reskd {args.command}: error: {error}", file=sys.stderr)
            return 2
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # here, where a closed pipe is caught, not at the interpreter's exit
        return code
    except (DatasetError, ValueError, ServiceError) as exc:
        print(f"reskd {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `reskd show 3 --json | head`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a command cut off by its pipe


if __name__ == "__main__":
    raise SystemExit(main())
