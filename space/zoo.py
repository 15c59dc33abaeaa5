"""The model zoo: CIFAR ResNets of He et al. and torchvision's ResNets, with a width multiplier,
and the networks of the published genotypes (DARTS's ``darts_v1``, ``darts_v2``; StacNAS's
``stacnas_imagenet``).

Every ResNet here is a :class:`Backbone`: a stem, named stages and a pooled linear head, so that
``forward(x) == forward_head(forward_features(x))`` and ``forward_stages(x)`` gives the stage
outputs that feature-level distillation uses, on every model alike. Genotype networks
(``space.network``) have the same ``forward_features`` / ``forward_head`` / ``fc``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1

from space.catalog import CIFAR_DEPTHS, GENOTYPE_NAMES, MODEL_NAMES, TORCHVISION_ARCHS
from space.genotypes import GENOTYPES, SOURCES
from space.network import IMAGENET_STEM_MIN_SIZE, GenotypeNetwork, stem_kind

Stem = Literal["auto", "cifar", "imagenet"]


class Backbone(nn.Module):
    """stem -> named stages -> global average pool -> linear classifier."""

    # Python-side helpers TorchScript need not compile (``torch.jit.script`` of a zoo model)
    __jit_unused_properties__: ClassVar[list[str]] = ["stage_names"]

    def __init__(
        self,
        *,
        stem: nn.Module,
        stages: Iterable[tuple[str, nn.Module]],
        stage_channels: Iterable[int],
        num_classes: int,
    ) -> None:
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleDict(OrderedDict(stages))
        self.stage_channels: dict[str, int] = dict(
            zip(self.stages.keys(), stage_channels, strict=True)
        )
        self.num_features = list(self.stage_channels.values())[-1]
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes)

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(self.stages.keys())

    def forward_stages(self, x: Tensor) -> OrderedDict[str, Tensor]:
        """The output feature map of every stage, by stage name (the last one is the features)."""
        out: OrderedDict[str, Tensor] = OrderedDict()
        x = self.stem(x)
        for name, stage in self.stages.items():
            x = stage(x)
            out[name] = x
        return out

    def forward_features(self, x: Tensor) -> Tensor:
        """The last feature map, before pooling and classifier."""
        x = self.stem(x)
        for stage in self.stages.values():
            x = stage(x)
        return x

    def forward_head(self, features: Tensor) -> Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(features, 1), 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


def _init_weights(model: nn.Module) -> None:
    """He initialisation for convolutions, unit BN, as in He et al. and torchvision."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


# --------------------------------------------------------------------------------------------
# CIFAR ResNets (He et al. 2016, section 4.2): depth 6n+2, widths 16/32/64, identity shortcuts
# with zero-padded channels (option A), which gives the paper's 0.27M parameters for ResNet-20.
# --------------------------------------------------------------------------------------------


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample spatially and zero-pad the new channels (no parameters)."""

    def __init__(self, stride: int, extra_channels: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra_channels = extra_channels

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))


class CifarBasicBlock(nn.Module):
    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut: nn.Module = (
            PadShortcut(stride, channels - in_channels)
            if stride != 1 or in_channels != channels
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def _stage_widths(
    base: tuple[int, ...], width: float, stage_widths: tuple[int, ...] | None
) -> list[int]:
    if stage_widths is None:
        return [_scaled(c, width) for c in base]
    if len(stage_widths) != len(base) or min(stage_widths) < 1:
        raise ValueError(
            f"stage_widths: {len(base)} channel counts >= 1 (one per stage), got {stage_widths}"
        )
    return list(stage_widths)


def cifar_resnet(
    depth: int,
    *,
    num_classes: int,
    in_chans: int = 3,
    width: float = 1.0,
    stage_widths: tuple[int, ...] | None = None,
) -> Backbone:
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth: a CIFAR ResNet has depth 6n+2 with n >= 1, got {depth}")
    blocks = (depth - 2) // 6
    widths = _stage_widths((16, 32, 64), width, stage_widths)
    stem = nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False),
            bn1=nn.BatchNorm2d(widths[0]),
            relu=nn.ReLU(inplace=True),
        )
    )
    stages = []
    in_channels = widths[0]
    for index, channels in enumerate(widths):
        layer = []
        for b in range(blocks):
            stride = 2 if index > 0 and b == 0 else 1
            layer.append(CifarBasicBlock(in_channels, channels, stride))
            in_channels = channels
        stages.append((f"layer{index + 1}", nn.Sequential(*layer)))
    model = Backbone(stem=stem, stages=stages, stage_channels=widths, num_classes=num_classes)
    _init_weights(model)
    return model


# --------------------------------------------------------------------------------------------
# torchvision ResNets, assembled from torchvision's own blocks so that with width 1 and the
# ImageNet stem the parameters are exactly torchvision's (see ``load_torchvision_state_dict``).
# --------------------------------------------------------------------------------------------

_TV_LAYERS: dict[str, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


def torchvision_resnet(
    arch: str,
    *,
    num_classes: int,
    in_chans: int = 3,
    width: float = 1.0,
    input_size: int = 224,
    stem: Stem = "auto",
    stage_widths: tuple[int, ...] | None = None,
) -> Backbone:
    block, layers = _TV_LAYERS[arch]
    if stem == "auto":
        stem = "imagenet" if input_size >= IMAGENET_STEM_MIN_SIZE else "cifar"
    planes_per_stage = _stage_widths((64, 128, 256, 512), width, stage_widths)
    base = planes_per_stage[0]
    stem_layers: OrderedDict[str, nn.Module] = OrderedDict()
    if stem == "imagenet":
        stem_layers["conv1"] = nn.Conv2d(in_chans, base, 7, 2, 3, bias=False)
    else:
        stem_layers["conv1"] = nn.Conv2d(in_chans, base, 3, 1, 1, bias=False)
    stem_layers["bn1"] = nn.BatchNorm2d(base)
    stem_layers["relu"] = nn.ReLU(inplace=True)
    if stem == "imagenet":
        stem_layers["maxpool"] = nn.MaxPool2d(3, 2, 1)

    stages = []
    channels = []
    inplanes = base
    for index, blocks in enumerate(layers):
        planes = planes_per_stage[index]
        stride = 1 if index == 0 else 2
        downsample = None
        if stride != 1 or inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layer: list[nn.Module] = [block(inplanes, planes, stride, downsample)]
        inplanes = planes * block.expansion
        layer += [block(inplanes, planes) for _ in range(1, blocks)]
        stages.append((f"layer{index + 1}", nn.Sequential(*layer)))
        channels.append(inplanes)
    model = Backbone(
        stem=nn.Sequential(stem_layers),
        stages=stages,
        stage_channels=channels,
        num_classes=num_classes,
    )
    _init_weights(model)
    return model


def torchvision_keys(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A torchvision ResNet's state dict with the zoo's key names (``stem.``, ``stages.``)."""
    renamed = {}
    for key, value in state_dict.items():
        if key.startswith(("conv1.", "bn1.")):
            key = f"stem.{key}"
        elif key.startswith("layer"):
            key = f"stages.{key}"
        renamed[key] = value
    return renamed


def load_torchvision_state_dict(model: Backbone, state_dict: Mapping[str, Tensor]) -> None:
    """Load a torchvision ResNet checkpoint (e.g. a local ``resnet18-*.pth``) into a zoo model."""
    model.load_state_dict(torchvision_keys(state_dict))


# --------------------------------------------------------------------------------------------
# The registry: names arrive as strings from configs, the CLI and the API.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    description: str
    build: Callable[..., nn.Module]


def _cifar_entry(depth: int) -> ModelEntry:
    def build(
        *,
        num_classes: int,
        in_chans: int,
        width: float,
        input_size: int,
        stem: Stem,
        stage_widths: tuple[int, ...] | None,
    ) -> Backbone:
        del input_size, stem  # resolution-preserving by design
        return cifar_resnet(
            depth,
            num_classes=num_classes,
            in_chans=in_chans,
            width=width,
            stage_widths=stage_widths,
        )

    return ModelEntry(f"resnet{depth}", "cifar-resnet", f"CIFAR ResNet-{depth} (He et al.)", build)


def _tv_entry(arch: str) -> ModelEntry:
    def build(
        *,
        num_classes: int,
        in_chans: int,
        width: float,
        input_size: int,
        stem: Stem,
        stage_widths: tuple[int, ...] | None,
    ) -> Backbone:
        return torchvision_resnet(
            arch,
            num_classes=num_classes,
            in_chans=in_chans,
            width=width,
            input_size=input_size,
            stem=stem,
            stage_widths=stage_widths,
        )

    return ModelEntry(arch, "torchvision-resnet", f"torchvision {arch}", build)


def _genotype_entry(name: str) -> ModelEntry:
    genotype = GENOTYPES[name]

    def build(
        *,
        num_classes: int,
        in_chans: int,
        width: float,
        input_size: int,
        stem: Stem,
        stage_widths: tuple[int, ...] | None,
    ) -> nn.Module:
        if stage_widths is not None:
            raise ValueError(f"stage_widths: not supported by {name} (use width)")
        kind = stem_kind(input_size) if stem == "auto" else stem
        channels, layers = DARTS_EVAL[kind]
        return GenotypeNetwork(
            genotype,
            channels=max(2, 2 * round(channels * width / 2)),
            layers=layers,
            num_classes=num_classes,
            in_chans=in_chans,
            input_size=input_size,
            stem=kind,
        )

    return ModelEntry(name, "darts", f"{name.upper()} genotype ({SOURCES[name]})", build)


# DARTS's evaluation networks: 36 channels and 20 cells on CIFAR, 48 and 14 on ImageNet (the
# mobile setting StacNAS's ImageNet network is measured at too).
DARTS_EVAL: dict[str, tuple[int, int]] = {"cifar": (36, 20), "imagenet": (48, 14)}

MODELS: dict[str, ModelEntry] = {
    e.name: e
    for e in [
        *(_cifar_entry(d) for d in CIFAR_DEPTHS),
        *(_tv_entry(a) for a in TORCHVISION_ARCHS),
        *(_genotype_entry(n) for n in GENOTYPE_NAMES),
    ]
}
if (tuple(MODELS), set(_TV_LAYERS), set(GENOTYPES)) != (
    MODEL_NAMES,
    set(TORCHVISION_ARCHS),
    set(GENOTYPE_NAMES),
):
    raise RuntimeError("space.catalog's names and the zoo's entries differ")


def create_model(
    name: str,
    *,
    num_classes: int,
    in_chans: int = 3,
    input_size: int = 32,
    width: float = 1.0,
    stem: Stem = "auto",
    stage_widths: tuple[int, ...] | None = None,
) -> nn.Module:
    """Build a zoo model by name for inputs of ``in_chans x input_size x input_size``.

    ``width`` multiplies every layer's channel count (0.5 gives the ResNet-18-1/2 of Gao et al.);
    ``stage_widths`` instead sets each stage's channel count (bottleneck planes) explicitly.
    ``stem`` only matters for the torchvision ResNets (see ``IMAGENET_STEM_MIN_SIZE``).
    """
    if name not in MODELS:
        raise ValueError(f"model: unknown model {name!r}; allowed: {', '.join(MODELS)}")
    if num_classes < 1:
        raise ValueError(f"num_classes: must be >= 1, got {num_classes}")
    if in_chans < 1:
        raise ValueError(f"in_chans: must be >= 1, got {in_chans}")
    if not width > 0:
        raise ValueError(f"width: must be > 0, got {width}")
    if stem not in ("auto", "cifar", "imagenet"):
        raise ValueError(f"stem: must be one of auto, cifar, imagenet, got {stem!r}")
    return MODELS[name].build(
        num_classes=num_classes,
        in_chans=in_chans,
        width=width,
        input_size=input_size,
        stem=stem,
        stage_widths=tuple(stage_widths) if stage_widths is not None else None,
    )
