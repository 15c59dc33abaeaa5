"""Zoo models shaped for a dataset, their complexity there, and specs that rebuild them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from distill.data import DatasetInfo
from space.flops import Complexity, count
from space.zoo import MODELS, Backbone, Stem, create_model


def build_model(
    name: str, info: DatasetInfo, *, width: float = 1.0, stem: Stem = "auto"
) -> Backbone:
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
    """Everything needed to rebuild a network (saved beside its weights)."""

    model: str
    width: float = 1.0
    num_classes: int = 10
    in_chans: int = 3
    input_size: int = 32
    stem: Stem = "auto"
    stage_widths: tuple[int, ...] | None = None  # explicit channels per stage (model separation)

    @classmethod
    def for_dataset(cls, model: str, info: DatasetInfo, *, width: float = 1.0) -> NetSpec:
        return cls(model, width, info.num_classes, info.in_chans, info.image_size)

    def __post_init__(self) -> None:
        if self.stage_widths is not None:  # lists come back from JSON and torch.load
            object.__setattr__(self, "stage_widths", tuple(int(c) for c in self.stage_widths))
        if self.model not in MODELS:
            raise ValueError(f"model: unknown model {self.model!r}; allowed: {', '.join(MODELS)}")

    def build(self) -> Backbone:
        return create_model(
            self.model,
            num_classes=self.num_classes,
            in_chans=self.in_chans,
            input_size=self.input_size,
            width=self.width,
            stem=self.stem,
            stage_widths=self.stage_widths,
        )

    @property
    def label(self) -> str:
        if self.stage_widths is not None:
            return f"{self.model}[{'-'.join(map(str, self.stage_widths))}]"
        return self.model if self.width == 1 else f"{self.model}x{self.width:g}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
