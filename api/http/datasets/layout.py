"""What an image-folder dataset is to the service: its splits, the image suffixes torchvision's
ImageFolder reads, the names an upload may take, and how a file name or a class mismatch is shown
(the listing and an upload's checks say it the same way)."""

from __future__ import annotations

import re

# The suffixes torchvision's ImageFolder reads (its IMG_EXTENSIONS); it skips every other file.
IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")
SPLITS = ("train", "val", "test")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
NAME = re.compile(NAME_PATTERN)
SAMPLE = 32  # images whose size is read per split: the first of each of this many classes


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
