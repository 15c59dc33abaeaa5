"""The DARTS operations as data: ``PRIMITIVES`` and ``OPS`` (name -> constructor), as the reference
DARTS code (Liu et al., ``cnn/operations.py``) defines them, the STACNAS operation groups, and each
operation's multiply-accumulates in the product counter's convention (``space.flops``, thop), so
the search's expected-FLOPs term and the derived network's counted MFLOPs agree op by op.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

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
    """ReLU, depthwise dilated conv, pointwise conv, BN."""

    def __init__(
        self, c: int, kernel: int, stride: int, padding: int, dilation: int, affine: bool
    ) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c, c, kernel, stride, padding, dilation=dilation, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c, affine=affine),
        )


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
    "avg_pool_3x3": lambda c, stride, affine: nn.AvgPool2d(
        3, stride=stride, padding=1, count_include_pad=False
    ),
    "max_pool_3x3": lambda c, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1),
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


def relu_conv_bn_macs(c_in: int, c_out: int, size: int, affine: bool = True) -> int:
    """ReLUConvBN with a 1x1 stride-1 conv (the cells' preprocessing)."""
    return size * size * c_out * c_in + bn_macs(c_out, size * size, affine)


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
