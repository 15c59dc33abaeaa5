"""Batches for the training loop and for evaluation: a dataset's samples with their indices
(:class:`Indexed`, for tasks that look up per-sample cached targets), served either through a
``DataLoader`` or, for an in-memory set without augmentation, as tensors gathered by index
(:class:`TensorBatches`: the same batches in the same order, without a per-sample
``__getitem__`` and collation).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset


class Indexed(Dataset[tuple[Tensor, int, int]]):
    """Adds each sample's index, so a task can look up per-sample cached targets."""

    def __init__(self, dataset: Dataset[tuple[Tensor, int]]) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Tensor, int, int]:
        x, y = self.dataset[index]
        return x, y, index


class TensorBatches:
    """Batches of an in-memory set gathered by index (``batch_of``, e.g. ``TensorImages``
    without augmentation), under ``Subset`` and ``Indexed`` wrappers: what a ``DataLoader``
    yields, in the same order (its sampler's draws from ``generator`` are repeated exactly), but
    without a ``__getitem__`` and a collation per sample."""

    def __init__(
        self,
        source: Any,
        positions: Tensor,
        *,
        indexed: bool,
        batch_size: int,
        shuffle: bool,
        generator: torch.Generator | None,
    ) -> None:
        self.source, self.positions, self.indexed = source, positions, indexed
        self.batch_size, self.shuffle, self.generator = batch_size, shuffle, generator

    def __len__(self) -> int:
        return -(-len(self.positions) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        n, g = len(self.positions), self.generator
        torch.empty((), dtype=torch.int64).random_(generator=g)  # DataLoader's workers' seed
        order, sampler = torch.arange(n), g
        if self.shuffle:  # as RandomSampler draws
            if sampler is None:
                sampler = torch.Generator()
                sampler.manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()))
            order = torch.randperm(n, generator=sampler)
        for chunk in order.split(self.batch_size):
            x, y = self.source.batch_of(self.positions[chunk])
            yield (x, y, chunk) if self.indexed else (x, y)
        if self.shuffle:
            torch.randperm(n, generator=sampler)  # RandomSampler's last (empty) draw


def _tensor_view(dataset: Dataset[Any]) -> tuple[Any, Tensor, bool] | None:
    """The in-memory set under ``dataset``'s wrappers, the positions it reads, and whether
    the batches carry their indices; None when batches need the per-sample path."""
    indexed = isinstance(dataset, Indexed)
    inner: Any = dataset.dataset if isinstance(dataset, Indexed) else dataset
    positions: Tensor | None = None
    while isinstance(inner, Subset):
        index = torch.as_tensor(list(inner.indices), dtype=torch.long)
        positions = index if positions is None else index[positions]
        inner = inner.dataset
    if not getattr(inner, "batchable", False) or not hasattr(inner, "batch_of"):
        return None
    if positions is None:
        positions = torch.arange(len(inner))
    return inner, positions, indexed


def loader(
    dataset: Dataset[Any],
    *,
    batch_size: int,
    shuffle: bool = False,
    num_workers: int = 0,
    generator: torch.Generator | None = None,
) -> DataLoader[Any] | TensorBatches:
    """Batches of ``dataset``: an in-memory set without augmentation (digits, MNIST 5k) as
    tensors gathered by index (``TensorBatches``), anything else through a ``DataLoader``."""
    view = _tensor_view(dataset) if num_workers == 0 else None
    if view is not None:
        source, positions, indexed = view
        return TensorBatches(
            source, positions, indexed=indexed, batch_size=batch_size, shuffle=shuffle,
            generator=generator,
        )  # fmt: skip
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        generator=generator,
        drop_last=False,
    )
