"""Datasets by name (``distill.catalog``'s registry), loaded with the papers' augmentation
protocols, and the seeded validation split D_v.

``load_dataset(name)`` reads a dataset through its registry entry; ``peek_info(name)`` says what
the networks will see of it without loading it. The built-in loaders live in
``distill.datasets`` (shipped arrays, CIFAR, image folders); a third party adds a dataset with one
``DatasetEntry`` and an entry point (``distill.catalog`` shows how), or ``register_dataset`` in
code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from distill.catalog import (  # re-exported: the names data users import
    DATASETS,
    DataBundle,
    DatasetEntry,
    DatasetError,
    DatasetInfo,
    Loader,
    LoadOptions,
    dataset_entry,
    dataset_info,
    register_dataset,
)
from distill.datasets.shipped import TensorImages
from distill.datasets.transforms import FitSquare, Transform, test_transform, train_transform

__all__ = [
    "DATASETS",
    "DataBundle",
    "DatasetEntry",
    "DatasetError",
    "DatasetInfo",
    "FitSquare",
    "LoadOptions",
    "Loader",
    "TensorImages",
    "Transform",
    "ValidationSplit",
    "dataset_info",
    "dataset_labels",
    "load_dataset",
    "num_samples",
    "peek_info",
    "register_dataset",
    "test_transform",
    "train_transform",
    "validation_split",
]


def _normalisation(info: DatasetInfo, name: str, values: Sequence[float] | None) -> DatasetInfo:
    """``info`` with a given ``mean`` or ``std`` (``name``), checked against its channels."""
    if values is None:
        return info
    values = tuple(float(v) for v in values)
    if len(values) != info.in_chans:
        raise DatasetError(
            f"{name}: {info.name} has {info.in_chans} channel(s); give "
            f"{info.in_chans} value(s), got {len(values)}"
        )
    if name == "std" and not all(v > 0 for v in values):
        raise DatasetError(f"std: every value must be > 0, got {list(values)}")
    return info.with_(**{name: values})


def load_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    augment: bool = True,
    download: bool = False,
    image_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    verify_checksums: bool = False,
) -> DataBundle:
    """Load a dataset by name with its training protocol (``augment=False``: no random views).

    Images keep their size (an image folder's: its first image's) unless ``image_size`` is given;
    ``mean`` and ``std`` replace the dataset's normalisation. Nothing is downloaded unless
    ``download`` is set.
    """
    dataset = dataset_entry(name)
    info = dataset.info
    if info.needs_root and root is None:
        raise DatasetError(f"root: dataset {name!r} is read from a local directory; give its path")
    if not info.needs_root and root is not None:
        raise DatasetError(f"root: dataset {name!r} ships with a package; it takes no root")
    if image_size is not None and not 1 <= image_size <= 4096:
        raise DatasetError(f"image_size: must be in 1..4096, got {image_size}")
    if image_size is not None:
        info = info.with_(image_size=image_size)
    info = _normalisation(_normalisation(info, "mean", mean), "std", std)
    options = LoadOptions(augment, download, image_size, verify_checksums)
    path = Path(root).expanduser() if root is not None else None
    return replace(dataset, info=info).read(path, options)


def peek_info(
    name: str,
    *,
    root: str | Path | None = None,
    image_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> DatasetInfo:
    """What the networks will see of a dataset (classes, channels, size, normalisation) without
    loading it: a dataset read from its directory (an image folder) is peeked at (its class
    folders listed, its first image's size read). A folder that is not there yet gives the
    catalog's entry (loading names the problem)."""
    dataset = dataset_entry(name)
    info = dataset.info
    if dataset.from_data and root is not None:
        with suppress(OSError, DatasetError):
            info = dataset.peeked(Path(root).expanduser(), LoadOptions(image_size=image_size))
    if image_size is not None:
        info = info.with_(image_size=image_size)
    if mean is not None:
        info = info.with_(mean=tuple(mean))
    if std is not None:
        info = info.with_(std=tuple(std))
    return info


def num_samples(dataset: Dataset[Any]) -> int:
    """``len`` of a map-style dataset (torch's ``Dataset`` type does not declare it)."""
    return len(dataset)  # type: ignore[arg-type]


def dataset_labels(dataset: Dataset[tuple[Tensor, int]]) -> list[int]:
    """The labels of a dataset without decoding its images."""
    if isinstance(dataset, Subset):
        labels = dataset_labels(dataset.dataset)
        return [labels[i] for i in dataset.indices]
    targets = getattr(dataset, "targets", None)
    if targets is None:
        return [int(dataset[i][1]) for i in range(len(dataset))]  # type: ignore[arg-type]
    return [int(t) for t in targets]


# --------------------------------------------------------------------------------------------
# The validation set D_v (ResKD, Algorithm 1): sampled uniformly from the training set
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ValidationSplit:
    """Indices of D_v in the training set, with what is needed to draw them again exactly."""

    seed: int
    num_train: int
    indices: tuple[int, ...] = field(repr=False)

    @property
    def size(self) -> int:
        return len(self.indices)

    @property
    def digest(self) -> str:
        payload = json.dumps([self.seed, self.num_train, list(self.indices)]).encode()
        return hashlib.sha256(payload).hexdigest()[:16]

    def subset(self, dataset: Dataset[tuple[Tensor, int]]) -> Subset[tuple[Tensor, int]]:
        if len(dataset) != self.num_train:  # type: ignore[arg-type]
            raise DatasetError(
                f"validation split: drawn from {self.num_train} training samples, "
                f"but this training set has {len(dataset)}"  # type: ignore[arg-type]
            )
        return Subset(dataset, list(self.indices))

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "num_train": self.num_train,
            "size": self.size,
            "digest": self.digest,
            "indices": list(self.indices),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValidationSplit:
        split = cls(int(data["seed"]), int(data["num_train"]), tuple(data["indices"]))
        if "digest" in data and data["digest"] != split.digest:
            raise DatasetError("validation split: digest does not match its indices")
        return split


def validation_split(
    num_train: int, *, seed: int, size: int | None = None, fraction: float | None = None
) -> ValidationSplit:
    """Sample D_v uniformly (without replacement) from ``num_train`` training samples."""
    if (size is None) == (fraction is None):
        raise DatasetError("validation split: give exactly one of size or fraction")
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise DatasetError(f"fraction: must be in (0, 1], got {fraction}")
        size = max(1, round(num_train * fraction))
    assert size is not None
    if not 1 <= size <= num_train:
        raise DatasetError(f"size: must be in 1..{num_train} (the training set), got {size}")
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(num_train, generator=generator)[:size].sort().values
    return ValidationSplit(seed, num_train, tuple(int(i) for i in chosen))
