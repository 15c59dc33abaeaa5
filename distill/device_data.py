"""Data that lives on the training device: an in-memory set of uint8 images (digits, MNIST,
CIFAR-10/100) moved there once, its augmentation run as batched tensor ops on the device.

:func:`on_device` recognises such a set under a dataset's transform: the images as uint8
(``TensorImages.images``, (N, C, H, W), or torchvision's in-memory sets' ``data``, (N, H, W, C)
or (N, H, W)), and a transform made only of steps it can batch: ``FitSquare`` (applied once, to
the whole set), ``RandomCrop`` with constant zero padding (torchvision's default), a
``RandomHorizontalFlip``, then the scaling to [0, 1] and the normalisation every view ends
with. Anything else (``RandomResizedCrop``, a third party's step) keeps the per-sample path.

:class:`DeviceImages` then serves a batch as: gather the uint8 images by index, crop and flip
them with one gather each (a crop is a window at offsets drawn uniformly from 0..2 x padding in
each direction of the zero-padded image, a flip reverses the window's columns with the flip's
probability, per sample, as torchvision draws them), scale and normalise. The draws come from
the loader's CPU generator, so they are the same on every device and every rank.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F
from torchvision.transforms import v2

from distill.datasets.transforms import FitSquare

# The share of a CUDA device's memory an in-memory set may take there (the rest: the training)
DEVICE_SHARE = 0.25


@dataclass(frozen=True)
class Augment:
    """A batched crop-and-flip: ``pad`` pixels of zeros each side then a crop back to the image
    size (0: no crop), a horizontal flip with probability ``flip``."""

    pad: int = 0
    flip: float = 0.0

    @property
    def draws(self) -> bool:
        return self.pad > 0 or self.flip > 0

    def draw(self, n: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """Per sample: the crop's (row, column) offsets in the padded image and whether it is
        flipped."""
        offsets = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=generator)
        flips = torch.rand(n, generator=generator) < self.flip
        return offsets, flips

    def apply(self, images: Tensor, offsets: Tensor, flips: Tensor) -> Tensor:
        """``images`` (B, C, H, W) cropped at ``offsets`` and flipped where ``flips``."""
        b, c, h, w = images.shape
        padded = F.pad(images, (self.pad,) * 4) if self.pad else images
        offsets, flips = offsets.to(images.device), flips.to(images.device)
        cols = torch.arange(w, device=images.device).expand(b, w)
        cols = torch.where(flips[:, None], w - 1 - cols, cols) + offsets[:, 1:]
        rows = torch.arange(h, device=images.device) + offsets[:, :1]
        batch = torch.arange(b, device=images.device)[:, None, None, None]
        channel = torch.arange(c, device=images.device)[None, :, None, None]
        return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


@dataclass(frozen=True)
class View:
    """What :func:`parse_view` reads of a transform: the size to fit, the augmentation and the
    normalisation."""

    size: int | None
    augment: Augment
    mean: tuple[float, ...]
    std: tuple[float, ...]


def parse_view(transform: Any) -> View | None:
    """The batched form of ``transform`` (a ``v2.Compose`` of the steps the module names), or
    None when one of its steps has none."""
    steps = getattr(transform, "transforms", None)
    if not steps:
        return None
    size, pad, flip, scaled, mean, std = None, 0, 0.0, False, None, None
    for step in steps:
        if isinstance(step, FitSquare):
            size = step.size
        elif isinstance(step, v2.RandomCrop):
            same = len(set(step.padding or [0])) == 1 and list(step.size) == [size] * 2
            if not same or step.padding_mode != "constant" or step.fill != 0:
                return None
            pad = (step.padding or [0])[0]
        elif isinstance(step, v2.RandomHorizontalFlip):
            flip = float(step.p)
        elif isinstance(step, v2.ToImage):
            continue
        elif isinstance(step, v2.ToDtype) and step.dtype == torch.float32 and step.scale:
            scaled = True
        elif isinstance(step, v2.Normalize) and scaled:
            mean, std = tuple(step.mean), tuple(step.std)
        else:
            return None
    if mean is None or std is None:
        return None
    return View(size, Augment(pad, flip), mean, std)


def uint8_images(dataset: Any) -> tuple[Tensor, Tensor] | None:
    """A set's images as one uint8 tensor (N, C, H, W) and its labels, if it holds them so."""
    images = getattr(dataset, "images", None)
    if isinstance(images, Tensor) and images.dtype == torch.uint8 and images.dim() == 4:
        return images, torch.as_tensor(dataset.targets, dtype=torch.long)
    data = getattr(dataset, "data", None)
    if isinstance(data, np.ndarray | Tensor) and data.dtype in (np.uint8, torch.uint8):
        x = torch.as_tensor(data)
        x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)
        return x.contiguous(), torch.as_tensor(list(dataset.targets), dtype=torch.long)
    return None


class DeviceImages:
    """An in-memory set of uint8 images held on ``device``, served in batches (see the module).
    ``batchable``: a batch needs no per-sample work (``distill.batching`` serves it by index)."""

    batchable = True

    def __init__(self, images: Tensor, targets: Tensor, view: View, device: torch.device) -> None:
        if view.size is not None:
            images = FitSquare(view.size)(images)
        self.images = images.to(device)
        self.targets = targets.to(device)
        self.view = view
        self.device = device

    def __len__(self) -> int:
        return len(self.images)

    @property
    def draws(self) -> bool:
        return self.view.augment.draws

    def batch_of(
        self, index: Tensor, *, take: slice = slice(None), generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """The samples at ``index`` (a global batch), this rank's ``take`` of them, augmented
        with draws for the whole global batch (so that the draws do not depend on the ranks)."""
        augment = self.view.augment
        draws = augment.draw(len(index), generator) if augment.draws else None
        index = index[take].to(self.device)
        x = self.images[index]
        if draws is not None:
            x = augment.apply(x, draws[0][take], draws[1][take])
        x = v2.functional.to_dtype(x, torch.float32, scale=True)  # as the per-sample view does
        x = v2.functional.normalize(x, list(self.view.mean), list(self.view.std))
        return x, self.targets[index]


# the sets already moved, per dataset and device: a dataset is copied to a device once
_HELD: weakref.WeakKeyDictionary[Any, dict[torch.device, DeviceImages]] = (
    weakref.WeakKeyDictionary()
)


def on_device(dataset: Any, device: torch.device) -> DeviceImages | None:
    """``dataset`` held on ``device`` with its augmentation batched, when it is an in-memory set
    of uint8 images whose transform batches (see the module) and, on a CUDA device, takes at most
    ``DEVICE_SHARE`` of its memory; else None. Moved once per dataset and device."""
    try:
        held_before = _HELD.get(dataset, {}).get(device)
    except TypeError:  # not weakly referenceable: never held
        return None
    if held_before is not None:
        return held_before
    made = _made_on(dataset, device)
    if made is not None:
        _HELD.setdefault(dataset, {})[device] = made
    return made


def _made_on(dataset: Any, device: torch.device) -> DeviceImages | None:
    held = uint8_images(dataset)
    view = parse_view(getattr(dataset, "transform", None))
    if held is None or view is None:
        return None
    images, targets = held
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        if images.numel() > DEVICE_SHARE * total:
            return None
    return DeviceImages(images, targets, view, device)
