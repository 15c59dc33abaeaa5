"""CIFAR-10 and CIFAR-100 through torchvision's own loader, from a local root (downloaded only
when asked), and their surveys: counts and class names read from the files as the loader reads
them."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, ClassVar

from torchvision import datasets as tvd

from distill.catalog import (
    DataBundle,
    DatasetEntry,
    DatasetError,
    Facts,
    Found,
    Loader,
    LoadOptions,
    Survey,
)
from distill.datasets.transforms import Transform, test_transform, train_transform


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


def _files(verified: type[tvd.CIFAR10]) -> list[str]:
    """The files of a copy of the dataset, in its folder (``base_folder``)."""
    return [f for f, _ in verified.train_list + verified.test_list] + [verified.meta["filename"]]


def _layout(name: str, root: Path, verified: type[tvd.CIFAR10]) -> tuple[list[str], str]:
    """The files expected under ``root``, and a line saying so (for messages)."""
    files = _files(verified)
    expected = (
        f"expected {root / verified.base_folder}/ holding {', '.join(files)} "
        f"(the {name.upper().replace('CIFAR', 'CIFAR-')} python version)"
    )
    return files, expected


def _check_root(name: str, root: Path, folder: Path, files: list[str], expected: str) -> None:
    if not root.is_dir():
        raise DatasetError(
            f"dataset {name!r}: root {root} does not exist; {expected} (torchvision's "
            "CIFAR download, or load_dataset(..., download=True) in Python, fetches it)"
        )
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise DatasetError(
            f"dataset {name!r}: root {root} is missing {', '.join(missing)}; {expected}"
        )


def cifar(verified: type[tvd.CIFAR10], unverified: type[tvd.CIFAR10]) -> Loader:
    """A loader of torchvision's CIFAR class ``verified`` (``unverified``: the same without the
    MD5 checks, used unless ``verify_checksums``)."""

    def load(dataset: DatasetEntry, root: Path | None, options: LoadOptions) -> DataBundle:
        assert root is not None  # load_dataset checks it
        info = dataset.info
        folder = root / verified.base_folder
        files, expected = _layout(info.name, root, verified)
        if not options.download:
            _check_root(info.name, root, folder, files, expected)
        cls = verified if options.verify_checksums else unverified

        def split(train: bool, transform: Transform) -> tvd.CIFAR10:
            download = options.download and train
            try:
                return cls(str(root), train=train, transform=transform, download=download)
            except (pickle.UnpicklingError, KeyError, ValueError, EOFError, RuntimeError) as exc:
                raise DatasetError(
                    f"dataset {info.name!r}: files under {folder} are malformed ({exc!r}); "
                    f"{expected}: pickled dicts with 'data' (N x 3072 uint8) and labels"
                ) from exc

        train = split(True, train_transform(dataset, augment=options.augment))
        plain = test_transform(info)
        train_eval, test = split(True, plain), split(False, plain)
        labels = set(train.targets)
        if labels and not labels <= set(range(info.num_classes)):
            raise DatasetError(
                f"dataset {info.name!r}: labels under {folder} fall outside "
                f"0..{info.num_classes - 1}"
            )
        if len(train.classes) == info.num_classes:  # CIFAR-100's names come from its meta file
            info = info.with_(class_names=tuple(train.classes))
        return DataBundle(info, train, train_eval, test, options.augment)

    return load


load_cifar10 = cifar(tvd.CIFAR10, _CIFAR10Files)
load_cifar100 = cifar(tvd.CIFAR100, _CIFAR100Files)


def surveyor(verified: type[tvd.CIFAR10]) -> Survey:
    """The survey of torchvision's CIFAR class ``verified``: a directory holds the dataset when
    it holds its folder (``base_folder``)."""
    files = _files(verified)

    def survey(path: Path) -> Found | None:
        folder = path / verified.base_folder
        if not folder.is_dir():
            return None
        try:
            stamp = tuple((f, (folder / f).stat().st_mtime_ns) for f in files)
        except OSError:
            missing = [f for f in files if not (folder / f).is_file()]
            return Found.known(
                Facts(problem=f"{verified.base_folder}/ is missing {', '.join(missing)}")
            )
        return Found(stamp, lambda: _facts(folder, verified))

    return survey


def _facts(folder: Path, verified: type[tvd.CIFAR10]) -> Facts:
    """Counts and class names from the files, as torchvision's CIFAR loader reads them."""

    def labels(name: str) -> int:
        entry = _unpickle(folder / name)
        return len(entry["labels"] if "labels" in entry else entry["fine_labels"])

    meta = verified.meta
    try:
        train = sum(labels(f) for f, _ in verified.train_list)
        test = sum(labels(f) for f, _ in verified.test_list)
        classes = tuple(str(c) for c in _unpickle(folder / meta["filename"])[meta["key"]])
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as exc:
        return Facts(problem=f"{folder.name}/ holds malformed files ({type(exc).__name__})")
    return Facts(classes, train, test, 32, 32, False, "RGB")


def _unpickle(path: Path) -> Any:
    with path.open("rb") as f:
        return pickle.load(f, encoding="latin1")  # the files of the operator's data root


survey_cifar10 = surveyor(tvd.CIFAR10)
survey_cifar100 = surveyor(tvd.CIFAR100)
