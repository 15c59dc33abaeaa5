"""Milliseconds of the CPU forms the fused search cells choose between (``space.kernels``,
``space.fused``), one study at a time, each form against the one it replaced.

    python -m benchmarks.fused_kernels STUDY [--threads 2] [--batch 64] [--repeats 20]

Studies (the shapes are the rows of ``benchmarks/results/fused-kernels.md``):
- ``depthwise-5x5``: a depthwise conv's weight gradient, default layout against channels-last;
- ``shared-depthwise``: m edges' depthwise convs on one input, forward and backward, as a conv
  with m outputs per input channel (default layout, channels-last) and over m input copies;
- ``shared-depthwise-passes``: the same forms, each pass (forward, input gradient, weight
  gradient) alone;
- ``pair-or-product``: a shared input's depthwise-pointwise pairs as the pair against the one
  dense conv of their product kernel, forward and backward;
- ``bn-weighting``: a BN then the edges' weights as a product, against ``kernels.batch_norm``;
- ``batch-stats``: PyTorch's training BN forward against ``kernels.batch_norm(fast=True)``;
- ``pointwise``: m grouped 1x1 convs against ``kernels.pointwise``, forward and backward;
- ``weighted-shared``: shared outputs weighted per edge by broadcast products against
  ``kernels.weighted_shared``, forward and backward.
Each figure is the median of ``--repeats`` timed calls after 3 untimed ones.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from space import kernels

LAST = torch.channels_last
INPUT, WEIGHT = [True, False, False], [False, True, False]  # the gradient a backward gives


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def both_ways(make: Callable[[], Tensor], inputs: list[Tensor]) -> Callable[[], object]:
    """A forward and backward pass of ``make`` (every input's gradient)."""

    def run() -> object:
        for t in inputs:
            t.grad = None
        out = make()
        return out.backward(torch.ones_like(out))

    return run


def _per_input(dw: Tensor, m: int) -> Tensor:
    c, k = dw.shape[0] // m, dw.shape[-1]
    return dw.view(m, c, k, k).transpose(0, 1).reshape(c * m, 1, k, k)


def _depthwise_forms(
    x: Tensor, dw: Tensor, m: int, stride: int, dilation: int
) -> dict[str, Callable[[], Tensor]]:
    c, k = x.shape[1], dw.shape[-1]
    pad = dilation * (k - 1) // 2

    def multiplier(layout: torch.memory_format) -> Callable[[], Tensor]:
        return lambda: F.conv2d(
            x.contiguous(memory_format=layout), _per_input(dw, m), None, stride, pad, dilation, c
        )

    return {
        "default": multiplier(torch.contiguous_format),
        "channels-last": multiplier(LAST),
        "copies": lambda: F.conv2d(x.repeat(1, m, 1, 1), dw, None, stride, pad, dilation, m * c),
    }


def depthwise_5x5(args: argparse.Namespace) -> None:
    for c, size, k in ((64, 32, 5), (64, 32, 3)):
        x = torch.randn(args.batch, c, size, size)
        w = torch.randn(c, 1, k, k)
        grad = torch.randn(args.batch, c, size, size)
        conv = ([1, 1], [k // 2] * 2, [1, 1], False, [0, 0])
        ms = [
            median_ms(partial(_backward, grad, x, w, conv, c, WEIGHT, layout), args.repeats)
            for layout in (torch.contiguous_format, LAST)
        ]
        print(f"| {c}, {size}x{size}, {k}x{k} | {ms[0]:.1f} | {ms[1]:.1f} |")


def _backward(
    grad: Tensor,
    x: Tensor,
    weight: Tensor,
    conv: tuple[object, ...],
    groups: int,
    mask: list[bool],
    layout: torch.memory_format,
) -> object:
    """A conv's backward (the gradients ``mask`` asks for) with its gradient and input copied
    into ``layout`` first (the copies timed with it)."""
    grad, x = grad.contiguous(memory_format=layout), x.contiguous(memory_format=layout)
    return torch.ops.aten.convolution_backward(grad, x, weight, None, *conv, groups, mask)


def shared_depthwise(args: argparse.Namespace) -> None:
    for c, size, stride in ((16, 32, 1), (32, 16, 1), (64, 8, 1), (32, 32, 2)):
        cells = []
        for k, dilation in ((3, 1), (5, 1), (3, 2), (5, 2)):
            x = torch.randn(args.batch, c, size, size, requires_grad=True)
            dw = torch.randn(4 * c, 1, k, k, requires_grad=True)
            forms = _depthwise_forms(x, dw, 4, stride, dilation)
            ms = [median_ms(both_ways(f, [x, dw]), args.repeats) for f in forms.values()]
            cells.append("/".join(f"{t:.1f}" for t in ms))
        print(f"| {c}, {size}x{size}, {stride} | {' | '.join(cells)} |")


def shared_depthwise_passes(args: argparse.Namespace) -> None:
    rows = [
        (16, 4, 32, 5, 1, 1), (16, 4, 32, 5, 2, 1), (32, 4, 16, 5, 1, 1), (64, 4, 8, 5, 1, 1),
        (64, 4, 8, 5, 2, 1), (32, 2, 32, 5, 1, 2), (32, 4, 32, 5, 2, 2), (64, 4, 16, 5, 2, 2),
        (32, 2, 32, 3, 2, 2),
    ]  # fmt: skip
    for c, m, size, k, dilation, stride in rows:
        x = torch.randn(args.batch, c, size, size)
        dw = torch.randn(m * c, 1, k, k)
        pad = dilation * (k - 1) // 2
        conv = ([stride] * 2, [pad] * 2, [dilation] * 2, False, [0, 0])
        passes: list[list[float]] = [[], [], []]
        forms = _depthwise_forms(x, dw, m, stride, dilation)
        for name in ("copies", "default", "channels-last"):  # the record's order
            form = forms[name]
            grad = torch.randn_like(form())
            copies = name == "copies"
            xin = x.repeat(1, m, 1, 1) if copies else x
            weight = dw if copies else _per_input(dw, m)
            groups = m * c if copies else c
            layout = LAST if name == "channels-last" else torch.contiguous_format
            passes[0].append(median_ms(form, args.repeats))
            for p, mask in ((1, INPUT), (2, WEIGHT)):
                backward = partial(_backward, grad, xin, weight, conv, groups, mask, layout)
                passes[p].append(median_ms(backward, args.repeats))
        cells = " | ".join("/".join(f"{t:.1f}" for t in ms) for ms in passes)
        print(f"| {c}, {m}, {size}x{size}, {k}, {dilation}, {stride} | {cells} |")


def pair_or_product(args: argparse.Namespace) -> None:
    for c, m, k, size in ((16, 4, 5, 32), (16, 2, 5, 32), (16, 4, 3, 32), (32, 4, 3, 16)):
        x = torch.randn(args.batch, c, size, size, requires_grad=True)
        dw = torch.randn(m * c, 1, k, k, requires_grad=True)
        pw = torch.randn(m * c, c, 1, 1, requires_grad=True)
        forms = _pair_forms(x, dw, pw, m)
        ms = [median_ms(both_ways(f, [x, dw, pw]), args.repeats) for f in forms]
        print(f"| {c}, {m}, {k}x{k}, {size}x{size} | {ms[0]:.1f} | {ms[1]:.1f} |")


def _pair_forms(x: Tensor, dw: Tensor, pw: Tensor, m: int) -> list[Callable[[], Tensor]]:
    """The pair (depthwise convs, then the pointwise ones as a batched product) and the dense
    conv of their product kernel."""
    b, c, k = x.shape[0], x.shape[1], dw.shape[-1]
    pad = (k - 1) // 2

    def pair() -> Tensor:
        y = kernels.shared_depthwise(x, dw, m, 1, pad, 1)
        return torch.matmul(pw.view(m, c, c), y.view(b, m, c, -1))

    def product() -> Tensor:
        kernel = (pw.view(m, c, c, 1, 1) * dw.view(m, 1, c, k, k)).reshape(m * c, c, k, k)
        return F.conv2d(x, kernel, None, 1, pad)

    return [pair, product]


def bn_weighting(args: argparse.Namespace) -> None:
    m, c, size = 4, 16, 32
    bn = nn.BatchNorm2d(m * c, affine=False)
    y = torch.randn(args.batch, m * c, size, size, requires_grad=True)
    scale = torch.rand(m, requires_grad=True)

    def separate() -> Tensor:
        return bn(y).view(args.batch, m, c, size, size) * scale.view(1, m, 1, 1, 1)

    def folded() -> Tensor:
        return kernels.batch_norm(bn, y, scale.repeat_interleave(c))

    ms = [median_ms(both_ways(f, [y, scale]), args.repeats) for f in (separate, folded)]
    print(f"| {m}, {c}, {size}x{size} | {ms[0]:.1f} | {ms[1]:.1f} |")


def batch_stats(args: argparse.Namespace) -> None:
    for c, size in ((64, 32), (128, 16), (256, 8)):
        bn = nn.BatchNorm2d(c, affine=False)
        x = torch.randn(args.batch, c, size, size)
        forms = [partial(bn, x), partial(kernels.batch_norm, bn, x, None, fast=True)]
        ms = [median_ms(f, args.repeats) for f in forms]
        print(f"| {c}, {size}x{size} | {ms[0]:.2f} | {ms[1]:.2f} |")


def pointwise(args: argparse.Namespace) -> None:
    for m, c, size in ((4, 16, 32), (4, 16, 16), (4, 64, 8)):
        y = torch.randn(args.batch, m * c, size, size, requires_grad=True)
        pw = torch.randn(m * c, c, 1, 1, requires_grad=True)
        conv = partial(F.conv2d, y, pw, None, 1, 0, 1, m)
        product = partial(torch.matmul, pw.view(m, c, c), y.view(args.batch, m, c, -1))
        ms = [median_ms(both_ways(f, [y, pw]), args.repeats) for f in (conv, product)]
        print(f"| {m}, {c}, {size}x{size} | {ms[0]:.1f} | {ms[1]:.1f} |")


def weighted_shared(args: argparse.Namespace) -> None:
    m, k = 4, 3
    for c, size in ((16, 32), (32, 16), (64, 8)):
        outputs = [torch.randn(args.batch, 1, c, size, size, requires_grad=True) for _ in range(k)]
        weights = [torch.rand(m, requires_grad=True) for _ in range(k)]
        total = torch.randn(args.batch, m, c, size, size, requires_grad=True)
        pairs = list(zip(outputs, weights, strict=True))
        forms = [partial(_broadcast, pairs, total), partial(kernels.weighted_shared, pairs, total)]
        ms = [median_ms(both_ways(f, [*outputs, *weights, total]), args.repeats) for f in forms]
        print(f"| {c}, {size}x{size} | {ms[0]:.1f} | {ms[1]:.1f} |")


def _broadcast(pairs: list[tuple[Tensor, Tensor]], total: Tensor) -> Tensor:
    """What ``kernels.weighted_shared`` replaced: one broadcast product and sum per output."""
    for y, w in pairs:
        total = total + y * w.view(1, -1, 1, 1, 1)
    return total


STUDIES = {
    "depthwise-5x5": depthwise_5x5,
    "shared-depthwise": shared_depthwise,
    "shared-depthwise-passes": shared_depthwise_passes,
    "pair-or-product": pair_or_product,
    "bn-weighting": bn_weighting,
    "batch-stats": batch_stats,
    "pointwise": pointwise,
    "weighted-shared": weighted_shared,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("study", choices=STUDIES)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"{args.study}: batch {args.batch}, {args.threads} threads, ms (median of {args.repeats})"
    )
    STUDIES[args.study](args)


if __name__ == "__main__":
    main()
