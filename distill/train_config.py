"""How a network is trained, as a value: :class:`TrainConfig` (validated on construction), the
named presets, the overrides a run config may give, and the optimizer and learning-rate schedule a
config builds for the training loop (``distill.train.fit``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Annotated, Any, Literal

import torch
from pydantic import Field
from torch import nn

from distill.config import ConfigModel
from distill.precision import PRECISIONS, Precision, precision_key

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
    precision: str = "auto"  # distill.precision: auto, 32, bf16, 16-mixed
    devices: int = 1  # data-parallel processes (distill.distributed), each on its own device

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
            ("precision", self.precision in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
            ("devices", self.devices >= 1, "an integer >= 1"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(f"{name}: must be {allowed}, got {getattr(self, name)!r}")
        object.__setattr__(self, "milestones", tuple(self.milestones))

    def to_dict(self) -> dict[str, Any]:
        """The config as stage keys hash it: a field added later is left out at its default, so
        stages stored before it existed keep their keys. ``precision`` enters resolved, and only
        when it is not float32 (``auto`` on a CPU keeps today's keys, on a GPU it is ``bf16``);
        ``devices`` only above 1 (each device normalises its own share of a batch, so results
        differ from one device's)."""
        data = {**asdict(self), "milestones": list(self.milestones)}
        if self.grad_clip is None:
            del data["grad_clip"]
        for name in ("lr_min", "power"):
            if data[name] == getattr(TrainConfig, name):
                del data[name]
        del data["precision"], data["devices"]
        return data | self.run_key()

    def run_key(self) -> dict[str, Any]:
        """How it runs, as far as that changes results (what a stage key adds): the precision
        resolved, unless float32; the devices, above 1."""
        devices = {"devices": self.devices} if self.devices > 1 else {}
        return precision_key(self.precision, self.key_device) | devices

    @property
    def key_device(self) -> torch.device:
        """The device kind this config trains on, as far as a stage key needs it (``auto``: CUDA
        when a device is visible); unlike :func:`resolve_device` it never fails."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            return torch.device(self.device)
        except RuntimeError:
            return torch.device("cpu")


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
    precision: Precision | None = Field(
        None,
        description="auto (bf16 on a CUDA device that supports it, else 32), 32, bf16 "
        "(autocast) or 16-mixed (float16 autocast with loss scaling); default auto",
    )

    def settings(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


PAPER_PRESETS = ("cifar", "tiny-imagenet", "imagenet")  # their protocols augment the images


def preset(name: str, **overrides: Any) -> TrainConfig:
    if name not in PRESETS:
        raise ValueError(f"preset: unknown preset {name!r}; allowed: {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)


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


def make_optimizer(params: list[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer ``config`` names, over ``params``."""
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


def make_schedule(
    optimizer: torch.optim.Optimizer, config: TrainConfig
) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule ``config`` names, stepped once per epoch."""
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
