"""FLOPs and parameter accounting: ONE counter for every network in the product.

MFLOPs here are millions of multiply-accumulates as counted by thop (convolutions and linear layers
as MACs, plus thop's per-element counts for normalisation, activations and pooling); this is the
"MFLOPs" of the ResKD paper (ResNet-20 41, ResNet-110 255, ResNet-18 1821, ResNet-50 4117).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import thop
import torch
from thop import vision
from torch import nn

from space.pooling import AvgPool3x3, MaxPool3x3

CustomOps = dict[type[nn.Module], Callable[[nn.Module, tuple[torch.Tensor, ...], Any], None]]

# thop finds its hooks by a module's exact type: the poolings that subclass PyTorch's count as
# PyTorch's do (average pooling 1 per output element, max pooling 0)
POOLINGS: CustomOps = {
    AvgPool3x3: vision.basic_hooks.count_avgpool,
    MaxPool3x3: vision.basic_hooks.zero_ops,
}


@dataclass(frozen=True)
class Complexity:
    """Parameters and multiply-accumulates of one forward pass on one sample."""

    params: int
    macs: int

    @property
    def mflops(self) -> float:
        return self.macs / 1e6

    @property
    def mparams(self) -> float:
        return self.params / 1e6

    def to_dict(self) -> dict[str, float | int]:
        return {**asdict(self), "mflops": self.mflops, "mparams": self.mparams}


def count_parameters(model: nn.Module) -> int:
    """Parameters of the deployed network: an auxiliary head (training only) is left out, as
    DARTS's ``count_parameters_in_MB`` does."""
    return sum(p.numel() for name, p in model.named_parameters() if "auxiliary" not in name)


def count(
    model: nn.Module,
    *,
    input_shape: tuple[int, ...],
    custom_ops: CustomOps | None = None,
) -> Complexity:
    """Count ``model`` on one input of ``input_shape`` (C, H, W), in eval mode, on the CPU.

    The model itself is left untouched (thop attaches hooks and buffers to a copy).
    ``custom_ops`` maps module types thop does not know to counting hooks, in thop's convention.
    """
    probe = copy.deepcopy(model).cpu().eval()
    x = torch.zeros(1, *input_shape)
    with torch.no_grad():
        macs, _ = thop.profile(
            probe, inputs=(x,), custom_ops={**POOLINGS, **(custom_ops or {})}, verbose=False
        )
    return Complexity(params=count_parameters(model), macs=round(float(macs)))
