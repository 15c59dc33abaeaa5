"""What the benchmarks share: the MNIST 5k ResKD setting they measure (one base run config), the
argument groups they repeat, the allocator they run under, and the record each one leaves behind
(the figures with the exact command line that reproduces them).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from api.client import with_sets
from api.runtime.serve import with_allocator
from distill.report import Report
from distill.stages import write_atomic
from search.budget import NON_ZERO, Derivation, derive_within_budget
from search.config import RunConfig
from search.pipeline import run
from search.run import shape_for
from search.spec import SearchSpec
from space.supernet import CELL_KINDS, argmax_genotype, edge_count

# Datasets read from a local root (``--root``): every stage, T and S0 included, trains on their
# papers' augmentation (pad 4, random 32 crop, flip), as a CIFAR teacher must.
ROOTED = ("cifar10", "cifar100")
SHIPPED = ("mnist5k", "digits")
DATASETS = (*SHIPPED, *ROOTED)


# --- the run configs -------------------------------------------------------------------------


def base_config(
    dataset: str,
    seed: int,
    *,
    epochs: int,
    teacher_epochs: int,
    root: str | None = None,
    device: str = "auto",
    val_size: int = 500,
) -> dict[str, Any]:
    """The setting every ResKD benchmark measures, as a run config to extend: T ResNet-20, S0
    ResNet-14x0.25 by KD (KL, tau 0.9, T 4), one res-student, the ``cpu-small`` preset; S0 and R1
    train ``epochs``, T ``teacher_epochs``. CIFAR (``ROOTED``) trains on its augmentation."""
    return {
        "dataset": dataset,
        **({"root": root} if root is not None else {}),
        "device": device,
        "augment": dataset in ROOTED,
        "val_size": val_size,
        "teacher": "resnet20",
        "student": {"model": "resnet14", "width": 0.25},
        "kd": {"method": "kd", "distance": "kl", "tau": 0.9, "t": 4.0},
        "max_stages": 1,
        "preset": "cpu-small",
        "train": {"epochs": epochs},
        "teacher_train": {"epochs": teacher_epochs},
        "seed": seed,
    }


def reskd_config(dataset: str, seed: int, *, epochs: int, teacher_epochs: int) -> dict[str, Any]:
    """The base setting with R1 ResNet-8x0.25 (smaller than S0), the stopping ratio 0.9 and the
    two Table II baselines (``reskd_seeds``; ``ce_on`` varies its eq. 3)."""
    base = base_config(dataset, seed, epochs=epochs, teacher_epochs=teacher_epochs)
    return base | {
        "res_students": [{"model": "resnet8", "width": 0.25}],
        "ratio": 0.9,
        "baselines": ["ensemble", "together"],
    }


def quality_setting(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` (a base setting) as ``search_quality`` and ``architecture_spread`` train every
    R1: always (ratio None, termination off: they measure R1, not the stopping rule), with its
    gradients clipped at 5 (searched and random genotypes clip under ``nas_train`` as DARTS does,
    so the handcrafted one does too)."""
    return {**config, "ratio": None, "train": {**config["train"], "grad_clip": 5.0}}


def run_quietly(
    config: Mapping[str, Any], out_dir: Path, *, stages_dir: Path | None = None
) -> Report:
    """One ResKD run of ``config`` (a raw run config) into ``out_dir``, without progress bars or
    log lines; stored stages are reused."""
    return run(
        RunConfig.from_dict(dict(config)),
        out_dir=out_dir,
        stages_dir=stages_dir,
        progress=False,
        log=lambda _: None,
    )


def search_spec(budget: float, seed: int, sets: Sequence[str] = ()) -> SearchSpec:
    """The default search at ``budget`` MFLOPs, changed by ``--set KEY=VALUE`` items (the CLI's
    syntax: a YAML value at a dotted key of the search spec)."""
    return SearchSpec.model_validate(with_sets({"budget_mflops": budget, "seed": seed}, sets))


def random_genotypes(spec: SearchSpec, info: Any, *, factor: float, count: int) -> list[Derivation]:
    """``count`` genotypes drawn uniformly from the search space of ``spec`` (every edge's
    operation and every node's two inputs uniform, as uniform random architecture weights give
    them) and brought under its budget by the search's own repair: the random arm of
    ``search_quality`` for ``spec.seed`` at the budget ``factor`` (the draws depend on both)."""
    rng = random.Random(f"{spec.seed}-{factor}")
    shape = shape_for(spec, info)
    drawn = []
    for _ in range(count):
        scores = {
            kind: [{op: rng.random() for op in NON_ZERO} for _ in range(edge_count(shape.steps))]
            for kind in CELL_KINDS
        }
        start = argmax_genotype(scores, shape.steps)
        derived = derive_within_budget(
            start, scores, shape=shape, budget_mflops=spec.budget_mflops,
            min_channels=spec.min_channels,
        )  # fmt: skip
        drawn.append(derived)
    return drawn


def stored_weights(stages_dir: Path, kind: str) -> Path:
    """The weights of the one stored stage of ``kind`` (``teacher``, ``student``, ...) under a
    run's ``stages_dir``, as the stage store lays it out (``<kind>-<key>/weights.pt``)."""
    found = sorted(stages_dir.glob(f"{kind}-*/weights.pt"))
    if len(found) != 1:
        raise SystemExit(f"{stages_dir}: expected one stored {kind} stage, found {len(found)}")
    return found[0]


# --- arguments -------------------------------------------------------------------------------


def add_seed_options(
    parser: argparse.ArgumentParser, *, out: str, datasets: Sequence[str] = SHIPPED
) -> None:
    """``--dataset``, ``--seeds``, ``--epochs`` (S0 and R1), ``--teacher-epochs`` and ``--out``."""
    parser.add_argument("--dataset", default="mnist5k", choices=list(datasets))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=6, help="S0 and R1 training epochs")
    parser.add_argument("--teacher-epochs", type=int, default=8)
    parser.add_argument("--out", default=out)


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """``--root``, ``--device`` and ``--val-size``: what a run on CIFAR (on a GPU) needs."""
    parser.add_argument(
        "--root",
        help=f"the local directory that holds {' or '.join(ROOTED)} (torchvision's layout: "
        "cifar-10-batches-py/, cifar-100-python/); needed by those datasets, nothing is downloaded",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--val-size", type=int, default=500, help="ResKD's D_v, drawn from the training set"
    )


def check_data_options(args: argparse.Namespace) -> None:
    """Refuse, before any training, a CIFAR dataset without its root, ``--augment`` where every
    stage already trains on the dataset's augmentation, and a root for a shipped dataset."""
    if args.dataset in ROOTED:
        if not args.root:
            raise SystemExit(
                f"--root: dataset {args.dataset!r} is read from a local directory (torchvision's "
                "layout); give its path"
            )
        if args.augment:
            raise SystemExit(
                f"--augment: {args.dataset} trains every stage, T and S0 included, on its papers' "
                "augmentation (pad 4, crop, flip) already; leave it out"
            )
    elif args.root:
        raise SystemExit(f"--root: dataset {args.dataset!r} ships in a package; leave it out")


def add_set_option(parser: argparse.ArgumentParser, what: str) -> None:
    """``--set KEY=VALUE`` (repeatable), as the CLI reads it: a YAML value at a dotted key."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"change a field of {what} (YAML value, dotted key; repeatable): --set epochs=4",
    )


def add_allocator_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allocator",
        default="auto",
        help="auto (tcmalloc when installed: what the service's CPU workers run a job under, "
        "it changes no result), system, or a library path",
    )


def preload_allocator(choice: str) -> None:
    """Run this very command again under the allocator ``choice`` (``--allocator``) unless it
    already runs under it; says which library is preloaded."""
    env = with_allocator(choice, os.environ)
    if env is not None:  # the same command again, with the allocator preloaded
        os.execve(sys.executable, sys.orig_argv, env)
    if os.environ.get("LD_PRELOAD"):
        print(f"preloaded: {os.environ['LD_PRELOAD']}")


def add_record_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--record",
        type=Path,
        help="also write the figures to this JSON file, with the command line that reproduces them",
    )


# --- figures and records ---------------------------------------------------------------------


def mean_sd(values: Sequence[float], digits: int = 4) -> str:
    """``0.9712 ± 0.0031``: the mean and sample standard deviation (0 for one value)."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f}"


def command() -> str:
    """The command line of this process as one reruns it: ``python -m benchmarks.NAME ARGS``."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    name = spec.name if spec is not None else ""
    program = ["-m", name] if name.startswith("benchmarks.") else [sys.argv[0]]
    return shlex.join(["python", *program, *sys.argv[1:]])


def announce() -> None:
    """Print the command line first, so that a saved output names what reproduces it."""
    print(f"$ {command()}", flush=True)


def write_record(path: Path, figures: Mapping[str, Any]) -> Path:
    """``figures`` as JSON at ``path`` (written to a temporary name and renamed), after the
    ``command`` that reproduces them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps({"command": command(), **figures}, indent=2, default=str))
    return path
