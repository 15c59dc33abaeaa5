"""ONE training loop, used by every method (supervised, KD, residual stages, ...).

A method is a :class:`TrainTask`: the networks it trains, the frozen networks it reads, and the
loss it minimises on a batch. The loop owns the optimizer, the LR schedule, the device, the
progress bar, evaluation and per-epoch checkpoints (an interrupted run resumes at its last epoch).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from distill import observe
from distill.config import ConfigModel
from distill.losses import KDLoss

Optimizer = Literal["sgd", "adam"]
Schedule = Literal["multistep", "cosine", "cosine-power", "constant"]


@dataclass(frozen=True)
class TrainConfig:
    """How a network is trained. Epoch numbers in ``milestones`` count from 0."""

    epochs: int = 3
    batch_size: int = 128
    optimizer: Optimizer = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: Schedule = "multistep"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    grad_clip: float | None = None  # max gradient norm (DARTS clips at 5)
    lr_min: float = 0.0  # cosine-power: the last epoch's learning rate
    power: float = 10.0  # cosine-power: the exponent order (1: plain cosine; StacNAS uses 2)

    def __post_init__(self) -> None:
        checks: list[tuple[str, bool, str]] = [
            ("epochs", self.epochs >= 1, "an integer >= 1"),
            ("batch_size", self.batch_size >= 1, "an integer >= 1"),
            ("optimizer", self.optimizer in ("sgd", "adam"), "one of sgd, adam"),
            ("lr", self.lr > 0, "a number > 0"),
            ("momentum", 0 <= self.momentum < 1, "in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, "a number >= 0"),
            (
                "schedule",
                self.schedule in ("multistep", "cosine", "cosine-power", "constant"),
                "one of multistep, cosine, cosine-power, constant",
            ),
            ("milestones", all(m > 0 for m in self.milestones), "epochs > 0"),
            ("gamma", 0 < self.gamma <= 1, "in (0, 1]"),
            ("num_workers", self.num_workers >= 0, "an integer >= 0"),
            ("grad_clip", self.grad_clip is None or self.grad_clip > 0, "None or > 0"),
            ("lr_min", 0 <= self.lr_min < self.lr, "in [0, lr)"),
            ("power", self.power >= 1, "a number >= 1"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(f"{name}: must be {allowed}, got {getattr(self, name)!r}")
        object.__setattr__(self, "milestones", tuple(self.milestones))

    def to_dict(self) -> dict[str, Any]:
        """The config as stage keys hash it: a field added later is left out at its default, so
        stages stored before it existed keep their keys."""
        data = {**asdict(self), "milestones": list(self.milestones)}
        if self.grad_clip is None:
            del data["grad_clip"]
        for name in ("lr_min", "power"):
            if data[name] == getattr(TrainConfig, name):
                del data[name]
        return data


PRESETS: dict[str, TrainConfig] = {
    # ResKD paper, section IV-A.
    "cifar": TrainConfig(epochs=250, batch_size=128, lr=0.1, milestones=(150, 200)),
    "tiny-imagenet": TrainConfig(epochs=150, batch_size=128, lr=0.1, milestones=(40, 80, 120)),
    "imagenet": TrainConfig(epochs=90, batch_size=128, lr=0.1, milestones=(30, 60, 80)),
    # Small runs on a CPU: a few epochs, cosine decay.
    "cpu-small": TrainConfig(
        epochs=6, batch_size=64, lr=0.05, schedule="cosine", weight_decay=5e-4
    ),
    "cpu-tiny": TrainConfig(epochs=2, batch_size=64, lr=0.05, schedule="cosine", weight_decay=5e-4),
}


class TrainOverrides(ConfigModel):
    """What a run config changes of its preset's :class:`TrainConfig` (unset fields keep the
    preset's value; the seed and device come from the run config itself)."""

    epochs: int | None = Field(None, ge=1, le=100_000)
    batch_size: int | None = Field(None, ge=1, le=65_536)
    optimizer: Optimizer | None = None
    lr: float | None = Field(None, gt=0, le=10)
    momentum: float | None = Field(None, ge=0, lt=1)
    weight_decay: float | None = Field(None, ge=0, le=1)
    schedule: Schedule | None = None
    milestones: tuple[Annotated[int, Field(ge=1, le=100_000)], ...] | None = Field(
        None, max_length=64
    )
    gamma: float | None = Field(None, gt=0, le=1)
    num_workers: int | None = Field(None, ge=0, le=64)
    grad_clip: float | None = Field(None, gt=0, le=1e4)
    lr_min: float | None = Field(None, ge=0, le=10, description="cosine-power: the last lr")
    power: float | None = Field(None, ge=1, le=1e3, description="cosine-power: exponent order")

    def settings(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


PAPER_PRESETS = ("cifar", "tiny-imagenet", "imagenet")  # their protocols augment the images


def preset(name: str, **overrides: Any) -> TrainConfig:
    if name not in PRESETS:
        raise ValueError(f"preset: unknown preset {name!r}; allowed: {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)


def save_atomic(payload: Any, tmp: Path, path: Path) -> None:
    """``torch.save`` to ``tmp``, then renamed to ``path``: a crash never leaves half a
    checkpoint, and a failed write (a full disk) leaves no ``tmp`` behind."""
    try:
        torch.save(payload, tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"device: {exc}; use auto, cpu, cuda or cuda:N") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} asked for but no CUDA device is visible")
    return resolved


# --------------------------------------------------------------------------------------------
# Tasks: what a method trains and how
# --------------------------------------------------------------------------------------------


class TrainTask(nn.Module):
    """Networks under training (``trained``) and frozen networks they learn from (``frozen``).

    Only the trained networks are optimised; frozen ones stay in eval mode and tasks read them
    under ``torch.no_grad()`` (their ``requires_grad`` flags are left as they are, so a network
    can be trained by one task and read frozen by the next). A checkpoint holds the trained
    networks only.
    """

    def __init__(
        self, *, trained: Mapping[str, nn.Module], frozen: Mapping[str, nn.Module] | None = None
    ) -> None:
        super().__init__()
        self.trained = nn.ModuleDict(dict(trained))
        self.frozen = nn.ModuleDict(dict(frozen or {}))
        self.grad_clip: float | None = None  # set by the loop from its TrainConfig

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
        loss, logits = self.loss(x, y, index)
        if torch.isfinite(loss):
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.grad_clip is not None:
                nn.utils.clip_grad_norm_(self.optimized_parameters(), self.grad_clip)
            optimizer.step()
        return loss, logits

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


class Indexed(Dataset[tuple[Tensor, int, int]]):
    """Adds each sample's index, so a task can look up per-sample cached targets."""

    def __init__(self, dataset: Dataset[tuple[Tensor, int]]) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Tensor, int, int]:
        x, y = self.dataset[index]
        return x, y, index


@dataclass
class EpochRecord:
    epoch: int
    loss: float
    train_accuracy: float
    eval_accuracy: float | None
    lr: float
    seconds: float


@dataclass
class History:
    epochs: list[EpochRecord] = field(default_factory=list)
    resumed_from: int = 0

    @property
    def final(self) -> EpochRecord:
        return self.epochs[-1]


EpochCallback = Callable[[EpochRecord, int], None]


def cosine_power_factors(epochs: int, lr: float, lr_min: float, power: float) -> list[float]:
    """Cosine power annealing (Hundt et al., sharpDARTS; StacNAS trains its networks with it):
    the learning rate of each epoch over ``lr``. With c_e = (1 + cos(pi e / E)) / 2 for epochs
    e = 1..E, the curve power^(c_e + 1) (c_e itself when power is 1) is rescaled to run from 1
    at the first epoch to 0 at the last, then mapped onto [lr_min, lr]."""
    cos = [(1 + math.cos(math.pi * e / epochs)) / 2 for e in range(1, epochs + 1)]
    curve = cos if power == 1 else [power ** (c + 1) for c in cos]
    low, high = min(curve), max(curve)
    scaled = [(v - low) / (high - low) if high > low else 1.0 for v in curve]
    return [(lr_min + (lr - lr_min) * p) / lr for p in scaled]


def _optimizer(params: list[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


def _schedule(
    optimizer: torch.optim.Optimizer, config: TrainConfig
) -> torch.optim.lr_scheduler.LRScheduler:
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    if config.schedule == "cosine-power":
        factors = cosine_power_factors(config.epochs, config.lr, config.lr_min, config.power)
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda epoch: factors[min(epoch, len(factors) - 1)]
        )
    if config.schedule == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=list(config.milestones), gamma=config.gamma
        )
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


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


CHECKPOINT_NAME = "last.pt"


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
) -> History:
    """Train ``task`` for ``config.epochs`` epochs; resume from ``checkpoint_dir`` if it holds one.

    ``eval_data``: after every epoch, the accuracy of ``task.predict`` on it is the record's
    ``eval_accuracy`` (the task's whole prediction: a residual task predicts S_i = S_{i-1} + R_i
    when its base network is given, ``ResidualDistillation(base=...)``). ``on_epoch(record,
    total_epochs)`` is called after every epoch (progress reporting).
    """
    if len(train_data) == 0:  # type: ignore[arg-type]
        raise ValueError(f"{desc}: the training set is empty")
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    task.to(device)
    params = task.optimized_parameters()
    if not params:
        raise ValueError(f"{desc}: the task has no trainable parameters")
    optimizer = _optimizer(params, config)
    scheduler = _schedule(optimizer, config)
    generator = torch.Generator().manual_seed(config.seed)
    history = History()

    path = checkpoint_dir / CHECKPOINT_NAME if checkpoint_dir is not None else None
    if path is not None and path.is_file():
        state = torch.load(path, map_location=device, weights_only=False)
        task.trained.load_state_dict(state["trained"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["rng"])
        history.epochs = [EpochRecord(**r) for r in state["history"]]
        task.load_extra_state(state.get("task", {}))
        history.resumed_from = len(history.epochs)

    task.grad_clip = config.grad_clip
    observer = observe.current()
    batches = loader(
        Indexed(train_data),
        batch_size=config.batch_size,
        shuffle=True,
        num_workers=config.num_workers,
        generator=generator,
    )
    for epoch in range(history.resumed_from, config.epochs):
        started = time.perf_counter()
        task.start_epoch(epoch, config.epochs)
        task.train()
        total_loss, correct, seen = 0.0, 0, 0
        lr = optimizer.param_groups[0]["lr"]
        bar = tqdm(
            batches,
            desc=f"{desc} {epoch + 1}/{config.epochs}",
            leave=False,
            disable=None if progress else True,  # None: shown on a terminal only
            unit="batch",
        )
        for b, (x, y, index) in enumerate(bar):
            if observer is not None:
                observer.check()  # a cancelled job stops here, between batches
                if seen:
                    observer.batch(epoch, b, len(batches), total_loss / seen, config.epochs, desc)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss, logits = task.step(x, y, index, optimizer)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"{desc}: loss became {loss.item()} at epoch {epoch + 1}; "
                    f"lower the learning rate (lr {config.lr})"
                )
            total_loss += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            if not bar.disable:  # the task's status may cost a device sync: only when shown
                bar.set_postfix(
                    {"loss": f"{total_loss / seen:.4f}", "acc": f"{correct / seen:.3f}"}
                    | task.status()
                )
        scheduler.step()
        eval_acc = (
            evaluate(task, eval_data, batch_size=config.batch_size * 2, device=device)
            if eval_data is not None
            else None
        )
        record = EpochRecord(
            epoch=epoch + 1,
            loss=total_loss / seen,
            train_accuracy=correct / seen,
            eval_accuracy=eval_acc,
            lr=lr,
            seconds=time.perf_counter() - started,
        )
        history.epochs.append(record)
        task.end_epoch(record)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            save_atomic(
                {
                    "trained": task.trained.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "generator": generator.get_state(),
                    "rng": torch.get_rng_state(),
                    "history": [asdict(r) for r in history.epochs],
                    "config": config.to_dict(),
                    "task": task.extra_state(),
                },
                tmp,
                path,
            )
        if on_epoch is not None:
            on_epoch(record, config.epochs)
        if observer is not None:
            extra = {"phase": desc, **task.epoch_metrics()}
            observer.epoch(record, config.epochs, history.resumed_from, extra)
        if progress:
            shown = f", eval acc {100 * eval_acc:.2f}%" if eval_acc is not None else ""
            shown += "".join(f", {k} {v}" for k, v in task.status().items())
            tqdm.write(
                f"{desc} epoch {epoch + 1}/{config.epochs}: loss {record.loss:.4f}, "
                f"train acc {record.train_accuracy:.4f}{shown} ({record.seconds:.1f}s)"
            )
    task.eval()
    return history


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
