"""What ``GET /v1/datasets`` lists: the shipped datasets, the uploads, and the image folders and
CIFAR roots found at or directly under each data root.

Listing decodes no image: counts come from folder listings, sizes from the headers of a sample
(the first image of each class, up to ``SAMPLE`` per split), and a dataset's facts are kept while
the modification times of its folders stay the same.
"""

from __future__ import annotations

import os
import pickle
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

from PIL import Image
from torchvision import datasets as tvd

from api.http.datasets.layout import IMAGE_SUFFIXES, NAME, SAMPLE, SPLITS, differ, text
from api.http.schemas import DatasetPublic
from api.runtime.settings import Settings
from distill.data import DATASETS, load_dataset, num_samples

KEPT = 512  # datasets whose facts are kept
CIFAR: dict[str, type[tvd.CIFAR10]] = {"cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}
Kind = Literal["imagefolder", "cifar10", "cifar100"]
CIFAR_KINDS: tuple[Kind, ...] = ("cifar10", "cifar100")


@dataclass(frozen=True)
class Facts:
    """What a dataset holds, read without decoding its images."""

    classes: tuple[str, ...] = ()
    train: int = 0
    test: int = 0
    width: int | None = None
    height: int | None = None
    mixed: bool = False
    mode: str | None = None
    problem: str | None = None


def listing(settings: Settings) -> list[DatasetPublic]:
    """Every dataset a job over the API can use: shipped, uploaded, then under each data root."""
    rows = [_shipped_entry(name) for name, d in DATASETS.items() if not d.info.needs_root]
    rows += [upload_entry(settings, name) for name in uploaded_names(settings)]
    for data_root in settings.data_roots:
        for path in _candidates(data_root):
            for kind in _kinds(path):
                rows.append(_root_entry(path, kind))
    return rows


def uploaded_names(settings: Settings) -> list[str]:
    try:
        entries = list(os.scandir(settings.datasets_dir))
    except OSError:  # none uploaded yet
        return []
    return sorted(e.name for e in entries if NAME.match(e.name) and e.is_dir(follow_symlinks=False))


def upload_root(settings: Settings, name: str) -> Path | None:
    """The folder of the upload ``name``, if there is one."""
    if not NAME.match(name):
        return None
    path = settings.datasets_dir / name
    return path.resolve() if path.is_dir() else None


def upload_entry(settings: Settings, name: str) -> DatasetPublic:
    path = settings.datasets_dir / name
    facts = _folder(path)
    return _entry(name, "imagefolder", "upload", "imagefolder", name, facts, channels=3)


@cache
def _shipped_facts(name: str) -> Facts:
    bundle = load_dataset(name, augment=False)
    size = bundle.info.image_size
    return Facts(
        bundle.info.classes,
        num_samples(bundle.train),
        num_samples(bundle.test),
        size,
        size,
    )


def _shipped_entry(name: str) -> DatasetPublic:
    info = DATASETS[name].info
    facts = _shipped_facts(name)
    return _entry(name, "shipped", "package", name, None, facts, channels=info.in_chans)


def _root_entry(path: Path, kind: Kind) -> DatasetPublic:
    facts = _folder(path) if kind == "imagefolder" else _cifar(path, kind)
    channels = 3  # CIFAR is RGB; folders are read as RGB whatever their files hold
    return _entry(text(path.name), kind, "data_root", kind, str(path), facts, channels=channels)


def _entry(
    name: str,
    kind: Literal["shipped", "imagefolder", "cifar10", "cifar100"],
    source: Literal["package", "upload", "data_root"],
    dataset: str,
    root: str | None,
    facts: Facts,
    *,
    channels: int,
) -> DatasetPublic:
    return DatasetPublic(
        name=name,
        kind=kind,
        source=source,
        dataset=dataset,
        root=root,
        num_classes=len(facts.classes),
        classes=list(facts.classes),
        train_images=facts.train,
        test_images=facts.test,
        width=facts.width,
        height=facts.height,
        mixed_sizes=facts.mixed,
        channels=channels,
        mode=facts.mode,
        problem=facts.problem,
    )


def _candidates(data_root: Path) -> list[Path]:
    """The data root and the folders directly in it that a job's ``root`` may name (a link
    that leaves the data root may not: it is not listed)."""
    try:
        base = data_root.resolve()
        children = sorted(e.path for e in os.scandir(base) if e.is_dir() and e.name[:1] != ".")
    except OSError:  # missing or unreadable: nothing to list
        return []
    found = [base]
    for child in children:
        resolved = Path(child).resolve()
        if resolved.is_relative_to(base) and text(resolved.name) == resolved.name:
            found.append(resolved)
    return found


def _kinds(path: Path) -> list[Kind]:
    kinds = [k for k in CIFAR_KINDS if (path / CIFAR[k].base_folder).is_dir()]
    if (path / "train").is_dir() and any((path / s).is_dir() for s in SPLITS[1:]):
        kinds.append("imagefolder")
    return kinds


_kept: OrderedDict[tuple[Any, ...], Facts] = OrderedDict()
_kept_lock = threading.Lock()


def _kept_facts(key: tuple[Any, ...], compute: Callable[[], Facts]) -> Facts:
    with _kept_lock:
        if key in _kept:
            _kept.move_to_end(key)
            return _kept[key]
    facts = compute()  # outside the lock: two first listings may both compute, the same facts
    with _kept_lock:
        _kept[key] = facts
        while len(_kept) > KEPT:
            _kept.popitem(last=False)
    return facts


def _unreadable(exc: OSError) -> Facts:
    return Facts(problem=f"cannot be read ({type(exc).__name__})")


def _folder(path: Path) -> Facts:
    try:
        key = ("folder", str(path), _signature(path))
    except OSError as exc:
        return _unreadable(exc)
    return _kept_facts(key, lambda: _folder_facts(path))


def _signature(path: Path) -> tuple[Any, ...]:
    """Modification times of the folder, its splits and their entries: adding or removing an
    image changes its class folder's."""
    parts: list[Any] = [path.stat().st_mtime_ns]
    for split in SPLITS:
        d = path / split
        if d.is_dir():
            entries = sorted((e.name, e.stat().st_mtime_ns) for e in os.scandir(d))
            parts.append((split, d.stat().st_mtime_ns, tuple(entries)))
    return tuple(parts)


def _folder_facts(path: Path) -> Facts:
    """An image folder as torchvision's ImageFolder reads it: classes are the sorted folder
    names under train/, images the files with an image suffix under each (at any depth)."""
    try:
        return _read_folder(path)
    except OSError as exc:
        return _unreadable(exc)


def _read_folder(path: Path) -> Facts:
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
    found = (_first(path / "train" / c) for c in classes[:SAMPLE])
    return [p.relative_to(path) for p in found if p is not None]


def _cifar(path: Path, kind: Kind) -> Facts:
    cls = CIFAR[kind]
    folder = path / cls.base_folder
    files = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    try:
        key = ("cifar", str(folder), tuple((f, (folder / f).stat().st_mtime_ns) for f in files))
    except OSError:
        missing = [f for f in files if not (folder / f).is_file()]
        return Facts(problem=f"{cls.base_folder}/ is missing {', '.join(missing)}")
    return _kept_facts(key, lambda: _cifar_facts(folder, cls))


def _cifar_facts(folder: Path, cls: type[tvd.CIFAR10]) -> Facts:
    """Counts and class names from the files, as torchvision's CIFAR loader reads them."""

    def labels(name: str) -> int:
        entry = _unpickle(folder / name)
        return len(entry["labels"] if "labels" in entry else entry["fine_labels"])

    try:
        train = sum(labels(f) for f, _ in cls.train_list)
        test = sum(labels(f) for f, _ in cls.test_list)
        classes = tuple(str(c) for c in _unpickle(folder / cls.meta["filename"])[cls.meta["key"]])
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as exc:
        return Facts(problem=f"{folder.name}/ holds malformed files ({type(exc).__name__})")
    return Facts(classes, train, test, 32, 32, False, "RGB")


def _unpickle(path: Path) -> Any:
    with path.open("rb") as f:
        return pickle.load(f, encoding="latin1")  # the files of the operator's data root
