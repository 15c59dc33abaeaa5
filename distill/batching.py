"""Batches for the training loop and for evaluation: a dataset's samples with their indices
(:class:`Indexed`, for tasks that look up per-sample cached targets), served either through a
``DataLoader`` or, for an in-memory set without augmentation, as tensors gathered by index
(:class:`TensorBatches`: the same batches in the same order, without a per-sample
``__getitem__`` and collation).

On a CUDA device (``loader(..., device=...)``) an in-memory set of uint8 images is held on the
device with its augmentation batched there (``distill.device_data``), served by index as well;
any other set goes through a ``DataLoader`` whose worker processes are sized from the cores
(:func:`loader_workers`), with pinned memory and workers kept between epochs. Under several
ranks (``distill.distributed``) each rank gets its share of every global batch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from distill.device_data import DeviceImages, on_device
from distill.distributed import World


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
        take: slice = slice(None),
    ) -> None:
        self.source, self.positions, self.indexed = source, positions, indexed
        self.batch_size, self.shuffle, self.generator = batch_size, shuffle, generator
        self.take = take  # this rank's share of each global batch

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
            if isinstance(self.source, DeviceImages):  # augmentation drawn for the whole batch
                positions = self.positions[chunk]
                x, y = self.source.batch_of(positions, take=self.take, generator=sampler)
            else:
                x, y = self.source.batch_of(self.positions[chunk][self.take])
            yield (x, y, chunk[self.take]) if self.indexed else (x, y)
        if self.shuffle:
            torch.randperm(n, generator=sampler)  # RandomSampler's last (empty) draw


def _tensor_view(
    dataset: Dataset[Any], device: torch.device | None = None
) -> tuple[Any, Tensor, bool] | None:
    """The in-memory set under ``dataset``'s wrappers (held on ``device`` when it can be), the
    positions it reads, and whether the batches carry their indices; None when batches need the
    per-sample path."""
    indexed = isinstance(dataset, Indexed)
    inner: Any = dataset.dataset if isinstance(dataset, Indexed) else dataset
    positions: Tensor | None = None
    while isinstance(inner, Subset):
        index = torch.as_tensor(list(inner.indices), dtype=torch.long)
        positions = index if positions is None else index[positions]
        inner = inner.dataset
    if device is not None:
        inner = on_device(inner, device) or inner
    if not getattr(inner, "batchable", False) or not hasattr(inner, "batch_of"):
        return None
    if positions is None:
        positions = torch.arange(len(inner))
    return inner, positions, indexed


class ShareSampler(Sampler[list[int]]):
    """This rank's share of each global batch, the global batches drawn as ``DataLoader``'s
    random sampler draws them (``shuffle``) from ``generator``."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        shuffle: bool,
        generator: torch.Generator | None,
        world: World,
    ) -> None:
        self.n, self.batch_size, self.shuffle = n, batch_size, shuffle
        self.generator, self.world = generator, world

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.n, generator=self.generator) if self.shuffle else None
        order = torch.arange(self.n) if order is None else order
        for chunk in order.split(self.batch_size):
            yield chunk[self.world.share].tolist()
        if self.shuffle:
            torch.randperm(self.n, generator=self.generator)  # RandomSampler's last (empty) draw


ALONE = World()  # one process


def loader_workers(world: World = ALONE) -> int:
    """``DataLoader`` worker processes of a rank on a CUDA device: the cores this process may use,
    shared among the ranks, one left for the training loop, at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(8, (cores or 1) // world.size - 1))


def loader(
    dataset: Dataset[Any],
    *,
    batch_size: int,
    shuffle: bool = False,
    num_workers: int = 0,
    generator: torch.Generator | None = None,
    device: torch.device | None = None,
    world: World = ALONE,
) -> DataLoader[Any] | TensorBatches:
    """Batches of ``dataset``: an in-memory set without augmentation (digits, MNIST 5k) as
    tensors gathered by index (``TensorBatches``), anything else through a ``DataLoader``.

    ``device`` (a CUDA device): an in-memory set of uint8 images is held there, augmentation
    included (``distill.device_data``); a ``DataLoader`` gets ``loader_workers()`` workers
    unless ``num_workers`` is set, pinned memory and persistent workers. ``world``: this
    rank's share of every batch."""
    view = _tensor_view(dataset, device) if num_workers == 0 else None
    if view is not None:
        source, positions, indexed = view
        return TensorBatches(
            source, positions, indexed=indexed, batch_size=batch_size, shuffle=shuffle,
            generator=generator, take=world.share,
        )  # fmt: skip
    cuda = device is not None and device.type == "cuda"
    workers = num_workers or (loader_workers(world) if cuda else 0)
    options: dict[str, Any] = {
        "num_workers": workers, "pin_memory": cuda, "persistent_workers": cuda and workers > 0,
        "generator": generator,
    }  # fmt: skip
    if world.size > 1:
        n = len(dataset)  # type: ignore[arg-type]
        sampler = ShareSampler(n, batch_size, shuffle, generator, world)
        return DataLoader(dataset, batch_sampler=sampler, **options)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=False, **options)
