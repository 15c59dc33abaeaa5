"""DARTS's 3x3 poolings (padding 1, stride 1 or 2) for training on a CPU.

PyTorch's CPU kernels for ``max_pool2d`` (with the indices its backward needs) and ``avg_pool2d``
in the default (NCHW) layout visit a window's 9 taps one output at a time, unvectorized. At 16
channels on 32x32 maps, batch 64, 2 threads, forward and backward took 17.7 ms (max) and 17.6 ms
(average), where the maxima and sums themselves are a few vectorized passes over the map.

- ``max_pool3x3`` runs PyTorch's own kernel in channels-last memory, vectorized across channels:
  a copy into that layout, the pool with its indices (the same spatial numbering), the output
  copied back. The backward is PyTorch's, with those indices, in the default layout. The values
  and the gradient are PyTorch's, exactly (its two kernels take the first maximum of a window in
  row-major order, ties included; tested). 17.7 -> 8.5 ms at the shape above, 1.7 -> 0.6 ms at
  8 channels on 14x14; on maps under 4x4 and on small strided ones the copies cost more than they
  save, so those keep the default kernel (``channels_last_max``).
- ``avg_pool3x3`` (``count_include_pad=False``, DARTS's) at stride 1 on maps of at least 7x7 sums
  a window as 3 columns, then 3 rows of those (shifted views of the zero-padded map) and divides
  by the number of pixels inside the map. The same sums in another order: within 1e-6 of
  ``avg_pool2d`` on unit-scale inputs (tested). The window is symmetric, so the gradient is the
  same separable sum over the gradient divided by the counts. 17.6 -> 4.5 ms at the shape above,
  4.0 -> 0.64 ms at 4 channels on 28x28 (MNIST's first cells). Strided and smaller maps keep
  PyTorch's kernel (there the separable sums were no faster).

``MaxPool3x3`` and ``AvgPool3x3`` (the modules ``space.operations.OPS`` builds) take these paths
while training on a CPU; evaluation, tracing, export and TorchScript run PyTorch's modules as
they are.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

SEPARABLE_FROM_PIXELS = 49  # average pooling: separable sums on maps of 7x7 and larger


def _cpu_float_maps(x: Tensor) -> bool:
    return x.device.type == "cpu" and x.dim() == 4 and x.dtype in (torch.float32, torch.float64)


def channels_last_max(x: Tensor, stride: int) -> bool:
    """Whether max pooling ``x`` in channels-last memory pays for the two copies (measured,
    forward and backward, batch 64: stride 1 from 4x4 maps, stride 2 from 1,024 values per
    sample, e.g. 16 channels at 8x8)."""
    if not _cpu_float_maps(x):
        return False
    c, h, w = x.shape[1:]
    return h * w >= 16 if stride == 1 else c * h * w >= 1024


class _ChannelsLastMaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, stride: int) -> Tensor:
        y, indices = F.max_pool2d_with_indices(
            x.contiguous(memory_format=torch.channels_last), (3, 3), (stride, stride), (1, 1)
        )
        ctx.stride = stride
        ctx.save_for_backward(x, indices.contiguous())
        return y.contiguous()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        x, indices = ctx.saved_tensors
        s = ctx.stride
        grad_x = torch.ops.aten.max_pool2d_with_indices_backward(
            grad.contiguous(), x, [3, 3], [s, s], [1, 1], [1, 1], False, indices
        )
        return grad_x, None


def max_pool3x3(x: Tensor, stride: int) -> Tensor:
    """``max_pool2d(x, 3, stride, padding=1)``: the same values and gradient, faster on CPUs."""
    if channels_last_max(x, stride):
        return _ChannelsLastMaxPool.apply(x, stride)
    return F.max_pool2d(x, 3, stride, 1)


@functools.lru_cache(maxsize=128)
def _counts(h: int, w: int, dtype: torch.dtype) -> Tensor:
    """Pixels of each 3x3 window (padding 1, stride 1) inside an ``h`` x ``w`` map: (H, W)."""

    def inside(n: int) -> Tensor:
        centre = torch.arange(n)
        return (torch.clamp(centre + 1, max=n - 1) - torch.clamp(centre - 1, min=0) + 1).to(dtype)

    return inside(h).view(-1, 1) * inside(w).view(1, -1)


def _box(x: Tensor) -> Tensor:
    """Sums over the 3x3 windows (zero padding 1, stride 1) of ``x``: columns, then rows."""
    h, w = x.shape[-2:]
    p = F.pad(x, (1, 1, 1, 1))
    rows = p[..., 0:w] + p[..., 1 : w + 1] + p[..., 2 : w + 2]
    return rows[..., 0:h, :] + rows[..., 1 : h + 1, :] + rows[..., 2 : h + 2, :]


class _SeparableAvgPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return _box(x) / _counts(x.shape[2], x.shape[3], x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return _box(grad / _counts(grad.shape[2], grad.shape[3], grad.dtype))


def separable_avg(x: Tensor, stride: int) -> bool:
    """Whether ``avg_pool3x3`` sums ``x`` separably: stride 1, CPU maps of 7x7 or larger."""
    return stride == 1 and _cpu_float_maps(x) and x.shape[2] * x.shape[3] >= SEPARABLE_FROM_PIXELS


def avg_pool3x3(x: Tensor, stride: int) -> Tensor:
    """``avg_pool2d(x, 3, stride, padding=1, count_include_pad=False)`` (up to float rounding)."""
    if separable_avg(x, stride):
        return _SeparableAvgPool.apply(x)
    return F.avg_pool2d(x, 3, stride, 1, count_include_pad=False)


def _fast(module: nn.Module) -> bool:
    return module.training and not torch.jit.is_tracing() and not torch.compiler.is_compiling()


class MaxPool3x3(nn.MaxPool2d):
    """``nn.MaxPool2d(3, stride, padding=1)`` whose training forward is ``max_pool3x3`` (the rest
    of the time, and in TorchScript, ``max_pool2d`` itself)."""

    def __init__(self, stride: int) -> None:
        super().__init__(3, stride=stride, padding=1)
        self.step = stride

    def forward(self, x: Tensor) -> Tensor:
        # TorchScript skips the block a lone ``not is_scripting()`` guards: it compiles the pool
        if not torch.jit.is_scripting():  # noqa: SIM102
            if _fast(self):
                return self._pool(x)
        return F.max_pool2d(x, 3, self.step, 1)  # what ``nn.MaxPool2d`` computes

    @torch.jit.unused
    def _pool(self, x: Tensor) -> Tensor:
        return max_pool3x3(x, self.step)


class AvgPool3x3(nn.AvgPool2d):
    """``nn.AvgPool2d(3, stride, padding=1, count_include_pad=False)`` whose training forward is
    ``avg_pool3x3``."""

    def __init__(self, stride: int) -> None:
        super().__init__(3, stride=stride, padding=1, count_include_pad=False)
        self.step = stride

    def forward(self, x: Tensor) -> Tensor:
        if not torch.jit.is_scripting():  # noqa: SIM102
            if _fast(self):
                return self._pool(x)
        return F.avg_pool2d(x, 3, self.step, 1, count_include_pad=False)

    @torch.jit.unused
    def _pool(self, x: Tensor) -> Tensor:
        return avg_pool3x3(x, self.step)
