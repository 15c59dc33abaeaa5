"""``distill.train.fit`` on several devices (``TrainConfig.devices`` > 1): the launching
process starts the ranks (``distill.distributed.launch``), each of which runs ``fit`` on its
share of every batch; rank 0 writes the epoch checkpoints and relays its reports (:class:`Relay`)
to the launching process, where they reach the caller's callbacks and the stage observer as a
one-process run's do (:class:`Relayed`; a cancel raised there stops the ranks). When the ranks
are done, the task in the launching process takes rank 0's last checkpoint: its networks, its
state and its history.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from distill import memory
from distill.callbacks import Callback, EpochProgress, EpochRecord
from distill.distributed import launch

RELAY_SECONDS = 0.25  # rank 0 relays a batch's progress at most this often (and each epoch's end)
CHECKPOINT = "last.pt"

# ``build(resumed_from, status, metrics)``: the callbacks of a run (``distill.train``'s)
Build = Callable[[int, Callable[[], dict[str, str]], Callable[[], dict[str, Any]]], Callback]


def figures(task: Any) -> dict[str, Any]:
    """What an epoch's record carries beyond its numbers: the task's own figures
    (``epoch_metrics``) and the peak memory so far (``distill.memory``)."""
    own: dict[str, Any] = task.epoch_metrics()
    return own | memory.peak()


class Reporting:
    """How a run's callbacks are made (``build``), with its task's status and figures."""

    def __init__(self, build: Build, task: Any) -> None:
        self.build, self.task = build, task

    def hooks(self, resumed_from: int) -> Callback:
        return self.build(resumed_from, self.task.status, lambda: figures(self.task))


class Relay(Callback):
    """Rank 0's reports, put on the launcher's queue with the task's status and figures."""

    def __init__(self, events: Any, task: Any) -> None:
        self.events, self.task, self.sent = events, task, 0.0

    def on_epoch_start(self, progress: EpochProgress) -> None:
        self._put("epoch_start", progress)

    def on_batch_end(self, progress: EpochProgress) -> None:
        if time.monotonic() - self.sent >= RELAY_SECONDS or progress.batch == progress.batches:
            self._put("batch", progress)

    def on_epoch_end(self, record: EpochRecord, progress: EpochProgress) -> None:
        self._put("epoch_end", progress, record)

    def _put(self, kind: str, progress: EpochProgress, record: EpochRecord | None = None) -> None:
        self.sent = time.monotonic()
        status = self.task.status()
        self.events.put((kind, replace(progress), record, status, figures(self.task)))


class Relayed:
    """The launcher's side of :class:`Relay`: rank 0's events replayed to the run's callbacks
    (made at the first event, which tells the epoch the ranks resumed from)."""

    def __init__(self, reporting: Reporting) -> None:
        self.reporting = reporting
        self.hooks: Callback | None = None
        self.resumed_from = 0
        self.status: dict[str, str] = {}
        self.figures: dict[str, Any] = {}

    def __call__(self, event: Any) -> None:
        kind, progress, record, self.status, self.figures = event
        if self.hooks is None:
            self.resumed_from = progress.epoch
            self.hooks = self.reporting.build(
                progress.epoch, lambda: self.status, lambda: self.figures
            )
        if kind == "epoch_start":
            self.hooks.on_epoch_start(progress)
        elif kind == "batch":
            self.hooks.on_batch_start(progress)  # the observer's cancel check, as between batches
            self.hooks.on_batch_end(progress)
        else:
            self.hooks.on_epoch_end(record, progress)


def fit_on_ranks(
    task: nn.Module,
    train_data: Dataset[Any],
    *,
    config: Any,
    eval_data: Dataset[Any] | None,
    checkpoint_dir: Path | None,
    desc: str,
    reporting: Reporting,
    run: Callable[..., dict[str, Any]],
    load: Callable[[Any, dict[str, Any]], list[EpochRecord]],
    device: torch.device,
) -> tuple[list[EpochRecord], int]:
    """``run`` (``distill.train``'s rank function) on ``config.devices`` ranks; ``task`` then
    holds rank 0's result (``load``) on ``device``. Returns the epochs' records and the epoch the
    ranks resumed from."""
    relayed = Relayed(reporting)
    task.cpu()  # the ranks receive it by pickling, CUDA tensors and all, without IPC handles
    with tempfile.TemporaryDirectory(prefix="reskd-fit-") as tmp:
        directory = checkpoint_dir or Path(tmp)
        results = launch(
            run, (task, train_data, config, eval_data, directory, desc),
            devices=config.devices, cuda=device.type == "cuda", on_event=relayed,
        )  # fmt: skip
        memory.note_peak(results[0])
        state = torch.load(directory / CHECKPOINT, map_location="cpu", weights_only=False)
        epochs = load(task, state)
    task.to(device).eval()
    return epochs, relayed.resumed_from if relayed.hooks is not None else len(epochs)
