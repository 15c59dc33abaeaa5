"""Device memory: a training that runs out of it fails naming the training, its batch size and
what to lower, and the process trains again afterwards; every stage records its peak (on a CPU:
the process's peak resident memory since the stage began)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from distill.memory import DeviceOutOfMemory
from distill.observe import observing
from distill.stages import StageStore
from distill.train import Supervised, TrainConfig, fit
from tests.distill.observers import Recording


class Greedy(nn.Module):
    """A classifier whose forward pass, on batches above ``fits``, fails as CUDA's allocator
    does (PyTorch's own exception class)."""

    def __init__(self, fits: int) -> None:
        super().__init__()
        self.fits = fits
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) > self.fits:
            raise torch.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
                "79.19 GiB of which 1.06 GiB is free."
            )
        return self.fc(x)


def _data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(64, 4, generator=g), torch.randint(0, 2, (64,), generator=g))


def test_out_of_memory_names_the_training_its_batch_and_what_to_lower() -> None:
    config = TrainConfig(epochs=1, batch_size=32, lr=0.1, device="cpu", precision="32")
    with pytest.raises(DeviceOutOfMemory) as caught:
        fit(Supervised(Greedy(fits=16)), _data(), config=config, desc="teacher", progress=False)
    assert str(caught.value) == (
        "teacher: the device ran out of memory at batch size 32 (precision 32, 1 device); "
        "lower train.batch_size, train.precision (bf16 or 16-mixed halve the activations), "
        "or spread the batch over more devices (devices: 2)"
    )
    assert caught.value.__context__ is None  # the failed batch's frames are let go
    smaller = TrainConfig(epochs=1, batch_size=16, lr=0.1, device="cpu")
    history = fit(Supervised(Greedy(fits=16)), _data(), config=smaller, progress=False)
    assert len(history.epochs) == 1  # the same process trains on


def test_each_stage_records_its_peak_memory(tmp_path: Path) -> None:
    """Per epoch (what a worker writes into the stage's progress) and in the stage's record:
    on a CPU, the process's peak resident set since the stage began, in bytes."""
    observer = Recording()
    store = StageStore(tmp_path, log=lambda _: None)
    config = TrainConfig(epochs=2, batch_size=16, lr=0.1, device="cpu")
    net = nn.Linear(4, 2)
    with observing(observer):
        result = store.train(
            "teacher", {"net": "linear"}, {"model": net}, task=Supervised(net),
            train_data=_data(), config=config, desc="T", progress=False,
        )  # fmt: skip
    assert [e["peak_memory_of"] for e in observer.extra] == ["rss", "rss"]
    peaks = [e["peak_memory_bytes"] for e in observer.extra]
    assert all(p > 10 * 2**20 for p in peaks)  # an interpreter with torch: tens of MB at least
    summary = result.summary()
    assert summary["peak_memory_of"] == "rss" and summary["peak_memory_bytes"] >= max(peaks)
    stored = json.loads((result.directory / "stage.json").read_text())
    assert stored["peak_memory_bytes"] == summary["peak_memory_bytes"]
    again = store.train(
        "teacher", {"net": "linear"}, {"model": net}, task=Supervised(net), train_data=_data(),
        config=config, desc="T", progress=False,
    )  # fmt: skip
    assert not again.trained and again.peak_memory_bytes == summary["peak_memory_bytes"]
