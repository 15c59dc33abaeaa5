"""The ``reskd`` command line. Only entry points parse arguments; the library never does."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from distill.data import DATASETS, DatasetError, dataset_info
from distill.models import build_model, complexity
from distill.report import format_table
from space.zoo import MODELS


def _model_row(name: str, dataset: str, width: float) -> dict[str, object]:
    info = dataset_info(dataset)
    model = build_model(name, info, width=width)
    c = complexity(model, info)
    return {
        "model": name,
        "dataset": dataset,
        "width": width,
        "input": "x".join(map(str, info.input_shape)),
        "num_classes": info.num_classes,
        "params": c.params,
        "mparams": round(c.mparams, 4),
        "macs": c.macs,
        "mflops": round(c.mflops, 3),
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
    rows = [_model_row(name, args.dataset, args.width) for name in MODELS]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows, ["model", "input", "num_classes", "mparams", "mflops"]))
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    del args
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
    print(format_table(rows, list(rows[0])))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from api.demo import run_demo

    run_demo(out_dir=Path(args.out), epochs=args.epochs, seed=args.seed, device=args.device)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from search.pipeline import load_config, run

    config = load_config(Path(args.config))
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    run(config, out_dir=out, progress=not args.quiet)
    print(f"\nreport, stage checkpoints and the deployable student in {out}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from search.pipeline import load_config, search

    config = load_config(Path(args.config))
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    log = (
        (lambda line: print(line, file=sys.stderr)) if args.json else print
    )  # JSON alone on stdout
    found = search(config, out_dir=out, progress=not args.quiet, log=log)
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    print(
        f"\n{found['network']} searched ({found['strategy']}): {found['mflops']:.4f} MFLOPs counted"
        f" (budget {found['budget_mflops']:g}), {found['channels']} channels, "
        f"{found['layers']} cells\ngenotype {json.dumps(found['genotype'])}\n"
        f"architecture weights plot: {found['plot']}\nstage directory: {found['directory']}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reskd",
        description="Residual-guided knowledge distillation with searched res-students",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    datasets = sorted(DATASETS)

    flops = sub.add_parser("flops", help="params and MFLOPs (multiply-accumulates) of a model")
    flops.add_argument(
        "model", choices=list(MODELS), metavar="MODEL", help=f"one of: {', '.join(MODELS)}"
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

    ds = sub.add_parser("datasets", help="the datasets known by name")
    ds.set_defaults(func=cmd_datasets)

    run = sub.add_parser("run", help="run a ResKD pipeline locally from a YAML or JSON config")
    run.add_argument("config", help="path to the run config (YAML or JSON)")
    run.add_argument("--out", help="output directory (default runs/<config name>)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
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
    search.set_defaults(func=cmd_search)

    demo = sub.add_parser("demo", help="teacher and KD student on the shipped MNIST 5k")
    demo.add_argument("--out", default="runs/demo", help="output directory")
    demo.add_argument("--epochs", type=int, default=4)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--device", default="auto")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (DatasetError, ValueError) as exc:
        print(f"reskd {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
