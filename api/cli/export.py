"""Deploying a student: ``reskd export`` (ONNX, TorchScript or a torch.export program, checked
against PyTorch on real test images) and ``reskd predict`` with what it wrote."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from api.cli.options import Subparsers, add_client_options, client_of
from distill.catalog import DATASETS, dataset_info


def add_parsers(subparsers: Subparsers) -> None:
    export = subparsers.add_parser(
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
        "--dataset", choices=sorted(DATASETS), help="test images to check on (default: the run's)"
    )
    export.add_argument(
        "--root", help="local root of that dataset (CIFAR, image folders; default: the run's)"
    )
    export.add_argument(
        "--samples", type=int, default=512, help="test images the export is checked on"
    )
    add_client_options(export)
    export.set_defaults(func=cmd_export)

    predict = subparsers.add_parser(
        "predict",
        help="classify image files with an export (reskd export): each image's class and the "
        "res-students it used",
    )
    predict.add_argument("dir", metavar="DIR", help="the export's directory (manifest.json)")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="PNG, JPEG, ... files")
    predict.add_argument("--json", action="store_true", help="print JSON")
    predict.set_defaults(func=cmd_predict)


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
    client = client_of(args)
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
