"""Tensor-level pieces of the fused search cells (``space.fused``), each in the form PyTorch's CPU
kernels (oneDNN, mkldnn) run fastest on the search's shapes.

Every function here computes the same products as the plain form it replaces (``F.conv2d``, a
BN followed by a product, ...) in another order: float rounding apart, the same output and
gradients. The timings that chose each form, and the command that measures them, are in
``benchmarks/results/fused-kernels.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class Depthwise5x5(torch.autograd.Function):
    """A depthwise conv (stride 1) whose weight's gradient is taken in channels-last memory,
    where mkldnn's 5x5 weight gradient in the default layout is its slowest kernel on CPUs.

    The forward and the input's gradient are the default ones (the same ops, the same floats);
    only the weight's gradient sums in another order. Used where the search's rounding may
    change: maps of 32x32 and more, or 32 channels and more, none of which the demo's and
    MNIST's recorded searches have."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, padding: int, dilation: int) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.dilation = padding, dilation
        return F.conv2d(x, weight, None, 1, padding, dilation, groups=x.shape[1])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        x, weight = ctx.saved_tensors
        conv = (weight, None, [1, 1], [ctx.padding] * 2, [ctx.dilation] * 2, False, [0, 0])
        groups = x.shape[1]
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad, x, *conv, groups, [True, False, False]
            )[0]
        if ctx.needs_input_grad[1]:
            last = torch.channels_last
            grad_w = torch.ops.aten.convolution_backward(
                grad.contiguous(memory_format=last),
                x.contiguous(memory_format=last),
                *conv,
                groups,
                [False, True, False],
            )[1]
        return grad_x, grad_w, None, None


class _SharedDepthwise(torch.autograd.Function):
    """``m`` edges' depthwise convs on their shared input ``x`` (``shared_depthwise``: 5x5
    kernels, and dilated ones at stride 2), each of the three passes in the form oneDNN runs
    fastest on CPUs (measured per pass):
    - forward: an ordinary depthwise conv over m copies of the input, except dilated at stride
      2: the conv with m outputs per input channel in channels-last memory (``last``: the
      input's copy, made once per state);
    - the input's gradient, not dilated: the copies' gradients, summed;
    - the weight's gradient, and a dilated conv's input gradient: the conv with m outputs per
      input channel, in channels-last memory at stride 1 (dilated: on maps larger than 8x8),
      in the default layout otherwise."""

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        dw: Tensor,
        m: int,
        stride: int,
        pad: int,
        dilation: int,
        last: Callable[[], Tensor] | None,
    ) -> Tensor:
        c = x.shape[1]
        ctx.conv = (m, stride, pad, dilation, last)
        if dilation > 1 and stride > 1:
            if last is None:
                x_last = x.contiguous(memory_format=torch.channels_last)
            else:  # made with autograd on: the state's other bundles may differentiate it
                with torch.enable_grad():
                    x_last = last()
            ctx.save_for_backward(x, None, dw)
            y = F.conv2d(x_last, _per_input(dw, m), None, stride, pad, dilation, groups=c)
            return _edge_major(y, m)
        copies = x.repeat(1, m, 1, 1)
        ctx.save_for_backward(x, copies if dilation == 1 else None, dw)
        return F.conv2d(copies, dw, None, stride, pad, dilation, groups=m * c)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, copies, dw = ctx.saved_tensors
        m, stride, pad, dilation, last = ctx.conv
        b, c, k = x.shape[0], x.shape[1], dw.shape[-1]
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        conv = ([stride] * 2, [pad] * 2, [dilation] * 2, False, [0, 0])
        grad = grad.contiguous()
        grad_x = grad_w = None
        if need_x and copies is not None:
            grad_copies = torch.ops.aten.convolution_backward(
                grad, copies, dw, None, *conv, m * c, [True, False, False]
            )[0]
            grad_x = grad_copies.unflatten(1, (m, c)).sum(1)
            need_x = False
        if need_x or need_w:
            in_last = stride == 1 and (dilation == 1 or x.shape[2] * x.shape[3] > 64)
            h, w = grad.shape[2], grad.shape[3]
            # channel-major: input channel i's m outputs at i*m .. i*m+m-1
            grad_cm = grad.view(b, m, c, h, w).transpose(1, 2).reshape(b, c * m, h, w)
            if in_last:
                grad_cm = grad_cm.contiguous(memory_format=torch.channels_last)
                x = last() if last is not None else x.contiguous(memory_format=torch.channels_last)
            gx, gw, _ = torch.ops.aten.convolution_backward(
                grad_cm, x, _per_input(dw, m), None, *conv, c, [need_x, need_w, False]
            )
            if need_x:
                grad_x = gx
            if need_w:
                grad_w = gw.view(c, m, k, k).transpose(0, 1).reshape(m * c, 1, k, k)
        return grad_x, grad_w, None, None, None, None, None


def _per_input(dw: Tensor, m: int) -> Tensor:
    """Edge-major depthwise kernels (m x c, 1, k, k) in the channel-major order of a conv with m
    outputs per input channel (groups = c): input channel i's at i*m .. i*m+m-1."""
    c, k = dw.shape[0] // m, dw.shape[-1]
    return dw.view(m, c, k, k).transpose(0, 1).reshape(c * m, 1, k, k)


def _edge_major(y: Tensor, m: int) -> Tensor:
    """A channel-major conv output (input channel i's m outputs together) reordered edge-major
    (edge e's c channels together), in the default layout: one copy."""
    b, mc, h, w = y.shape
    return y.unflatten(1, (mc // m, m)).transpose(1, 2).reshape(b, mc, h, w)


def shared_depthwise(
    x: Tensor,
    dw: Tensor,
    m: int,
    stride: int,
    pad: int,
    dilation: int,
    last: Callable[[], Tensor] | None = None,
) -> Tensor:
    """The depthwise convs of ``m`` edges on their shared input ``x`` (c channels; ``dw``:
    (m x c, 1, k, k), edge-major): m x c channels, edge-major (edge e at e*c .. e*c+c-1), as the
    pointwise product reads them. A conv with m outputs per input channel gives them
    channel-major (input channel i feeds i*m .. i*m+m-1); one copy reorders them (the product
    would copy its transposed operand otherwise, both ways).

    oneDNN's depthwise conv with a channel multiplier (groups=c) is slow in the default layout,
    so on CPUs: a plain 3x3 at stride 1 as an ordinary depthwise conv (groups = m x c) over m
    copies of the input (oneDNN's fast 3x3 kernel; the copies' gradient is their sum); 5x5, and
    dilated ones at stride 2, with each pass in its fastest form (``_SharedDepthwise``); dilated
    3x3 at stride 1 in channels-last memory (one copy in, one out), as a single edge's 5x5; the
    rest (strided 3x3) as a conv with m outputs per input channel in the default layout.
    ``last`` gives ``x`` in channels-last memory, made once per state for all its bundles."""
    c, k = x.shape[1], dw.shape[-1]
    cpu = x.device.type == "cpu"
    if cpu and k == 3 and dilation == 1 and stride == 1 and m > 1:
        return F.conv2d(x.repeat(1, m, 1, 1), dw, None, 1, pad, 1, groups=m * c)
    if cpu and m > 1 and (k == 5 or (dilation > 1 and stride > 1)):
        y: Tensor = _SharedDepthwise.apply(x, dw, m, stride, pad, dilation, last)
        return y
    in_last = cpu and (
        (dilation == 1 and k == 5)
        or (dilation > 1 and stride == 1 and (k == 3 or x.shape[2] * x.shape[3] > 64))
    )
    if in_last:
        x = last() if last is not None else x.contiguous(memory_format=torch.channels_last)
    return _edge_major(F.conv2d(x, _per_input(dw, m), None, stride, pad, dilation, groups=c), m)


def batch_norm(bn: nn.BatchNorm2d, x: Tensor, weight: Tensor | None, fast: bool = False) -> Tensor:
    """``bn(x)`` (a non-affine BN), times ``weight`` per channel when given: ``F.batch_norm``'s
    affine weight, so that one kernel normalizes and weights, and its backward gives the weight's
    gradient from the sums it takes anyway (separately, the product costs as many passes over
    the output as the BN itself). Used on maps of 32x32 and more or from 32 channels
    (``OpBundle.folds``), where the fused cells' rounding already differs from the per-edge
    cells' (``pointwise``, ``Depthwise5x5``), so the demo's and MNIST's searches keep theirs.

    ``fast`` (the same maps and channels, training on a CPU): the batch statistics come from
    ``_BatchStatsNorm`` instead of PyTorch's training kernel."""
    if weight is None and not fast:
        return bn(x)
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)  # as ``_BatchNorm.forward`` counts
        if bn.momentum is None:
            momentum = 1.0 / float(bn.num_batches_tracked)
    training = bn.training or (bn.running_mean is None and bn.running_var is None)
    keep = not bn.training or bn.track_running_stats
    running_mean = bn.running_mean if keep else None
    running_var = bn.running_var if keep else None
    if fast and training and x.device.type == "cpu" and x.dtype == torch.float32:
        y: Tensor = _BatchStatsNorm.apply(
            x.contiguous(), weight, running_mean, running_var, momentum, bn.eps
        )
        return y
    return F.batch_norm(x, running_mean, running_var, weight, None, training, momentum, bn.eps)


class _BatchStatsNorm(torch.autograd.Function):
    """A training-mode BN on a CPU: ``F.batch_norm(x, None, None, weight, training=True)``, with
    the batch statistics taken as per-plane sums and sums of squares (``sum`` and
    ``vector_norm`` along each (sample, channel) plane: contiguous reductions reading each value
    once, without the product ``vecdot`` writes) and the normalisation done by PyTorch's
    inference kernel (one pass), where PyTorch's CPU training kernel takes its mean and its
    variance in two passes of its own and normalises in a third. The variance is E[x^2] - E[x]^2
    in float32, which differs from the two-pass figure by float rounding (1e-6 relative on
    unit-scale inputs). The backward is PyTorch's own (``native_batch_norm_backward`` with these
    statistics), so the gradient's formula is the same. Running statistics are updated as
    ``F.batch_norm`` does (unbiased variance)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        weight: Tensor | None,
        running_mean: Tensor | None,
        running_var: Tensor | None,
        momentum: float,
        eps: float,
    ) -> Tensor:
        b, c = x.shape[0], x.shape[1]
        rows = x.view(b * c, -1)  # one (sample, channel) plane per row
        n = b * rows.shape[1]
        sums = rows.sum(1)
        squares = torch.linalg.vector_norm(rows, dim=1).square()
        mean, mean_square = (torch.stack([sums, squares]).view(2, b, c).sum(1) / n).unbind()
        var = (mean_square - mean * mean).clamp_min(0.0)
        if running_mean is not None and running_var is not None:
            running_mean.lerp_(mean, momentum)
            running_var.lerp_(var * (n / max(1, n - 1)), momentum)
        ctx.save_for_backward(x, weight, mean, torch.rsqrt(var + eps))
        ctx.eps = eps
        return F.batch_norm(x, mean, var, weight, None, False, 0.0, eps)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, weight, mean, invstd = ctx.saved_tensors
        mask = [ctx.needs_input_grad[0], weight is not None and ctx.needs_input_grad[1], False]
        grad_x, grad_w, _ = torch.ops.aten.native_batch_norm_backward(
            grad.contiguous(), x, weight, None, None, mean, invstd, True, ctx.eps, mask
        )
        return grad_x, grad_w, None, None, None, None


def pointwise(y: Tensor, pw: Tensor, m: int) -> Tensor:
    """The 1x1 conv of ``m`` groups of c channels each (``pw``: (m x c, c, 1, 1)) on ``y``: (B,
    m x c, H, W). On CPUs, for maps of 32x32 and larger, as one batched matrix product per group,
    where mkldnn's grouped 1x1 conv is several times slower; on smaller maps the two are close,
    so the conv stays there (the maps ``small_maps`` admits take ``depthwise_pointwise``)."""
    b, mc, h, w = y.shape
    c = mc // m
    if y.device.type != "cpu" or not y.is_contiguous() or h * w < 1024:
        return F.conv2d(y, pw, None, 1, 0, 1, m)
    return torch.matmul(pw.view(m, c, c), y.view(b, m, c, h * w)).view(b, mc, h, w)


def weighted_shared(shared: list[tuple[Tensor, Tensor]], total: Tensor | None) -> Tensor:
    """``total`` (B, m, c, H, W) plus every shared output (B, 1, c, H, W: pooling, the
    identity) times its weight on each of the m edges, as one batched matrix product (m x k
    weights by k outputs) added into ``total`` (``baddbmm``). One broadcast product and one sum
    per operation write m outputs each, and their backward reads the gradient twice per
    operation; here both directions are one product. Used where ``OpBundle.large``."""
    outputs = torch.cat([y for y, _ in shared], 1)  # (B, k, c, H, W)
    weights = torch.stack([w for _, w in shared], 1)  # (m, k)
    b, k = outputs.shape[0], outputs.shape[1]
    m = weights.shape[0]
    flat = outputs.view(b, k, -1)
    if total is None:
        return torch.matmul(weights, flat).view(b, m, *outputs.shape[2:])
    mixed = torch.baddbmm(total.reshape(b, m, -1), weights.expand(b, m, k), flat)
    return mixed.view(total.shape)
