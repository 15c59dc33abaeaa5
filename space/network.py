"""The network built from a genotype (DARTS's evaluation network), the macro layout it shares with
the search supernet, and its multiply-accumulates computed from the layout alone.

Layout (Liu et al.): a stem, ``layers`` cells with reduction cells at 1/3 and 2/3 of the depth
(channels doubled there), global average pooling and a linear classifier. The ``cifar`` stem is a
3x3 conv to ``3 * channels`` at full resolution (also used for the small inputs of MNIST and the 8x8
digits); the ``imagenet`` stem is DARTS's three stride-2 3x3 convs. An optional auxiliary head
reads the cell after the second reduction; drop-path drops whole non-identity edges.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from space.genotypes import Genotype
from space.operations import OPS, FactorizedReduce, ReLUConvBN, bn_macs, op_macs, out_size

StemKind = Literal["cifar", "imagenet"]

# Inputs at least this large get the ImageNet stem under "auto" (for ResNets the 7x7 stride-2 conv
# and max-pool, for genotype networks DARTS's three stride-2 convs); smaller ones (8x8 digits,
# 28x28 MNIST, 32x32 CIFAR, 64x64 Tiny-ImageNet) keep their resolution in the stem.
IMAGENET_STEM_MIN_SIZE = 112


@dataclass(frozen=True)
class CellPlan:
    """One cell's channels and input sizes: ``s0`` (two cells back) is ``c_pp x size_pp``,
    ``s1`` (previous cell) is ``c_p x size``; the cell's operations work on ``c`` channels."""

    index: int
    reduction: bool
    reduction_prev: bool
    c_pp: int
    c_p: int
    c: int
    size_pp: int
    size: int

    @property
    def out_size(self) -> int:
        return out_size(self.size, 2) if self.reduction else self.size

    def input_size(self, node: int) -> int:
        """Spatial size of a node's output: inputs 0 and 1 after preprocessing, then the cell's."""
        return self.size if node < 2 else self.out_size

    def stride(self, node: int) -> int:
        return 2 if self.reduction and node < 2 else 1


def edge_count(steps: int) -> int:
    """Edges of a search cell with ``steps`` nodes: node j reads the two inputs and nodes 0..j-1."""
    return sum(2 + j for j in range(steps))


def edge_inputs(steps: int) -> list[tuple[int, int]]:
    """``(node, input)`` of each edge of a search cell, in DARTS's order (node 0 reads inputs 0
    and 1, ...)."""
    return [(j, i) for j in range(steps) for i in range(2 + j)]


def stem_kind(input_size: int) -> StemKind:
    return "imagenet" if input_size >= IMAGENET_STEM_MIN_SIZE else "cifar"


def layout(
    *, channels: int, layers: int, input_size: int, multiplier: int, stem: StemKind
) -> tuple[list[CellPlan], int, int]:
    """The cells' plans, and the channels and size of the last cell's output."""
    if channels < 2 or channels % 2:
        raise ValueError(f"channels: must be an even integer >= 2, got {channels}")
    if layers < 3:
        raise ValueError(f"layers: must be >= 3 (reductions at 1/3 and 2/3), got {layers}")
    if stem == "imagenet":
        size_pp = out_size(out_size(input_size, 2), 2)
        size = out_size(size_pp, 2)
        c_pp, c_p, c, reduction_prev = channels, channels, channels, True
    else:
        size_pp = size = input_size
        c_pp, c_p, c, reduction_prev = 3 * channels, 3 * channels, channels, False
    plans = []
    for i in range(layers):
        reduction = i in (layers // 3, 2 * layers // 3)
        c = 2 * c if reduction else c
        plan = CellPlan(i, reduction, reduction_prev, c_pp, c_p, c, size_pp, size)
        plans.append(plan)
        reduction_prev = reduction
        c_pp, c_p = c_p, multiplier * c
        size_pp, size = size, plan.out_size
    return plans, c_p, size


def reduction_indices(layers: int) -> tuple[int, int]:
    return layers // 3, 2 * layers // 3


# ------------------------------------------------------------------------------------------------
# Building blocks shared with the supernet
# ------------------------------------------------------------------------------------------------


def make_stem(kind: StemKind, in_chans: int, channels: int) -> tuple[nn.Module, nn.Module | None]:
    if kind == "imagenet":
        half = channels // 2
        stem0 = nn.Sequential(
            nn.Conv2d(in_chans, half, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            nn.Conv2d(half, channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        stem1 = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        return stem0, stem1
    return (
        nn.Sequential(
            nn.Conv2d(in_chans, 3 * channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(3 * channels),
        ),
        None,
    )


def preprocessing(plan: CellPlan, affine: bool) -> tuple[nn.Module, nn.Module]:
    pre0: nn.Module = (
        FactorizedReduce(plan.c_pp, plan.c, affine)
        if plan.reduction_prev
        else ReLUConvBN(plan.c_pp, plan.c, 1, 1, 0, affine)
    )
    return pre0, ReLUConvBN(plan.c_p, plan.c, 1, 1, 0, affine)


def stem_macs(kind: StemKind, in_chans: int, channels: int, input_size: int) -> int:
    if kind == "imagenet":
        half = channels // 2
        s1 = out_size(input_size, 2)
        s2 = out_size(s1, 2)
        s3 = out_size(s2, 2)
        return (
            s1 * s1 * half * in_chans * 9
            + bn_macs(half, s1 * s1)
            + s2 * s2 * channels * half * 9
            + bn_macs(channels, s2 * s2)
            + s3 * s3 * channels * channels * 9
            + bn_macs(channels, s3 * s3)
        )
    hw = input_size * input_size
    return hw * 3 * channels * in_chans * 9 + bn_macs(3 * channels, hw)


def preprocessing_macs(plan: CellPlan, affine: bool = True) -> int:
    hw = plan.size * plan.size
    if plan.reduction_prev:
        pre0 = 2 * hw * (plan.c // 2) * plan.c_pp + bn_macs(plan.c, hw, affine)
    else:
        pre0 = hw * plan.c * plan.c_pp + bn_macs(plan.c, hw, affine)
    return pre0 + hw * plan.c * plan.c_p + bn_macs(plan.c, hw, affine)


def head_macs(c_last: int, size_last: int, num_classes: int) -> int:
    """Adaptive average pooling to 1x1 and the linear classifier."""
    return (size_last * size_last + 1) * c_last + c_last * num_classes


def drop_path(x: Tensor, drop_prob: float) -> Tensor:
    """Zero whole samples of an edge's output with probability ``drop_prob`` (rescaled)."""
    keep = 1.0 - drop_prob
    mask = torch.empty(x.size(0), 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x / keep * mask


# ------------------------------------------------------------------------------------------------
# The network from a genotype
# ------------------------------------------------------------------------------------------------


class Cell(nn.Module):
    def __init__(self, genotype: Genotype, plan: CellPlan) -> None:
        super().__init__()
        self.preprocess0, self.preprocess1 = preprocessing(plan, affine=True)
        edges = genotype.reduce if plan.reduction else genotype.normal
        self.concat = genotype.reduce_concat if plan.reduction else genotype.normal_concat
        self.inputs = [i for _, i in edges]
        self.ops = nn.ModuleList(OPS[op](plan.c, plan.stride(i), True) for op, i in edges)
        self.drop_prob = 0.0
        self.droppable = [not isinstance(op, nn.Identity) for op in self.ops]

    def forward(self, s0: Tensor, s1: Tensor) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        first: Tensor | None = None  # a node's first input, waiting for its second
        for k, edge in enumerate(self.ops):  # scriptable: a ModuleList is iterated, not indexed
            h = edge(states[self.inputs[k]])
            if self.training and self.drop_prob > 0 and self.droppable[k]:
                h = drop_path(h, self.drop_prob)
            if k % 2 == 0:
                first = h
            else:
                assert first is not None
                states.append(first + h)
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """DARTS's auxiliary classifier (``AuxiliaryHeadCIFAR``): on the 8x8 maps after the second
    reduction of a 32x32 input (any 8-10 px map), its ``AvgPool2d(5, stride=3)`` to 2x2; on other
    sizes adaptive pooling to 2x2 (the same parameters, other windows)."""

    def __init__(self, channels: int, num_classes: int, size: int = 8) -> None:
        super().__init__()
        reference = size >= 5 and (size - 5) // 3 + 1 == 2
        pool: nn.Module = (
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False)
            if reference
            else nn.AdaptiveAvgPool2d(2)
        )
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            pool,
            nn.Conv2d(channels, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(768, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x).flatten(1))


class GenotypeNetwork(nn.Module):
    """DARTS's evaluation network for a genotype, with the zoo's interface (``forward_features``,
    ``forward_head``, a linear classifier ``fc``). With ``auxiliary`` the logits of the auxiliary
    head are left in ``aux_logits`` after a training-mode forward (None otherwise)."""

    def __init__(
        self,
        genotype: Genotype,
        *,
        channels: int,
        layers: int,
        num_classes: int,
        in_chans: int = 3,
        input_size: int = 32,
        stem: StemKind | Literal["auto"] = "auto",
        auxiliary: bool = False,
        drop_path_prob: float = 0.0,
    ) -> None:
        super().__init__()
        genotype.check()
        self.genotype = genotype
        self.channels, self.layers = channels, layers
        self.stem_kind: StemKind = stem_kind(input_size) if stem == "auto" else stem
        self.drop_path_prob = drop_path_prob
        plans, c_last, _ = layout(
            channels=channels,
            layers=layers,
            input_size=input_size,
            multiplier=len(genotype.normal_concat),
            stem=self.stem_kind,
        )
        if len(genotype.reduce_concat) != len(genotype.normal_concat):
            raise ValueError("genotype: normal_concat and reduce_concat must have the same length")
        self.stem0, self.stem1 = make_stem(self.stem_kind, in_chans, channels)
        self.cells = nn.ModuleList(Cell(genotype, plan) for plan in plans)
        aux_at = reduction_indices(layers)[1]
        self.aux_index = aux_at
        self.auxiliary = (
            AuxiliaryHead(
                len(genotype.normal_concat) * plans[aux_at].c,
                num_classes,
                size=plans[aux_at].out_size,
            )
            if auxiliary
            else None
        )
        self.aux_logits: Tensor | None = None
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_last, num_classes)
        self.num_features = c_last

    def schedule(self, epoch: int, epochs: int) -> None:
        """DARTS's drop-path schedule: the probability grows linearly to ``drop_path_prob``."""
        for cell in self.cells:
            assert isinstance(cell, Cell)
            cell.drop_prob = self.drop_path_prob * epoch / max(epochs, 1)

    def forward_features(self, x: Tensor) -> Tensor:
        s0 = self.stem0(x)
        s1 = self.stem1(s0) if self.stem1 is not None else s0
        self.aux_logits = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1)
            if i == self.aux_index and self.auxiliary is not None and self.training:
                self.aux_logits = self.auxiliary(s1)
        return s1

    def forward_head(self, features: Tensor) -> Tensor:
        return self.fc(self.global_pool(features).flatten(1))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def genotype_macs(
    genotype: Genotype,
    *,
    channels: int,
    layers: int,
    num_classes: int,
    in_chans: int,
    input_size: int,
    stem: StemKind | Literal["auto"] = "auto",
) -> int:
    """Multiply-accumulates of ``GenotypeNetwork(...)`` at inference, from the layout alone (equal
    to the product counter's figure; tested)."""
    kind = stem_kind(input_size) if stem == "auto" else stem
    plans, c_last, size_last = layout(
        channels=channels,
        layers=layers,
        input_size=input_size,
        multiplier=len(genotype.normal_concat),
        stem=kind,
    )
    total = stem_macs(kind, in_chans, channels, input_size) + head_macs(
        c_last, size_last, num_classes
    )
    for plan in plans:
        edges = genotype.reduce if plan.reduction else genotype.normal
        total += preprocessing_macs(plan)
        total += sum(op_macs(op, plan.c, plan.input_size(i), plan.stride(i)) for op, i in edges)
    return total
