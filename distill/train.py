"""ONE training loop, used by every method (supervised, KD, residual stages, ...).

A method is a :class:`TrainTask`: the networks it trains, the frozen networks it reads, and the
loss it minimises on a batch. The loop (:func:`fit`) owns the optimizer, the LR schedule, the
device, evaluation and per-epoch checkpoints (an interrupted run resumes at its last epoch); it
reports through callbacks only (``distill.callbacks``: the progress bar, the epoch log, the stage
observer, the caller's own). What it is configured by lives in ``distill.train_config``, how it
batches in ``distill.batching``; both are re-exported here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from distill import memory, observe
from distill.batching import Indexed, TensorBatches, loader
from distill.callbacks import (
    Callback,
    Callbacks,
    EachEpoch,
    EpochCallback,
    EpochLog,
    EpochProgress,
    EpochRecord,
    Observed,
    ProgressBar,
)
from distill.distributed import all_sum, rank_device, reduce_gradients, shares, world
from distill.losses import KDLoss
from distill.parallel_fit import Relay, Reporting, fit_on_ranks
from distill.precision import Amp, batch_to, channels_last, place, resolve_precision
from distill.train_config import (
    PAPER_PRESETS,
    PRESETS,
    Optimizer,
    Schedule,
    TrainConfig,
    TrainOverrides,
    cosine_power_factors,
    make_optimizer,
    make_schedule,
    preset,
    resolve_device,
)

__all__ = [
    "CHECKPOINT_NAME",
    "PAPER_PRESETS",
    "PRESETS",
    "Callback",
    "Distillation",
    "EpochCallback",
    "EpochRecord",
    "History",
    "Indexed",
    "Optimizer",
    "Schedule",
    "Supervised",
    "TensorBatches",
    "TrainConfig",
    "TrainOverrides",
    "TrainTask",
    "accuracy",
    "cosine_power_factors",
    "evaluate",
    "fit",
    "loader",
    "predict_logits",
    "preset",
    "resolve_device",
    "save_atomic",
]


def save_atomic(payload: Any, tmp: Path, path: Path) -> None:
    """``torch.save`` to ``tmp``, then renamed to ``path``: a crash never leaves half a
    checkpoint, and a failed write (a full disk) leaves no ``tmp`` behind."""
    try:
        torch.save(payload, tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------------------------
# Tasks: what a method trains and how
# --------------------------------------------------------------------------------------------


class TrainTask(nn.Module):
    """Networks under training (``trained``) and frozen networks they learn from (``frozen``).

    Only the trained networks are optimised; frozen ones stay in eval mode and tasks read them
    under ``torch.no_grad()`` (their ``requires_grad`` flags are left as they are, so a network
    can be trained by one task and read frozen by the next). A checkpoint holds the trained
    networks only.

    The loop sets, from its config: ``grad_clip``, ``amp`` (the precision's autocast and loss
    scaling, ``distill.precision``) and, per batch, ``share`` (this rank's share of the global
    batch, 1 in one process). ``channels_last``: on a CUDA device the loop keeps the task's
    networks and image batches channels-last (a task whose networks assume the default layout
    says False).
    """

    channels_last: ClassVar[bool] = True

    def __init__(
        self, *, trained: Mapping[str, nn.Module], frozen: Mapping[str, nn.Module] | None = None
    ) -> None:
        super().__init__()
        self.trained = nn.ModuleDict(dict(trained))
        self.frozen = nn.ModuleDict(dict(frozen or {}))
        self.grad_clip: float | None = None  # set by the loop from its TrainConfig
        self.amp = Amp()
        self.share = 1.0

    def train(self, mode: bool = True) -> TrainTask:
        super().train(mode)
        self.frozen.eval()
        return self

    def loss(self, x: Tensor, y: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        """The loss to minimise on a batch and the logits its accuracy is measured on."""
        raise NotImplementedError

    def predict(self, x: Tensor) -> Tensor:
        """Logits at evaluation time."""
        raise NotImplementedError

    # Hooks of the loop; the defaults train every trainable parameter with one optimizer.

    def optimized_parameters(self) -> list[nn.Parameter]:
        """What the loop's optimizer updates."""
        return [p for p in self.trained.parameters() if p.requires_grad]

    def step(
        self, x: Tensor, y: Tensor, index: Tensor, optimizer: torch.optim.Optimizer
    ) -> tuple[Tensor, Tensor]:
        """One training step on a batch; returns the loss and the logits."""
        with self.amp.autocast():
            loss, logits = self.loss(x, y, index)
        if torch.isfinite(loss):
            optimizer.zero_grad(set_to_none=True)
            self.amp.backward(loss)
            self.synchronize(self.optimized_parameters())
            self.amp.unscale(optimizer)
            if self.grad_clip is not None:
                nn.utils.clip_grad_norm_(self.optimized_parameters(), self.grad_clip)
            self.amp.step(optimizer)
            self.amp.update()
        return loss, logits

    def synchronize(self, params: Sequence[nn.Parameter]) -> None:
        """After a backward pass under several ranks (``distill.distributed``): the gradients of
        ``params`` summed over the ranks, each weighted by its ``share`` of the batch, so every
        replica takes the step of the whole batch. Nothing in one process."""
        reduce_gradients(params, self.share)

    def start_epoch(self, epoch: int, epochs: int) -> None:
        """Before each epoch (0-based): trained networks with a ``schedule(epoch, epochs)`` method
        (drop-path) are told where training is."""
        for net in self.trained.values():
            schedule = getattr(net, "schedule", None)
            if callable(schedule):
                schedule(epoch, epochs)

    def status(self) -> dict[str, str]:
        """Extra fields for the progress bar and the epoch log."""
        return {}

    def end_epoch(self, record: EpochRecord) -> None:
        """After each epoch, before the checkpoint is written."""

    def epoch_metrics(self) -> dict[str, Any]:
        """Figures of the epoch that just ended beyond the record's (stored per epoch)."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        """State beyond the trained networks that a resumed run needs (saved per epoch)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        del state


class Supervised(TrainTask):
    """Cross-entropy on labels (the teacher, and the 'SGD' baselines of the paper)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(trained={"model": model})

    def loss(self, x: Tensor, y: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.trained["model"](x)
        return nn.functional.cross_entropy(logits, y), logits

    def predict(self, x: Tensor) -> Tensor:
        return self.trained["model"](x)


class Distillation(TrainTask):
    """A student learns from a frozen teacher's logits on the same (augmented) batch."""

    def __init__(self, student: nn.Module, teacher: nn.Module, criterion: KDLoss) -> None:
        super().__init__(trained={"student": student}, frozen={"teacher": teacher})
        self.criterion = criterion

    def loss(self, x: Tensor, y: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            teacher = self.frozen["teacher"](x)
        logits = self.trained["student"](x)
        return self.criterion(logits, teacher, y), logits

    def predict(self, x: Tensor) -> Tensor:
        return self.trained["student"](x)


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


@dataclass
class History:
    epochs: list[EpochRecord] = field(default_factory=list)
    resumed_from: int = 0

    @property
    def final(self) -> EpochRecord:
        return self.epochs[-1]


CHECKPOINT_NAME = "last.pt"


@dataclass
class _Run:
    """What a checkpoint holds besides the config: the trained networks, the optimizer, the
    schedule, the batch order's generator, the global RNG, the loss scale, the history and the
    task's state."""

    task: TrainTask
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    history: History = field(default_factory=History)

    def resume(self, path: Path, device: torch.device) -> None:
        state = torch.load(path, map_location=device, weights_only=False)
        self.task.trained.load_state_dict(state["trained"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["rng"])
        self.task.amp.load_state_dict(state.get("scaler", {}))
        self.history.epochs = load_trained(self.task, state)
        self.history.resumed_from = len(self.history.epochs)

    def save(self, path: Path, config: TrainConfig) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "trained": self.task.trained.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "rng": torch.get_rng_state(),
            "scaler": self.task.amp.state_dict(),
            "history": [asdict(r) for r in self.history.epochs],
            "config": config.to_dict(),
            "task": self.task.extra_state(),
        }
        save_atomic(payload, path.with_suffix(".tmp"), path)


def load_trained(task: TrainTask, state: dict[str, Any]) -> list[EpochRecord]:
    """A checkpoint's trained networks and task state into ``task``; its epochs' records."""
    task.trained.load_state_dict(state["trained"])
    task.load_extra_state(state.get("task", {}))
    return [EpochRecord(**r) for r in state["history"]]


def fit(
    task: TrainTask,
    train_data: Dataset[tuple[Tensor, int]],
    *,
    config: TrainConfig,
    eval_data: Dataset[tuple[Tensor, int]] | None = None,
    checkpoint_dir: Path | None = None,
    desc: str = "train",
    progress: bool = True,
    on_epoch: EpochCallback | None = None,
    callbacks: Sequence[Callback] = (),
) -> History:
    """Train ``task`` for ``config.epochs`` epochs; resume from ``checkpoint_dir`` if it holds one.

    ``eval_data``: after every epoch, the accuracy of ``task.predict`` on it is the record's
    ``eval_accuracy`` (the task's whole prediction: a residual task predicts S_i = S_{i-1} + R_i
    when its base network is given, ``ResidualDistillation(base=...)``). The run is reported to,
    in this order: ``on_epoch(record, total_epochs)`` after every epoch, ``callbacks``, the
    current stage observer (``observe.current()``), and with ``progress`` a bar and a line per
    epoch.

    ``config.devices`` above 1: the ranks of ``distill.distributed`` train it, and ``task``
    holds rank 0's result afterwards. ``config.precision``: ``distill.precision``. Running out of
    device memory raises ``memory.DeviceOutOfMemory`` naming what to lower."""
    if len(train_data) == 0:  # type: ignore[arg-type]
        raise ValueError(f"{desc}: the training set is empty")
    reporting = Reporting(partial(_reporting, on_epoch, callbacks, progress), task)
    failed = None
    try:
        if config.devices > 1 and world().size == 1:
            epochs, resumed_from = fit_on_ranks(
                task, train_data, config=config, eval_data=eval_data,
                checkpoint_dir=checkpoint_dir, desc=desc, reporting=reporting, run=_fit_rank,
                load=load_trained, device=resolve_device(config.device),
            )  # fmt: skip
            return History(epochs, resumed_from)
        return _fit(task, train_data, config, eval_data, checkpoint_dir, desc, reporting)
    except torch.OutOfMemoryError:  # the frames holding the batch's tensors go with it
        precision = resolve_precision(config.precision, config.key_device)
        failed = memory.out_of_memory_message(
            desc, batch_size=config.batch_size, precision=precision, devices=config.devices
        )
    memory.release()
    raise memory.DeviceOutOfMemory(failed)


def _fit_rank(
    task: TrainTask,
    train_data: Dataset[tuple[Tensor, int]],
    config: TrainConfig,
    eval_data: Dataset[tuple[Tensor, int]] | None,
    checkpoint_dir: Path,
    desc: str,
    events: Any,
) -> dict[str, Any]:
    """One rank of ``fit_on_ranks``: rank 0 relays its reports; returns its peak memory."""
    memory.reset_peak()
    relay = [Relay(events, task)] if world().main else []
    fit(task, train_data, config=config, eval_data=eval_data, checkpoint_dir=checkpoint_dir,
        desc=desc, progress=False, callbacks=relay)  # fmt: skip
    return memory.peak()


def _fit(
    task: TrainTask,
    train_data: Dataset[tuple[Tensor, int]],
    config: TrainConfig,
    eval_data: Dataset[tuple[Tensor, int]] | None,
    checkpoint_dir: Path | None,
    desc: str,
    reporting: Reporting,
) -> History:
    """``fit`` in this process (one rank of several, or alone)."""
    device, w = rank_device(resolve_device(config.device)), world()
    torch.manual_seed(config.seed)
    last = channels_last(device) and task.channels_last
    place(task, device, last=last)
    params = task.optimized_parameters()
    if not params:
        raise ValueError(f"{desc}: the task has no trainable parameters")
    optimizer = make_optimizer(params, config)
    generator = torch.Generator().manual_seed(config.seed)
    run = _Run(task, optimizer, make_schedule(optimizer, config), generator)
    task.grad_clip, task.amp = config.grad_clip, Amp.of(config.precision, device)
    path = checkpoint_dir / CHECKPOINT_NAME if checkpoint_dir is not None else None
    if path is not None and path.is_file():
        run.resume(path, device)
    hooks = reporting.hooks(run.history.resumed_from)
    cuda = device if device.type == "cuda" else None
    batches = loader(
        Indexed(train_data), batch_size=config.batch_size, shuffle=True,
        num_workers=config.num_workers, generator=generator, device=cuda, world=w,
    )  # fmt: skip
    sizes = list(shares(len(train_data), config.batch_size))  # type: ignore[arg-type]
    for epoch in range(run.history.resumed_from, config.epochs):
        started = time.perf_counter()
        task.start_epoch(epoch, config.epochs)
        task.train()
        lr = optimizer.param_groups[0]["lr"]
        state = EpochProgress(desc, epoch, config.epochs, len(batches))
        hooks.on_epoch_start(state)
        _train_epoch(task, batches, sizes, optimizer, (device, last), state, hooks, lr=config.lr)
        run.scheduler.step()
        eval_acc = (
            evaluate(task, eval_data, batch_size=config.batch_size * 2, device=device)
            if eval_data is not None
            else None
        )
        seconds = time.perf_counter() - started
        record = EpochRecord(epoch + 1, state.loss, state.accuracy, eval_acc, lr, seconds)
        run.history.epochs.append(record)
        task.end_epoch(record)
        if path is not None and w.main:
            run.save(path, config)
        hooks.on_epoch_end(record, state)
    task.eval()
    return run.history


def _reporting(
    on_epoch: EpochCallback | None,
    callbacks: Sequence[Callback],
    progress: bool,
    resumed_from: int,
    status: Callable[[], dict[str, str]],
    metrics: Callable[[], dict[str, Any]],
) -> Callbacks:
    """Everything ``fit`` reports to, in its order (``status`` and ``metrics``: the task's, or
    what rank 0 last reported of them)."""
    hooks: list[Callback] = [EachEpoch(on_epoch)] if on_epoch is not None else []
    hooks += callbacks
    observer = observe.current()
    if observer is not None:
        hooks.append(Observed(observer, resumed_from=resumed_from, metrics=metrics))
    if progress:
        hooks += [ProgressBar(status), EpochLog(status)]
    return Callbacks(hooks)


def _train_epoch(
    task: TrainTask,
    batches: Iterable[Any],
    sizes: list[int],
    optimizer: torch.optim.Optimizer,
    placement: tuple[torch.device, bool],
    state: EpochProgress,
    hooks: Callback,
    *,
    lr: float,
) -> None:
    """One pass over ``batches`` (this rank's shares of global batches of ``sizes``), a step
    each, summed into ``state`` (over every rank)."""
    device, last = placement
    for i, (x, y, index) in enumerate(batches):
        hooks.on_batch_start(state)
        x, y = batch_to(x, device, last=last), y.to(device, non_blocking=True)
        task.share = len(y) / sizes[i]
        loss, logits = task.step(x, y, index, optimizer)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"{state.desc}: loss became {loss.item()} at epoch {state.epoch + 1}; "
                f"lower the learning rate (lr {lr})"
            )
        state.add(loss.item() * len(y), int((logits.argmax(1) == y).sum()), len(y))
        hooks.on_batch_end(state)
    if world().size > 1:  # the epoch's figures over the whole batches
        loss_sum, correct, seen = all_sum([state.loss_sum, state.correct, state.seen], device)
        state.loss_sum, state.correct, state.seen = loss_sum, int(correct), int(seen)


@torch.no_grad()
def predict_logits(
    predict: Callable[[Tensor], Tensor] | nn.Module,
    data: Dataset[tuple[Tensor, int]],
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> tuple[Tensor, Tensor]:
    """Logits and labels over a dataset, in order, on the CPU."""
    if isinstance(predict, nn.Module):
        predict.eval()
    device = torch.device(device) if isinstance(device, str) else device
    outs, labels = [], []
    for x, y in loader(data, batch_size=batch_size):
        outs.append(predict(x.to(device)).float().cpu())
        labels.append(y)
    if not outs:
        raise ValueError("predict: the dataset is empty")
    return torch.cat(outs), torch.cat(labels)


def accuracy(logits: Tensor, labels: Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean())


def evaluate(
    model: TrainTask | nn.Module,
    data: Dataset[tuple[Tensor, int]],
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> float:
    """Top-1 accuracy of a model (or a task's ``predict``) on a dataset."""
    model.eval()
    fn = model.predict if isinstance(model, TrainTask) else model
    logits, labels = predict_logits(fn, data, batch_size=batch_size, device=device)
    return accuracy(logits, labels)
