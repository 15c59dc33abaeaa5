"""Zoo models shaped for a dataset, and their complexity on that dataset's inputs."""

from __future__ import annotations

from distill.data import DatasetInfo
from space.flops import Complexity, count
from space.zoo import Backbone, Stem, create_model


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


def complexity(model: Backbone, info: DatasetInfo) -> Complexity:
    return count(model, input_shape=info.input_shape)
