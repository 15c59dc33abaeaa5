"""The views a network sees of an image: the test view (the single original view at the
dataset's size) and the training view (a dataset's augmentation protocol, then normalisation).

A protocol is a function of the image size giving the random steps before normalisation; a
dataset names its own (``DatasetEntry.augmentation``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torchvision.transforms import v2

from distill.catalog import DatasetEntry, DatasetInfo

Transform = Callable[[Any], Tensor]


class FitSquare:
    """An image that is not ``size`` x ``size``: short side to ``size`` (bilinear, antialiased),
    then centre crop. An image of that size passes unchanged (images keep their size unless a
    config resizes them). Works on PIL images and on (..., H, W) tensors alike."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: Any) -> Any:
        if list(v2.functional.get_size(image)) == [self.size, self.size]:
            return image
        image = v2.functional.resize(image, [self.size], antialias=True)
        return v2.functional.center_crop(image, [self.size])


# --------------------------------------------------------------------------------------------
# Augmentation protocols
# --------------------------------------------------------------------------------------------


def crop_flip(size: int) -> list[Transform]:
    """He et al.'s CIFAR protocol: pad 4 (at 32 pixels), random crop, horizontal flip."""
    return [FitSquare(size), v2.RandomCrop(size, padding=size // 8), v2.RandomHorizontalFlip()]


def resized_crop_flip(size: int) -> list[Transform]:
    """ImageNet's (and ResKD's Tiny-ImageNet's): random resized crop, horizontal flip."""
    return [v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()]


def shift(size: int) -> list[Transform]:
    """Digits (and small images of unknown content): shifts only, no mirroring (pad 2 on 28x28
    MNIST, 1 on 8x8 digits)."""
    return [FitSquare(size), v2.RandomCrop(size, padding=max(1, size // 14))]


def by_size(size: int) -> list[Transform]:
    """Images of unknown content: ImageNet's protocol above 64 pixels, else shifts."""
    return resized_crop_flip(size) if size > 64 else shift(size)


# --------------------------------------------------------------------------------------------
# Views
# --------------------------------------------------------------------------------------------


def _to_normalized(info: DatasetInfo) -> list[Transform]:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(info.mean, info.std)]


def train_transform(dataset: DatasetEntry, *, augment: bool) -> Transform:
    """The dataset's training augmentation (or only normalisation) at its info's image size."""
    info = dataset.info
    if not augment:
        return test_transform(info)
    return v2.Compose([*dataset.random_steps(info.image_size), *_to_normalized(info)])


def test_transform(info: DatasetInfo, *, image_size: int | None = None) -> Transform:
    """The single original view at ``image_size`` (default: the dataset's): images of another
    size have their short side resized to it and are centre-cropped (ImageNet's protocol)."""
    return v2.Compose([FitSquare(image_size or info.image_size), *_to_normalized(info)])
