"""Image folders: ImageNet's layout (``train/<class>/...`` and ``val/<class>/...`` or
``test/<class>/...``) or Tiny-ImageNet's own (``val/images`` + ``val/val_annotations.txt``).
Classes are the training folder's class folders; what the networks see of the data is read
cheaply by ``peek`` before it is loaded."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor
from torch.utils.data import Dataset
from torchvision import datasets as tvd

from distill.catalog import DataBundle, DatasetEntry, DatasetError, DatasetInfo, LoadOptions
from distill.datasets.transforms import Transform, test_transform, train_transform

_FOLDER_LAYOUT = (
    "expected {root}/train/<class>/<image> and {root}/val/<class>/<image> (ImageNet), or "
    "Tiny-ImageNet's {root}/val/images/ with {root}/val/val_annotations.txt"
)


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


def first_image_size(folder: tvd.ImageFolder) -> int:
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


def _splits(name: str, root: Path) -> tuple[Path, Path]:
    """The training and validation (or test) folders under ``root``."""
    layout = _FOLDER_LAYOUT.format(root=root)
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise DatasetError(f"dataset {name!r}: {train_dir} does not exist; {layout}")
    val_dir = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
    if val_dir is None:
        raise DatasetError(f"dataset {name!r}: no val/ or test/ under {root}; {layout}")
    return train_dir, val_dir


def _annotated(
    name: str, val_dir: Path, classes: dict[str, int], plain: Transform
) -> Dataset[tuple[Tensor, int]]:
    """Tiny-ImageNet's validation split, labelled by ``val_annotations.txt``."""
    annotations = val_dir / "val_annotations.txt"
    samples = []
    for line_no, line in enumerate(annotations.read_text().splitlines(), 1):
        parts = line.split("\t")
        if len(parts) < 2 or parts[1] not in classes:
            raise DatasetError(
                f"dataset {name!r}: {annotations} line {line_no} is not "
                "'<file>\\t<class in train/>...'"
            )
        samples.append((str(val_dir / "images" / parts[0]), classes[parts[1]]))
    return _AnnotatedImages(samples, plain)


def load(dataset: DatasetEntry, root: Path | None, options: LoadOptions) -> DataBundle:
    assert root is not None  # load_dataset checks it
    name = dataset.info.name
    if options.download:
        raise DatasetError(f"download: {name!r} cannot be downloaded; prepare its root")
    train_dir, val_dir = _splits(name, root)
    try:
        train = tvd.ImageFolder(str(train_dir))
    except FileNotFoundError as exc:
        raise DatasetError(f"dataset {name!r}: {exc}; {_FOLDER_LAYOUT.format(root=root)}") from exc
    size = options.image_size or (
        first_image_size(train) if dataset.keeps_size else dataset.info.image_size
    )
    dataset = dataset.with_info(
        num_classes=len(train.classes),
        image_size=size,
        class_names=tuple(train.classes),
        description=f"{root} ({len(train.classes)} classes, {size}x{size})",
    )
    train.transform = train_transform(dataset, augment=options.augment)
    plain = test_transform(dataset.info)
    train_eval = tvd.ImageFolder(str(train_dir), transform=plain)
    test: Dataset[tuple[Tensor, int]]
    if (val_dir / "val_annotations.txt").is_file():
        test = _annotated(name, val_dir, train.class_to_idx, plain)
    else:
        folder = tvd.ImageFolder(str(val_dir), transform=plain)
        if folder.classes != train.classes:
            raise DatasetError(
                f"dataset {name!r}: classes under {val_dir} differ from {train_dir}; "
                f"{_FOLDER_LAYOUT.format(root=root)}"
            )
        test = folder
    return DataBundle(dataset.info, train, train_eval, test, options.augment)


def peek(dataset: DatasetEntry, root: Path, options: LoadOptions) -> DatasetInfo:
    """The classes of the folder at ``root`` (its class folders listed) and, for a dataset that
    keeps its images' size and is given none, its first image's size."""
    train_dir = root / "train"
    classes, _ = tvd.folder.find_classes(str(train_dir))
    info = dataset.info.with_(num_classes=len(classes), class_names=tuple(classes))
    if options.image_size is None and dataset.keeps_size:
        info = info.with_(image_size=first_image_size(tvd.ImageFolder(str(train_dir))))
    return info
