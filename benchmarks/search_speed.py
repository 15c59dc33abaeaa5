"""Images per second of one search training step (weights and architecture), ours against NNI 3.0's
DARTS strategy, on the same cells (4 nodes, 14 edges, DARTS's operations), width, cells, batch and
threads, in one run.

    make nni-venv && .venv-nni/bin/python -m benchmarks.search_speed [--channels 16] [--layers 8]
        [--batch 64] [--steps 20] [--threads 2] [--device cpu] [--in-chans 3 --size 32]
        [--channels-last] [--compare-pooling] [--skip-nni] [--record FILE]
    # the demo's search: --channels 4 --layers 5 --in-chans 1 --size 8

Both sides optimise the same objective (KD on a residual target held in a cache) on CIFAR-shaped
inputs (3x32x32, 10 classes; random tensors: speed does not depend on the pixels). A step is timed
from its start to the end of its optimiser updates, after ``--warmup`` steps; the figure is
training images per second (batch / median step time). NNI's step is its DARTS training step
(first-order: an architecture step on a held-out batch, then a weight step). Ours is shown for
STACNAS stage 1 (the default, one-level, one representative per group), DARTS one-level over all
eight operations, and DARTS first-order bilevel (the like-for-like algorithm).

How far from the hardware: each row also gives the step's achieved GFLOP/s and its share of this
machine's peak, measured in the same run as the best of a few large float32 matrix products
(``--matmul 2048``) with the same threads. A step's FLOPs are counted as 2 x the supernet's
forward multiply-accumulates (every candidate on every edge, in the product counter's convention:
``NetShape.cost_table``, stem, preprocessing and head), times 3 for a forward and backward pass
(the usual rule: the backward costs twice the forward), twice for a bilevel step (an architecture
pass on a held-out batch, then a weight pass). The same figure serves NNI's step, which runs the
same operations.

``--compare-pooling``: our steps alternate between the training poolings (``space.pooling``) and
PyTorch's own kernels, in one process on one supernet and batch, and each of our rows also gives
the median step with PyTorch's pooling and the ratio (a comparison that drifts less than two runs).

Both sides run in one process, so under one allocator: by default the one the service's workers
preload (``--allocator auto``: tcmalloc when installed, see ``api.runtime.serve``); ``--allocator
system`` keeps glibc's.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, cast

import torch
from torch.nn import functional as F
from torch.utils.data import Dataset, TensorDataset

from benchmarks.common import (
    add_allocator_option,
    add_record_option,
    announce,
    preload_allocator,
    write_record,
)
from distill.methods import KDConfig
from distill.precision import Amp
from search.run import residual_objective
from search.spec import SearchSpec
from search.strategies import SearchContext
from search.strategies.stacnas import StacNAS
from search.task import SearchSettings, SearchTask
from space import pooling
from space.operations import PRIMITIVES
from space.supernet import NetShape, Supernet, uniform_candidates

Row = dict[str, Any]


def synthetic(
    n: int, classes: int = 10, chans: int = 3, size: int = 32
) -> tuple[TensorDataset, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, chans, size, size, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return TensorDataset(x, y), torch.randn(n, classes, generator=g) * 3


def ours(
    name: str,
    ops: tuple[str, ...],
    optimization: str,
    args: argparse.Namespace,
    shape: NetShape,
    fused: bool = True,
    compiled: bool = False,
) -> Row:
    data, target = synthetic(args.batch * 2, chans=args.in_chans, size=args.size)
    method = KDConfig(distance="kl")
    factory = residual_objective(
        method=method, objective=method.objective(), teacher=None, base=None, cache=(target, None)
    )
    torch.manual_seed(0)
    device = torch.device(args.device)
    net = Supernet(shape, uniform_candidates(ops), fused=fused).to(device)
    if args.channels_last:
        net = net.to(memory_format=torch.channels_last)
    if compiled:  # inductor's kernels for the supernet's forward (and its backward graph)
        net.forward = torch.compile(net.forward, dynamic=False)  # type: ignore[method-assign]
    held = factory(net, None) if optimization == "bilevel" else None
    x = torch.stack([data[i][0] for i in range(args.batch)]).to(device)
    y = torch.stack([data[i][1] for i in range(args.batch)]).to(device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    index = torch.arange(args.batch)
    held_batches = itertools.repeat((x, y, index)) if held is not None else None
    task = SearchTask(
        net,
        objective=factory(net, None),
        settings=SearchSettings(
            budget_mflops=1e9,
            flops_weight=1.0,
            arch_lr=3e-4,
            arch_weight_decay=1e-3,
            optimization=optimization,  # type: ignore[arg-type]
        ),
        held_out=held,
        held_out_batches=held_batches,
    ).to(device)
    task.amp = Amp.of(getattr(args, "precision", "32"), device)  # gpu_check: bf16 too
    task.train()
    optimizer = torch.optim.SGD(net.weight_parameters(), lr=0.025, momentum=0.9)
    seconds: list[float] = []
    pytorch_pooling: list[float] = []  # --compare-pooling: the odd steps
    compare = args.compare_pooling
    for step in range(args.warmup + (2 if compare else 1) * args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        theirs = compare and step % 2 == 1
        started = time.perf_counter()
        with pooling_of_pytorch(theirs):
            task.step(x, y, index, optimizer)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            (pytorch_pooling if theirs else seconds).append(time.perf_counter() - started)
        elif step == 0 and compiled:
            print(f"{name}: first step (compiling) {time.perf_counter() - started:.1f} s")
    row = _row(name, optimization, seconds, args.batch)
    if compare:
        theirs_ms = 1000 * statistics.median(pytorch_pooling)
        row["ms/step, PyTorch's pooling"] = round(theirs_ms, 1)
        row["pooling speed-up"] = round(theirs_ms / row["ms/step"], 3)
    return row


@contextlib.contextmanager
def pooling_of_pytorch(on: bool) -> Iterator[None]:
    """Within the block (if ``on``), the training poolings (``space.pooling.max_pool3x3`` and
    ``avg_pool3x3``, which ``MaxPool3x3`` and ``AvgPool3x3`` call) run PyTorch's own kernels."""
    if not on:
        yield
        return
    saved = pooling.max_pool3x3, pooling.avg_pool3x3

    def max_pool(x: torch.Tensor, stride: int) -> torch.Tensor:
        return F.max_pool2d(x, 3, stride, 1)

    def avg_pool(x: torch.Tensor, stride: int) -> torch.Tensor:
        return F.avg_pool2d(x, 3, stride, 1, count_include_pad=False)

    pooling.max_pool3x3, pooling.avg_pool3x3 = max_pool, avg_pool
    try:
        yield
    finally:
        pooling.max_pool3x3, pooling.avg_pool3x3 = saved


def nni(args: argparse.Namespace, shape: NetShape) -> Row:
    from search import nni_adapter  # needs the [nni] extra

    data, target = synthetic(
        args.batch * 2 * (args.warmup + args.steps), chans=args.in_chans, size=args.size
    )
    method = KDConfig(distance="kl")
    factory = residual_objective(
        method=method, objective=method.objective(), teacher=None, base=None, cache=(target, None)
    )
    spec = SearchSpec(
        budget_mflops=1e6,  # no budget: the spec's largest
        strategy="nni-darts",
        epochs=1,
        channels=shape.channels,
        layers=shape.layers,
        batch_size=args.batch,
        arch_lr=3e-4,
    )
    timer = nni_adapter.StepTimer()
    with TemporaryDirectory() as tmp:
        train_data = cast(Dataset[tuple[torch.Tensor, int]], data)  # its labels are tensors
        ctx = SearchContext(
            spec, shape, train_data, factory, args.device, Path(tmp), progress=False
        )
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


def forward_macs(shape: NetShape, ops: tuple[str, ...]) -> int:
    """Multiply-accumulates of one image through a supernet running every candidate (not
    ``none``) on every edge: the cells' operations plus stem, preprocessing and head."""
    table = shape.cost_table([op for op in ops if op != "none"])
    return shape.fixed_macs() + sum(
        sum(edge.values()) for edges in table.values() for edge in edges
    )


def step_gflop(shape: NetShape, ops: tuple[str, ...], optimization: str, batch: int) -> float:
    passes = 2 if optimization.startswith("bilevel") else 1
    return 2 * forward_macs(shape, ops) * 3 * passes * batch / 1e9


def matmul_peak(n: int, device: str, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """GFLOP/s of the best of ``repeats`` ``n x n`` matrix products in ``dtype`` (float32)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    best = float("inf")
    for _ in range(repeats + 1):  # the first one warms up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        a @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best / 1e9


def with_gflops(row: Row, gflop: float, peak: float) -> Row:
    achieved = gflop / (row["ms/step"] / 1000)
    return row | {"GFLOP/s": round(achieved, 2), "of matmul peak": f"{achieved / peak:.1%}"}


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
    parser.add_argument(
        "--channels-last", action="store_true", help="ours in channels-last memory format"
    )
    parser.add_argument(
        "--skip-reference", action="store_true", help="without the per-edge reference cells"
    )
    parser.add_argument(
        "--compare-pooling",
        action="store_true",
        help="our steps alternate with PyTorch's pooling kernels: both medians and the ratio",
    )
    parser.add_argument("--in-chans", type=int, default=3, help="input channels (digits: 1)")
    parser.add_argument("--size", type=int, default=32, help="input height and width (digits: 8)")
    parser.add_argument("--matmul", type=int, default=2048, help="size of the peak's matrices")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also the bilevel step with the supernet's forward under torch.compile (inductor)",
    )
    add_allocator_option(parser)
    add_record_option(parser)
    args = parser.parse_args()
    preload_allocator(args.allocator)
    announce()
    torch.set_num_threads(args.threads)
    shape = NetShape.of(
        channels=args.channels,
        layers=args.layers,
        num_classes=10,
        in_chans=args.in_chans,
        input_size=args.size,
    )
    print(
        f"cells: 4 nodes, 14 edges; {args.channels} channels, {args.layers} cells, batch "
        f"{args.batch}, {args.threads} threads, {args.device}, "
        f"{args.in_chans}x{args.size}x{args.size}; "
        f"median of {args.steps} steps",
        flush=True,
    )
    peak = matmul_peak(args.matmul, args.device)
    print(f"peak: {args.matmul}x{args.matmul} float32 matmul, {peak:.1f} GFLOP/s", flush=True)
    rows = [
        ours("ours: STACNAS stage 1", StacNAS.stage1_ops, "one-level", args, shape),
        ours("ours: DARTS, 8 operations", PRIMITIVES, "one-level", args, shape),
        ours("ours: DARTS, 8 operations", PRIMITIVES, "bilevel", args, shape),
    ]
    if not args.skip_reference:
        reference = "ours: DARTS, 8 operations, per-edge cells (reference)"
        rows.append(ours(reference, PRIMITIVES, "bilevel", args, shape, fused=False))
    ops_of = [StacNAS.stage1_ops, PRIMITIVES, PRIMITIVES]
    if not args.skip_reference:
        ops_of.append(PRIMITIVES)
    if args.compile:
        name = "ours: DARTS, 8 operations, torch.compile"
        rows.append(ours(name, PRIMITIVES, "bilevel", args, shape, compiled=True))
        ops_of.append(PRIMITIVES)
    rows = [
        with_gflops(row, step_gflop(shape, ops, row["optimization"], args.batch), peak)
        for row, ops in zip(rows, ops_of, strict=True)
    ]
    for row in rows:
        print(row, flush=True)
    from distill.report import format_table

    if not args.skip_reference:
        print(f"fused cells / per-edge cells: {rows[2]['images/s'] / rows[3]['images/s']:.2f}x")
    if not args.skip_nni:
        nni_row = with_gflops(
            nni(args, shape), step_gflop(shape, PRIMITIVES, "bilevel", args.batch), peak
        )
        rows.append(nni_row)
    print()
    print(format_table(rows, list(rows[0])))
    if not args.skip_nni:
        print()
        for row in rows[:-1]:  # from the medians (images/s is rounded to 0.1)
            ratio = nni_row["ms/step"] / row["ms/step"]
            print(f"{row['search step']} ({row['optimization']}) / NNI: {ratio:.2f}x")
    if args.record:
        figures = {"matmul_peak_gflops": peak, "threads": args.threads, "rows": rows}
        print(f"record: {write_record(args.record, figures)}")


if __name__ == "__main__":
    main()
