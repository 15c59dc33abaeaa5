from __future__ import annotations

import pytest
import torch
from torch import nn

from space.flops import count
from space.zoo import create_model

# ResKD paper: ResNet-20 41, ResNet-110 255 (CIFAR), ResNet-18 1821, ResNet-50 4117 (ImageNet).
PAPER = [
    ("resnet20", 10, (3, 32, 32), 41),
    ("resnet110", 10, (3, 32, 32), 255),
    ("resnet18", 1000, (3, 224, 224), 1821),
    ("resnet50", 1000, (3, 224, 224), 4117),
]


@pytest.mark.parametrize(("name", "classes", "shape", "mflops"), PAPER, ids=[p[0] for p in PAPER])
def test_mflops_match_the_paper_within_1_5_percent(
    name: str, classes: int, shape: tuple[int, int, int], mflops: float
) -> None:
    model = create_model(name, num_classes=classes, in_chans=shape[0], input_size=shape[1])
    measured = count(model, input_shape=shape).mflops
    assert abs(measured - mflops) / mflops < 0.015, measured


def test_conv_and_linear_are_counted_as_multiply_accumulates() -> None:
    # 2 output channels x 4x4 positions x 3x3x1 kernel = 288 MACs; linear 32 -> 3 = 96 MACs.
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(32, 3))
    c = count(model, input_shape=(1, 4, 4))
    assert c.macs == 288 + 96
    assert c.params == 18 + 32 * 3 + 3


def test_counting_leaves_the_model_untouched() -> None:
    model = create_model("resnet8", num_classes=10)
    model.train()
    keys = set(model.state_dict())
    count(model, input_shape=(3, 32, 32))
    assert set(model.state_dict()) == keys
    assert model.training
    assert not any(hasattr(m, "total_ops") for m in model.modules())


def test_width_multiplier_cuts_mflops_quadratically() -> None:
    full = count(create_model("resnet20", num_classes=10), input_shape=(3, 32, 32))
    half = count(create_model("resnet20", num_classes=10, width=0.5), input_shape=(3, 32, 32))
    assert 0.22 < half.macs / full.macs < 0.3
    assert torch.tensor(half.mflops).item() == pytest.approx(half.macs / 1e6)
