"""The DARTS operations as data: ``PRIMITIVES`` and ``OPS`` (name -> constructor), as the reference
DARTS code (Liu et al., ``cnn/operations.py``) defines them, the STACNAS operation groups, and each
operation's multiply-accumulates in the product counter's convention (``space.flops``, thop), so
the search's expected-FLOPs term and the derived network's counted MFLOPs agree op by op.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from space.pooling import AvgPool3x3, MaxPool3x3

PRIMITIVES: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)

# STACNAS (Li et al. 2019): operations whose feature maps correlate strongly form a group; stage 1
# searches among one representative per group, stage 2 among the winning group's members.
GROUPS: dict[str, tuple[str, ...]] = {
    "zero": ("none",),
    "pooling": ("max_pool_3x3", "avg_pool_3x3"),
    "identity": ("skip_connect",),
    "sep_conv": ("sep_conv_3x3", "sep_conv_5x5"),
    "dil_conv": ("dil_conv_3x3", "dil_conv_5x5"),
}
REPRESENTATIVES: dict[str, str] = {
    "zero": "none",
    "pooling": "max_pool_3x3",
    "identity": "skip_connect",
    "sep_conv": "sep_conv_3x3",
    "dil_conv": "dil_conv_3x3",
}
GROUP_OF: dict[str, str] = {op: g for g, members in GROUPS.items() for op in members}


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class DilConv(nn.Sequential):
    """ReLU, depthwise dilated conv, pointwise conv, BN.

    Training on a CPU on small maps (``small_maps``) the two convs run as matrix products
    (``depthwise_pointwise``): there oneDNN's per-call work, not arithmetic, sets their cost.
    Evaluation, export and TorchScript keep the convs."""

    def __init__(
        self, c: int, kernel: int, stride: int, padding: int, dilation: int, affine: bool
    ) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c, c, kernel, stride, padding, dilation=dilation, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c, affine=affine),
        )

    def forward(self, x: Tensor) -> Tensor:
        # TorchScript skips the block a lone ``not is_scripting()`` guards: it compiles the convs
        if not torch.jit.is_scripting():  # noqa: SIM102
            if self.training and small_maps(x):
                return self[3](self._products(self[0](x)))
        return self[3](self[2](self[1](self[0](x))))

    @torch.jit.unused
    def _products(self, x: Tensor) -> Tensor:
        dw, pw = self[1], self[2]
        assert isinstance(dw, nn.Conv2d) and isinstance(pw, nn.Conv2d)
        padding = dw.padding
        assert isinstance(padding, tuple)
        return depthwise_pointwise(
            x, dw.weight, pw.weight, dw.stride[0], padding[0], dw.dilation[0]
        )


# ------------------------------------------------------------------------------------------------
# Small maps as matrix products. At the demo's shapes (4-16 channels on 8x8 to 2x2 maps, batch
# 64, 2 threads) one depthwise or pointwise conv costs oneDNN 0.1-0.2 ms forward and 0.25-0.7 ms
# backward (dilated kernels take its im2col path), almost all of it per-call work: its own kernels
# take about 10 us (its verbose log). A depthwise conv is a linear map per channel, (H'W' x HW),
# whose entries are kernel taps: ``M[c] = w[c] @ S`` with ``S`` the fixed 0/1 tap pattern of
# the kernel, stride, padding and dilation. The pair then is two batched matrix products.
# Forward and backward of one ReLU'd dw + pw pair, side by side (us, conv / products): 4 channels
# at 8x8 1205 / 606 (dilated 3x3), 957 / 605 (3x3); 8 at 4x4 1182 / 480; 16 at 2x2 2360 / 458
# (dilated 5x5); 16 at 7x7 2474 / 984 (dilated 3x3); 8 at 8x8 999 / 808; 32 at 4x4 1072 / 737;
# but 4 at 14x14 1414 / 2121: the products grow with the map's area squared. Same sums, other
# rounding (float32: within 1e-4 of the convs on unit-scale inputs, tested).
# ------------------------------------------------------------------------------------------------

SMALL_MAP_PIXELS = 64  # maps up to 8x8
SMALL_MAP_VALUES = 1024  # channels x pixels per sample: 16 channels at 8x8, 64 at 4x4


def small_maps(x: Tensor) -> bool:
    """Whether ``depthwise_pointwise`` is the faster way for this input: a CPU, float maps of
    at most ``SMALL_MAP_PIXELS`` pixels and ``SMALL_MAP_VALUES`` values per sample."""
    return (
        x.device.type == "cpu"
        and x.dim() == 4
        and x.dtype in (torch.float32, torch.float64)
        and x.shape[2] * x.shape[3] <= SMALL_MAP_PIXELS
        and x.shape[1] * x.shape[2] * x.shape[3] <= SMALL_MAP_VALUES
    )


@functools.lru_cache(maxsize=256)
def _taps(
    h: int, w: int, kernel: int, stride: int, padding: int, dilation: int, dtype: torch.dtype
) -> tuple[Tensor, int, int]:
    """``S`` (kernel^2, H'W' x HW): 1 where tap t of output pixel p reads input pixel q."""
    ho = (h + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    wo = (w + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    ky, kx, oy, ox = torch.meshgrid(
        *(torch.arange(n) for n in (kernel, kernel, ho, wo)), indexing="ij"
    )
    iy, ix = oy * stride - padding + ky * dilation, ox * stride - padding + kx * dilation
    valid = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
    taps = torch.zeros(kernel * kernel, ho * wo, h * w, dtype=dtype)
    t = (ky * kernel + kx)[valid]
    taps[t, (oy * wo + ox)[valid], (iy * w + ix)[valid]] = 1.0
    return taps.view(kernel * kernel, -1), ho, wo


def depthwise_pointwise(
    x: Tensor, dw: Tensor, pw: Tensor, stride: int, padding: int, dilation: int, groups: int = 1
) -> Tensor:
    """``conv2d(conv2d(x, dw, groups=C, ...), pw, groups=groups)`` (bias-free, square kernel) as
    matrix products: per channel its depthwise map ``M[c] = dw[c] @ S`` applied to the batch,
    then the pointwise weights of each group across its channels."""
    b, c, h, w = x.shape
    kernel = dw.shape[-1]
    taps, ho, wo = _taps(h, w, kernel, stride, padding, dilation, x.dtype)
    maps = (dw.reshape(c, kernel * kernel) @ taps).view(c, ho * wo, h * w)
    y = torch.bmm(x.reshape(b, c, h * w).transpose(0, 1), maps.transpose(1, 2))  # (C, B, H'W')
    out = pw.shape[0]
    z = torch.bmm(
        pw.reshape(groups, out // groups, c // groups), y.reshape(groups, c // groups, -1)
    )
    return z.view(out, b, ho, wo).transpose(0, 1)


DENSE_PRODUCT_VALUES = 32768  # (C x H x W) x (C' x H' x W'): 16 to 64 channels at 2x2


def dense_as_product(x: Tensor, out_channels: int, stride: int) -> bool:
    """Whether ``conv_as_product`` is the faster way for a dense conv on this input (CPU)."""
    _, c, h, w = x.shape
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and c * h * w * out_channels * ho * wo <= DENSE_PRODUCT_VALUES
    )


def conv_as_product(x: Tensor, weight: Tensor, stride: int, padding: int, dilation: int) -> Tensor:
    """``conv2d(x, weight, ...)`` (dense, bias-free, square kernel) as one matrix product: the
    conv is a linear map from C x H x W to C' x H' x W' whose entries are kernel taps."""
    b, c, h, w = x.shape
    out, kernel = weight.shape[0], weight.shape[-1]
    taps, ho, wo = _taps(h, w, kernel, stride, padding, dilation, x.dtype)
    maps = (weight.reshape(out * c, kernel * kernel) @ taps).view(out, c, ho * wo, h * w)
    matrix = maps.permute(1, 3, 0, 2).reshape(c * h * w, out * ho * wo)
    return (x.reshape(b, c * h * w) @ matrix).view(b, out, ho, wo)


class SepConv(nn.Sequential):
    """Two stacked (ReLU, depthwise conv, pointwise conv, BN); only the first may stride."""

    def __init__(self, c: int, kernel: int, stride: int, padding: int, affine: bool) -> None:
        super().__init__(
            DilConv(c, kernel, stride, padding, 1, affine),
            DilConv(c, kernel, 1, padding, 1, affine),
        )


class Zero(nn.Module):
    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Halve the resolution with two 1x1 stride-2 convs offset by one pixel (odd sizes are padded
    on the bottom/right so both halves agree; the reference code assumes even sizes)."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True) -> None:
        super().__init__()
        if c_out % 2:
            raise ValueError(f"channels: FactorizedReduce needs an even channel count, got {c_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(x)
        shifted = F.pad(x, (0, x.shape[3] % 2, 0, x.shape[2] % 2))[:, :, 1:, 1:]
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


OpFactory = Callable[[int, int, bool], nn.Module]
OPS: dict[str, OpFactory] = {
    "none": lambda c, stride, affine: Zero(stride),
    # ``nn.AvgPool2d(3, stride, 1, count_include_pad=False)`` and ``nn.MaxPool2d(3, stride, 1)``,
    # whose training forward on a CPU is faster (``space.pooling``)
    "avg_pool_3x3": lambda c, stride, affine: AvgPool3x3(stride),
    "max_pool_3x3": lambda c, stride, affine: MaxPool3x3(stride),
    "skip_connect": lambda c, stride, affine: (
        nn.Identity() if stride == 1 else FactorizedReduce(c, c, affine)
    ),
    "sep_conv_3x3": lambda c, stride, affine: SepConv(c, 3, stride, 1, affine),
    "sep_conv_5x5": lambda c, stride, affine: SepConv(c, 5, stride, 2, affine),
    "dil_conv_3x3": lambda c, stride, affine: DilConv(c, 3, stride, 2, 2, affine),
    "dil_conv_5x5": lambda c, stride, affine: DilConv(c, 5, stride, 4, 2, affine),
}


# ------------------------------------------------------------------------------------------------
# Multiply-accumulates in thop's convention: conv = output elements x (C_in / groups) x k x k,
# BatchNorm = 2 per element (4 when affine), ReLU and max pooling 0, average pooling 1 per output
# element, linear = in_features x outputs, adaptive average pooling (kernel + 1) per output.
# ------------------------------------------------------------------------------------------------


def out_size(size: int, stride: int) -> int:
    """Spatial size after a 'same'-padded op of this stride (every DARTS op keeps this rule)."""
    return (size - 1) // stride + 1


def bn_macs(c: int, hw: int, affine: bool = True) -> int:
    return (4 if affine else 2) * c * hw


def op_macs(name: str, c: int, size: int, stride: int, affine: bool = True) -> int:
    """Multiply-accumulates of ``OPS[name](c, stride, affine)`` on a ``c x size x size`` input."""
    o = out_size(size, stride)
    hw = o * o
    if name in ("none", "max_pool_3x3") or (name == "skip_connect" and stride == 1):
        return 0
    if name == "avg_pool_3x3":
        return c * hw
    if name == "skip_connect":  # FactorizedReduce: two 1x1 convs to c/2 each, BN over c
        return 2 * hw * (c // 2) * c + bn_macs(c, hw, affine)
    kernel = int(name[-1])
    dil_conv = hw * c * kernel * kernel + hw * c * c + bn_macs(c, hw, affine)
    if name.startswith("dil_conv"):
        return dil_conv
    if name.startswith("sep_conv"):
        return 2 * dil_conv
    raise ValueError(f"operation: unknown operation {name!r}; allowed: {', '.join(PRIMITIVES)}")
