"""Images per second of one search training step (weights and architecture), ours against NNI 3.0's
DARTS strategy, on the same cells (4 nodes, 14 edges, DARTS's operations), width, cells, batch and
threads, in one run.

    make nni-venv && .venv-nni/bin/python benchmarks/search_speed.py [--channels 16] [--layers 8]
        [--batch 64] [--steps 20] [--threads 2] [--device cpu]

Both sides optimise the same objective (KD on a residual target held in a cache) on CIFAR-shaped
inputs (3x32x32, 10 classes; random tensors: speed does not depend on the pixels). A step is timed
from its start to the end of its optimiser updates, after ``--warmup`` steps; the figure is
training images per second (batch / median step time). NNI's step is its DARTS training step
(first-order: an architecture step on a held-out batch, then a weight step). Ours is shown for
STACNAS stage 1 (the default, one-level, one representative per group), DARTS one-level over all
eight operations, and DARTS first-order bilevel (the like-for-like algorithm).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import torch
from torch.utils.data import TensorDataset

from distill.residual import MethodConfig
from search.run import residual_objective
from search.spec import SearchSpec
from search.strategies import SearchContext, StacNAS, _cycle
from search.task import SearchTask
from space.operations import PRIMITIVES
from space.supernet import NetShape, Supernet, uniform_candidates

Row = dict[str, Any]


def synthetic(n: int, classes: int = 10) -> tuple[TensorDataset, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return TensorDataset(x, y), torch.randn(n, classes, generator=g) * 3


def ours(
    name: str,
    ops: tuple[str, ...],
    optimization: str,
    args: argparse.Namespace,
    shape: NetShape,
    fused: bool = True,
) -> Row:
    data, target = synthetic(args.batch * 2)
    method = MethodConfig(distance="kl")
    factory = residual_objective(
        method=method, objective=method.objective(), teacher=None, base=None, cache=(target, None)
    )
    torch.manual_seed(0)
    device = torch.device(args.device)
    net = Supernet(shape, uniform_candidates(ops), fused=fused).to(device)
    held = factory(net, None) if optimization == "bilevel" else None
    x = torch.stack([data[i][0] for i in range(args.batch)]).to(device)
    y = torch.stack([data[i][1] for i in range(args.batch)]).to(device)
    index = torch.arange(args.batch)
    held_batches = _cycle([(x, y, index)]) if held is not None else None
    task = SearchTask(
        net,
        objective=factory(net, None),
        budget_mflops=1e9,
        flops_weight=1.0,
        arch_lr=3e-4,
        arch_weight_decay=1e-3,
        optimization=optimization,  # type: ignore[arg-type]
        held_out=held,
        held_out_batches=held_batches,
    ).to(device)
    task.train()
    optimizer = torch.optim.SGD(net.weight_parameters(), lr=0.025, momentum=0.9)
    seconds = []
    for step in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        task.step(x, y, index, optimizer)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            seconds.append(time.perf_counter() - started)
    return _row(name, optimization, seconds, args.batch)


def nni(args: argparse.Namespace, shape: NetShape) -> Row:
    from search import nni_adapter  # needs the [nni] extra

    data, target = synthetic(args.batch * 2 * (args.warmup + args.steps))
    method = MethodConfig(distance="kl")
    factory = residual_objective(
        method=method, objective=method.objective(), teacher=None, base=None, cache=(target, None)
    )
    spec = SearchSpec(
        budget_mflops=1e9,
        strategy="nni-darts",
        epochs=1,
        channels=shape.channels,
        layers=shape.layers,
        batch_size=args.batch,
        arch_lr=3e-4,
    )
    timer = nni_adapter.StepTimer()
    with TemporaryDirectory() as tmp:
        ctx = SearchContext(spec, shape, data, factory, args.device, Path(tmp), progress=False)
        exp, _ = nni_adapter.experiment(ctx, max_batches=args.warmup + args.steps, timer=timer)
        try:
            exp.run()
        finally:
            exp.stop()
    return _row(
        "NNI 3.0 DARTS strategy", "bilevel (first order)", timer.seconds[args.warmup :], args.batch
    )


def _row(name: str, optimization: str, seconds: list[float], batch: int) -> Row:
    median = statistics.median(seconds)
    return {
        "search step": name,
        "optimization": optimization,
        "ms/step": round(1000 * median, 1),
        "images/s": round(batch / median, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-nni", action="store_true", help="ours only (no .venv-nni needed)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shape = NetShape.of(
        channels=args.channels, layers=args.layers, num_classes=10, in_chans=3, input_size=32
    )
    print(
        f"cells: 4 nodes, 14 edges; {args.channels} channels, {args.layers} cells, batch "
        f"{args.batch}, {args.threads} threads, {args.device}, 3x32x32; "
        f"median of {args.steps} steps",
        flush=True,
    )
    rows = [
        ours("ours: STACNAS stage 1", StacNAS.stage1_ops, "one-level", args, shape),
        ours("ours: DARTS, 8 operations", PRIMITIVES, "one-level", args, shape),
        ours("ours: DARTS, 8 operations", PRIMITIVES, "bilevel", args, shape),
        ours(
            "ours: DARTS, 8 operations, per-edge cells (reference)",
            PRIMITIVES,
            "bilevel",
            args,
            shape,
            fused=False,
        ),
    ]
    for row in rows:
        print(row, flush=True)
    from distill.report import format_table

    print(f"fused cells / per-edge cells: {rows[2]['images/s'] / rows[3]['images/s']:.2f}x")
    if args.skip_nni:
        print()
        print(format_table(rows, list(rows[0])))
        return
    nni_row = nni(args, shape)
    rows.append(nni_row)
    print()
    print(format_table(rows, list(rows[0])))
    print()
    for row in rows[:-1]:
        ratio = row["images/s"] / nni_row["images/s"]
        print(f"{row['search step']} ({row['optimization']}) / NNI: {ratio:.2f}x")


if __name__ == "__main__":
    main()
