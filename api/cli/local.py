"""Commands that work in this process: ``reskd flops / models / datasets / run / search``."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from api.cli.options import Subparsers, add_client_options, add_set_option
from api.client import load_json_or_yaml, with_sets
from distill.catalog import DATASETS, dataset_info
from distill.report import format_table, repair_text
from space.catalog import MODEL_NAMES
from space.numbers import count, mflops


def add_parsers(subparsers: Subparsers) -> None:
    datasets = sorted(DATASETS)
    flops = subparsers.add_parser(
        "flops", help="params and MFLOPs (multiply-accumulates) of a model"
    )
    flops.add_argument(
        "model", choices=MODEL_NAMES, metavar="MODEL", help=f"one of: {', '.join(MODEL_NAMES)}"
    )
    flops.add_argument("--dataset", required=True, choices=datasets)
    flops.add_argument("--width", type=float, default=1.0, help="channel width multiplier")
    flops.add_argument("--json", action="store_true", help="print JSON")
    flops.set_defaults(func=cmd_flops)

    models = subparsers.add_parser(
        "models", help="the model zoo with params and MFLOPs on a dataset (default: on each)"
    )
    models.add_argument("--dataset", choices=datasets, help="default: every dataset's zoo")
    models.add_argument("--width", type=float, default=1.0, help="channel width multiplier")
    models.add_argument("--json", action="store_true", help="print JSON")
    models.set_defaults(func=cmd_models)

    known = subparsers.add_parser(
        "datasets",
        help="the datasets known by name; with --url, those a service can use (shipped, "
        "uploaded, under its data roots) with the dataset and root a job's config gives",
    )
    known.add_argument("--json", action="store_true", help="print JSON")
    add_client_options(
        known, url="list what the service at this URL can use (without: the local catalog)"
    )
    known.set_defaults(func=cmd_datasets)
    _add_training_parsers(subparsers)


def _add_training_parsers(subparsers: Subparsers) -> None:
    run = subparsers.add_parser(
        "run", help="run a ResKD pipeline locally from a YAML or JSON config"
    )
    run.add_argument("config", help="path to the run config (YAML or JSON)")
    run.add_argument("--out", help="output directory (default runs/<config name>)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    add_set_option(run)
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

    search = subparsers.add_parser(
        "search",
        help="run the first searched network of a ResKD config (teacher and earlier stages "
        "are trained or reused first); prints the genotype, its MFLOPs and the weights plot",
    )
    search.add_argument("config", help="path to the run config (YAML or JSON)")
    search.add_argument("--out", help="output directory (default runs/<config name>)")
    search.add_argument("--quiet", action="store_true", help="no progress bars")
    search.add_argument("--json", action="store_true", help="print the result as JSON")
    search.add_argument(
        "--budgets",
        type=float,
        nargs="+",
        metavar="MFLOPS",
        help="derive a network at each of these budgets from one supernet, searched at the "
        "largest (the search's supernet_budget_mflops): one search, a network per budget",
    )
    add_set_option(search)
    search.set_defaults(func=cmd_search)


def _counts_cache() -> Path:
    """Counted params and MFLOPs, kept per version of the zoo's code (thop profiles a model in
    seconds; ``reskd models`` counts twelve)."""
    import space

    sources = sorted(Path(space.__file__).parent.glob("*.py"))
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:16]
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "reskd"
    return root / f"counts-{digest}.json"


def _counted() -> dict[str, dict[str, int]]:
    """The cache's counts by ``name|dataset|width``; none where there is no cache."""
    try:
        known = json.loads(_counts_cache().read_text())
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def _count_key(name: str, dataset: str, width: float) -> str:
    return f"{name}|{dataset}|{width!r}"


def _counts(name: str, dataset: str, width: float) -> dict[str, int]:
    """``params`` and ``macs`` of the zoo's ``name`` at ``width`` on ``dataset``, from the
    cache where counted before (written under a temporary name and renamed)."""
    cache = _counts_cache()
    key = _count_key(name, dataset, width)
    known = _counted()
    if key not in known:
        from distill.models import build_model, complexity

        info = dataset_info(dataset)
        c = complexity(build_model(name, info, width=width), info)
        known[key] = {"params": c.params, "macs": c.macs}
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(known))
            tmp.replace(cache)
        except OSError:
            pass  # a read-only home: count again next time
    return dict(known[key])


def _model_row(name: str, dataset: str, width: float) -> dict[str, Any]:
    info = dataset_info(dataset)
    counted = _counts(name, dataset, width)
    params, macs = counted["params"], counted["macs"]
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
            f"{row['num_classes']} classes: {count(row['params'])} params, "
            f"{mflops(row['macs'] / 1e6)} MFLOPs (MACs)"
        )
    return 0


def _zoo(dataset: str, width: float) -> list[dict[str, Any]]:
    """A row per model of the zoo on ``dataset``; a line on stderr first when some are not
    counted yet (thop takes seconds a model)."""
    known = _counted()
    new = [n for n in MODEL_NAMES if _count_key(n, dataset, width) not in known]
    if new:
        print(f"counting FLOPs of {len(new)} models on {dataset} ...", file=sys.stderr, flush=True)
    return [_model_row(name, dataset, width) for name in MODEL_NAMES]


def cmd_models(args: argparse.Namespace) -> int:
    datasets = [args.dataset] if args.dataset else list(DATASETS)
    zoos = {d: _zoo(d, args.width) for d in datasets}
    if args.json:
        print(json.dumps([row for rows in zoos.values() for row in rows], indent=2))
        return 0
    tables = []
    for dataset, rows in zoos.items():
        shown = [
            {"model": r["model"], "params": count(r["params"]), "MFLOPs": mflops(r["macs"] / 1e6)}
            for r in rows
        ]
        tables.append(
            f"{dataset} ({rows[0]['input']}, {rows[0]['num_classes']} classes):\n"
            + format_table(shown, list(shown[0]))
        )
    print("\n\n".join(tables))
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    if args.url:
        from api.cli.remote import service_datasets

        return service_datasets(args)
    rows = [
        {
            "dataset": i.name,
            "classes": i.num_classes,
            "input": "x".join(map(str, i.input_shape)),
            "needs root": "yes" if i.needs_root else "no (shipped)",
            "description": i.description,
        }
        for i in (d.info for d in DATASETS.values())
    ]
    print(json.dumps(rows, indent=2) if args.json else format_table(rows, list(rows[0])))
    return 0


def _run_config(args: argparse.Namespace) -> Any:
    from search.config import RunConfig

    return RunConfig.from_dict(with_sets(load_json_or_yaml(Path(args.config)), args.set))


def _out_dir(args: argparse.Namespace) -> Path:
    return Path(args.out) if args.out else Path("runs") / Path(args.config).stem


def cmd_run(args: argparse.Namespace) -> int:
    from search.pipeline import run

    config = _run_config(args)
    if args.dry_run:
        from search.dryrun import dry_run

        dry_run(config, timing_batch=args.timing_batch)
        return 0
    out = _out_dir(args)
    run(config, out_dir=out, progress=not args.quiet)
    print(f"\nreport, stage checkpoints and the deployable student in {out}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from search.pipeline import search

    config = _run_config(args)
    log = (
        (lambda line: print(line, file=sys.stderr)) if args.json else print
    )  # JSON alone on stdout
    configs = [config] if not args.budgets else [_at_budget(config, b, args) for b in args.budgets]
    founds = [search(c, out_dir=_out_dir(args), progress=not args.quiet, log=log) for c in configs]
    if args.json:
        print(json.dumps(founds[0] if not args.budgets else founds, indent=2))
        return 0
    for found in founds:
        _print_found(found)
    return 0


def _at_budget(config: Any, budget: float, args: argparse.Namespace) -> Any:
    """``config`` with its first searched network at ``budget``, sharing the supernet searched
    at the largest of ``--budgets``."""
    from search.config import RunConfig

    raw = config.to_dict()
    nets = [raw["student"], *raw.get("res_students", [])]
    searched = next((n for n in nets if isinstance(n, dict) and n.get("search")), None)
    if searched is None:
        raise ValueError("--budgets: the config searches no network")
    if budget <= 0:
        raise ValueError(f"--budgets: each budget must be > 0 MFLOPs, got {budget:g}")
    searched["search"] |= {"budget_mflops": budget, "supernet_budget_mflops": max(args.budgets)}
    return RunConfig.from_dict(raw)


def _print_found(found: dict[str, Any]) -> None:
    from search.cells import genotype_text
    from space.genotypes import Genotype

    derived = f" (derived from {found['derived_from']})" if found.get("derived_from") else ""
    print(
        f"\n{found['network']} searched ({found['strategy']}): {mflops(found['mflops'])} MFLOPs "
        f"counted (budget {mflops(found['budget_mflops'])}), {found['channels']} channels, "
        f"{found['layers']} cells\n{genotype_text(Genotype.from_dict(found['genotype']))}\n"
        f"{repair_text(found['repair'])}\ngenotype {json.dumps(found['genotype'])}\n"
        f"cells: {found['cells']}\narchitecture weights plot: {found['plot']}\n"
        f"stage directory: {found['directory']}{derived}"
    )
