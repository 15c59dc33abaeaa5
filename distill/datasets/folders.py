"""Image folders: ImageNet's layout (``train/<class>/...`` and ``val/<class>/...`` or
``test/<class>/...``) or Tiny-ImageNet's own (``val/images`` + ``val/val_annotations.txt``).
Classes are the training folder's class folders; what the networks see of the data is read
cheaply by ``peek`` before it is loaded, and what a folder holds by ``survey`` (what the service
lists) without decoding an image: counts come from folder listings, sizes from the headers of a
sample (the first image of each class, up to ``SAMPLE``).

The layout's words are the service's too (an upload is checked against them): the splits, the
image suffixes, and how a file name or a class mismatch is shown."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import datasets as tvd

from distill.catalog import (
    DataBundle,
    DatasetEntry,
    DatasetError,
    DatasetInfo,
    Facts,
    Found,
    LoadOptions,
)
from distill.datasets.transforms import Transform, test_transform, train_transform

# The suffixes torchvision's ImageFolder reads (its IMG_EXTENSIONS); it skips every other file.
IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")
SPLITS = ("train", "val", "test")
SAMPLE = 32  # images whose size is read per split: the first of each of this many classes

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
    val_dir = next((root / d for d in SPLITS[1:] if (root / d).is_dir()), None)
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


def differ(train: list[str], other: list[str], split: str) -> str:
    only_train = sorted(set(train) - set(other))
    only_other = sorted(set(other) - set(train))
    return (
        f"the classes of train/ and {split}/ differ: only in train/: "
        f"{_few(only_train)}; only in {split}/: {_few(only_other)}"
    )


def _few(names: list[str]) -> str:
    shown = ", ".join(text(n) for n in names[:5]) or "none"
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def text(name: str) -> str:
    """A file name as JSON can carry it (bytes that are not UTF-8 as escapes)."""
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def survey(path: Path) -> Found | None:
    """The image folder at ``path``, if it is one: a train/ folder beside val/ or test/."""
    if not (path / "train").is_dir() or not any((path / s).is_dir() for s in SPLITS[1:]):
        return None
    return found(path)


def found(path: Path) -> Found:
    """What the directory ``path`` holds read as an image folder, or why it cannot be (an upload
    is one whatever it holds)."""
    try:
        stamp = _stamp(path)
    except OSError as exc:
        return Found.known(_unreadable(exc))
    return Found(stamp, lambda: _facts(path))


def _stamp(path: Path) -> tuple[Any, ...]:
    """Modification times of the folder, its splits and their entries: adding or removing an
    image changes its class folder's."""
    parts: list[Any] = [path.stat().st_mtime_ns]
    for split in SPLITS:
        d = path / split
        if d.is_dir():
            entries = sorted((e.name, e.stat().st_mtime_ns) for e in os.scandir(d))
            parts.append((split, d.stat().st_mtime_ns, tuple(entries)))
    return tuple(parts)


def _unreadable(exc: OSError) -> Facts:
    return Facts(problem=f"cannot be read ({type(exc).__name__})")


def _facts(path: Path) -> Facts:
    """An image folder as torchvision's ImageFolder reads it: classes are the sorted folder
    names under train/, images the files with an image suffix under each (at any depth)."""
    try:
        return _read(path)
    except OSError as exc:
        return _unreadable(exc)


def _read(path: Path) -> Facts:
    problems: list[str] = []
    train = _split(path, "train", problems)
    test_split = next((s for s in SPLITS[1:] if (path / s).is_dir()), "val")
    annotations = path / test_split / "val_annotations.txt"
    if annotations.is_file():  # Tiny-ImageNet's val/images + val_annotations.txt
        lines = annotations.read_text(errors="replace").splitlines()
        test_count = sum(1 for line in lines if line.strip())
    else:
        test = _split(path, test_split, problems)
        test_count = sum(test.values())
        if list(test) != list(train):
            problems.append(differ(list(train), list(test), test_split))
    classes = tuple(train)
    width = height = mode = None
    mixed = False
    sizes: list[tuple[int, int]] = []
    for relative in _samples(path, classes):
        try:
            with Image.open(path / relative) as image:
                sizes.append(image.size)
                mode = mode or image.mode
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            problems.append(
                f"{text(str(relative))}: not an image Pillow reads ({type(exc).__name__})"
            )
    if sizes:
        (width, height), mixed = sizes[0], len(set(sizes)) > 1
    return Facts(
        tuple(text(c) for c in classes),
        sum(train.values()),
        test_count,
        width,
        height,
        mixed,
        mode,
        problems[0] if problems else None,
    )


def _split(path: Path, split: str, problems: list[str]) -> dict[str, int]:
    """Images per class folder of one split, in torchvision's class order."""
    folder = path / split
    counts: dict[str, int] = {}
    if not folder.is_dir():
        problems.append(f"no {split}/ folder")
        return counts
    for name in sorted(e.name for e in os.scandir(folder) if e.is_dir()):
        counts[name] = _count(folder / name)
        if counts[name] == 0:
            problems.append(f"{split}/{text(name)}/ holds no image ({' '.join(IMAGE_SUFFIXES)})")
    if not counts:
        problems.append(f"{split}/ holds no class folder")
    return counts


def _count(folder: Path) -> int:
    return sum(
        1
        for _, _, files in os.walk(folder)  # links not followed: a cycle cannot hang a listing
        for f in files
        if f.lower().endswith(IMAGE_SUFFIXES)
    )


def _first(folder: Path) -> Path | None:
    """The first image torchvision lists under a class folder."""
    for root, _, files in sorted(os.walk(folder)):
        for f in sorted(files):
            if f.lower().endswith(IMAGE_SUFFIXES):
                return Path(root) / f
    return None


def _samples(path: Path, classes: tuple[str, ...]) -> list[Path]:
    firsts = (_first(path / "train" / c) for c in classes[:SAMPLE])
    return [p.relative_to(path) for p in firsts if p is not None]
