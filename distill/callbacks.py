"""What the training loop reports, and to whom: its one reporting channel.

``distill.train.fit`` tells every :class:`Callback` where a run stands (an :class:`EpochProgress`
between batches, an :class:`EpochRecord` after each epoch); everything that watches a run is one:
the progress bar and the epoch log line (``progress=True``), the caller's ``on_epoch`` function,
and the stage observer of ``distill.observe`` (a service worker's progress, cancellation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from distill.observe import StageObserver


@dataclass
class EpochRecord:
    epoch: int
    loss: float
    train_accuracy: float
    eval_accuracy: float | None
    lr: float
    seconds: float


@dataclass
class EpochProgress:
    """The running epoch of training ``desc``: 0-based ``epoch`` of ``epochs``, ``batch`` of
    ``batches`` done, and the sums over the samples ``seen`` so far."""

    desc: str
    epoch: int
    epochs: int
    batches: int
    batch: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0

    def add(self, loss_sum: float, correct: int, seen: int) -> None:
        """One batch done: its summed loss, its correct predictions and its size."""
        self.batch += 1
        self.loss_sum += loss_sum
        self.correct += correct
        self.seen += seen

    @property
    def loss(self) -> float:
        return self.loss_sum / self.seen

    @property
    def accuracy(self) -> float:
        return self.correct / self.seen


class Callback:
    """Hooks of the training loop, each a no-op unless overridden. Per epoch, in order:
    ``on_epoch_start``; per batch ``on_batch_start`` (before the step: an exception here, such as
    ``observe.Cancelled``, stops the run between batches) and ``on_batch_end`` (after the step);
    then ``on_epoch_end`` with the epoch's record, once the epoch's checkpoint is written (so a
    run stopped there resumes after that epoch)."""

    def on_epoch_start(self, progress: EpochProgress) -> None:
        del progress

    def on_batch_start(self, progress: EpochProgress) -> None:
        del progress

    def on_batch_end(self, progress: EpochProgress) -> None:
        del progress

    def on_epoch_end(self, record: EpochRecord, progress: EpochProgress) -> None:
        del record, progress


class Callbacks(Callback):
    """Several callbacks as one, called in their order."""

    def __init__(self, callbacks: Sequence[Callback]) -> None:
        self.callbacks = list(callbacks)

    def on_epoch_start(self, progress: EpochProgress) -> None:
        for callback in self.callbacks:
            callback.on_epoch_start(progress)

    def on_batch_start(self, progress: EpochProgress) -> None:
        for callback in self.callbacks:
            callback.on_batch_start(progress)

    def on_batch_end(self, progress: EpochProgress) -> None:
        for callback in self.callbacks:
            callback.on_batch_end(progress)

    def on_epoch_end(self, record: EpochRecord, progress: EpochProgress) -> None:
        for callback in self.callbacks:
            callback.on_epoch_end(record, progress)


EpochCallback = Callable[[EpochRecord, int], None]


class EachEpoch(Callback):
    """``function(record, total_epochs)`` after every epoch (``fit``'s ``on_epoch``)."""

    def __init__(self, function: EpochCallback) -> None:
        self.function = function

    def on_epoch_end(self, record: EpochRecord, progress: EpochProgress) -> None:
        self.function(record, progress.epochs)


Status = Callable[[], dict[str, str]]  # a task's extra fields for the bar and the log line


class ProgressBar(Callback):
    """A bar per epoch, on a terminal only, with the running loss, accuracy and ``status()``
    (asked only while the bar is shown: a task's status may cost a device sync)."""

    def __init__(self, status: Status) -> None:
        self.status = status
        self.bar: tqdm[Any] | None = None

    def on_epoch_start(self, progress: EpochProgress) -> None:
        self.bar = tqdm(
            total=progress.batches,
            desc=f"{progress.desc} {progress.epoch + 1}/{progress.epochs}",
            leave=False,
            disable=None,  # shown on a terminal only
            unit="batch",
        )

    def on_batch_end(self, progress: EpochProgress) -> None:
        if self.bar is None:
            return
        if not self.bar.disable:
            figures = {"loss": f"{progress.loss:.4f}", "acc": f"{progress.accuracy:.3f}"}
            self.bar.set_postfix(figures | self.status(), refresh=False)
        self.bar.update(progress.batch - self.bar.n)  # relayed runs report every few batches
        if progress.batch == progress.batches:  # gone before the evaluation, as an iterator's bar
            self.close()

    def on_epoch_end(self, record: EpochRecord, progress: EpochProgress) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class EpochLog(Callback):
    """One line per epoch: loss, accuracies, ``status()`` and the epoch's duration."""

    def __init__(self, status: Status) -> None:
        self.status = status

    def on_epoch_end(self, record: EpochRecord, progress: EpochProgress) -> None:
        acc = record.eval_accuracy
        shown = f", eval acc {100 * acc:.2f}%" if acc is not None else ""
        shown += "".join(f", {k} {v}" for k, v in self.status().items())
        tqdm.write(
            f"{progress.desc} epoch {record.epoch}/{progress.epochs}: loss {record.loss:.4f}, "
            f"train acc {record.train_accuracy:.4f}{shown} ({record.seconds:.1f}s)"
        )


class Observed(Callback):
    """Reports to a stage observer: between batches its cancellation check and the epoch's
    progress so far, after each epoch the record with ``phase`` (the training's ``desc``) and
    ``metrics()`` (the task's own figures)."""

    def __init__(
        self,
        observer: StageObserver,
        *,
        resumed_from: int,
        metrics: Callable[[], dict[str, Any]],
    ) -> None:
        self.observer, self.resumed_from, self.metrics = observer, resumed_from, metrics

    def on_batch_start(self, progress: EpochProgress) -> None:
        self.observer.check()  # a cancelled job stops here, between batches
        if progress.seen:
            p = progress
            self.observer.batch(p.epoch, p.batch, p.batches, p.loss, p.epochs, p.desc)

    def on_epoch_end(self, record: EpochRecord, progress: EpochProgress) -> None:
        extra = {"phase": progress.desc, **self.metrics()}
        self.observer.epoch(record, progress.epochs, self.resumed_from, extra)
