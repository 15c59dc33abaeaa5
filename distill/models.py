"""Zoo models shaped for a dataset, their complexity there, and specs that rebuild them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Final

from torch import nn

from distill.data import DatasetInfo
from space.flops import Complexity, count
from space.genotypes import Genotype
from space.network import GenotypeNetwork
from space.zoo import MODELS, Backbone, Stem, create_model

GENOTYPE_MODEL: Final = "genotype"  # NetSpec.model of a network built from a (searched) genotype


def build_model(
    name: str, info: DatasetInfo, *, width: float = 1.0, stem: Stem = "auto"
) -> nn.Module:
    """A zoo model for ``info``'s input channels, image size and class count."""
    return create_model(
        name,
        num_classes=info.num_classes,
        in_chans=info.in_chans,
        input_size=info.image_size,
        width=width,
        stem=stem,
    )


def complexity(model: nn.Module, info: DatasetInfo) -> Complexity:
    return count(model, input_shape=info.input_shape)


@dataclass(frozen=True)
class NetSpec:
    """Everything needed to rebuild a network (saved beside its weights): a zoo model by name, or
    (``model="genotype"``) the network of a genotype with ``channels`` and ``layers``."""

    model: str
    width: float = 1.0
    num_classes: int = 10
    in_chans: int = 3
    input_size: int = 32
    stem: Stem = "auto"
    stage_widths: tuple[int, ...] | None = None  # explicit channels per stage (model separation)
    genotype: str | None = None  # JSON, DARTS's format
    channels: int | None = None
    layers: int | None = None
    auxiliary: bool = False
    drop_path_prob: float = 0.0

    @classmethod
    def of_genotype(
        cls,
        genotype: Genotype,
        info: DatasetInfo,
        *,
        channels: int,
        layers: int,
        auxiliary: bool = False,
        drop_path_prob: float = 0.0,
    ) -> NetSpec:
        return cls(
            GENOTYPE_MODEL,
            1.0,
            info.num_classes,
            info.in_chans,
            info.image_size,
            genotype=genotype.to_json(),
            channels=channels,
            layers=layers,
            auxiliary=auxiliary,
            drop_path_prob=drop_path_prob,
        )

    @classmethod
    def for_dataset(cls, model: str, info: DatasetInfo, *, width: float = 1.0) -> NetSpec:
        return cls(model, width, info.num_classes, info.in_chans, info.image_size)

    def __post_init__(self) -> None:
        if self.stage_widths is not None:  # lists come back from JSON and torch.load
            object.__setattr__(self, "stage_widths", tuple(int(c) for c in self.stage_widths))
        if self.model == GENOTYPE_MODEL:
            if self.genotype is None or self.channels is None or self.layers is None:
                raise ValueError("model: a genotype network needs genotype, channels and layers")
            Genotype.from_json(self.genotype)  # names what is wrong with it
        elif self.family is None and self.model not in MODELS:
            raise ValueError(f"model: unknown model {self.model!r}; allowed: {', '.join(MODELS)}")

    @property
    def family(self) -> str | None:
        """``torchvision`` or ``timm`` for a network of those libraries (``family:arch``)."""
        family, sep, _ = self.model.partition(":")
        return family if sep else None

    def build(self) -> nn.Module:
        if self.family is not None:
            from distill.teachers import external

            return external(self.family, self.model.partition(":")[2], self.num_classes)
        if self.model == GENOTYPE_MODEL:
            assert self.genotype is not None and self.channels and self.layers
            stem = "auto" if self.stem == "auto" else self.stem
            return GenotypeNetwork(
                Genotype.from_json(self.genotype),
                channels=self.channels,
                layers=self.layers,
                num_classes=self.num_classes,
                in_chans=self.in_chans,
                input_size=self.input_size,
                stem=stem,
                auxiliary=self.auxiliary,
                drop_path_prob=self.drop_path_prob,
            )
        return create_model(
            self.model,
            num_classes=self.num_classes,
            in_chans=self.in_chans,
            input_size=self.input_size,
            width=self.width,
            stem=self.stem,
            stage_widths=self.stage_widths,
        )

    def build_backbone(self) -> Backbone:
        """A zoo ResNet with named stages (what feature-level distillation needs)."""
        net = self.build()
        if not isinstance(net, Backbone):
            raise ValueError(f"model: {self.model} has no named stages; use a ResNet of the zoo")
        return net

    @property
    def label(self) -> str:
        if self.model == GENOTYPE_MODEL:
            return f"nas[C{self.channels}L{self.layers}]"
        if self.stage_widths is not None:
            return f"{self.model}[{'-'.join(map(str, self.stage_widths))}]"
        return self.model if self.width == 1 else f"{self.model}x{self.width:g}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
