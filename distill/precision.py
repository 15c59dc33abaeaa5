"""The arithmetic a training runs in, and where its tensors live on the device.

``precision`` (``TrainConfig.precision``, a run config's ``train.precision``):

- ``32``: float32 throughout;
- ``bf16``: the forward pass under ``torch.autocast`` in bfloat16 (weights, optimizer and
  gradients stay float32; bfloat16 has float32's exponent range, so no loss scaling);
- ``16-mixed``: autocast in float16 with a ``GradScaler`` (float16's range is narrow: the loss is
  scaled up before the backward pass, the gradients unscaled before clipping and the step, and a
  step whose gradients overflowed is skipped while the scale shrinks);
- ``auto`` (the default): ``bf16`` on a CUDA device that supports it
  (``torch.cuda.is_bf16_supported()``), ``32`` elsewhere (on a CPU: every result stays what it
  was before the setting existed, and so does every stage key).

:class:`Amp` is what a training step needs of it: the autocast context, the backward pass, the
unscaling and the step. Evaluation and cached logits run in float32 whatever the setting.

On CUDA devices convolutions pick their algorithm by timing (``cudnn.benchmark``) and models and
batches of images are kept channels-last (NHWC, the layout tensor cores read), unless a task
opts out (``TrainTask.channels_last``); on CPUs neither changes.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

Precision = Literal["auto", "32", "bf16", "16-mixed"]
Resolved = Literal["32", "bf16", "16-mixed"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "16-mixed": torch.float16}


def resolve_precision(precision: str, device: torch.device) -> Resolved:
    """What ``precision`` means on ``device``: ``auto`` is ``bf16`` on a CUDA device that
    supports it, else ``32``."""
    if precision == "auto":
        cuda = device.type == "cuda" and torch.cuda.is_available()
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else "32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision: must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    resolved: Resolved = precision  # type: ignore[assignment]
    return resolved


def precision_key(precision: str, device: torch.device) -> dict[str, str]:
    """The stage-key field of a precision: none at float32 (so stages stored before the setting
    existed keep their keys), else the resolved name (``auto`` on a GPU is ``bf16``: its results
    differ from float32's)."""
    resolved = resolve_precision(precision, device)
    return {} if resolved == "32" else {"precision": resolved}


@dataclass
class Amp:
    """A training step's arithmetic at ``precision`` on ``device_type``: see the module."""

    precision: Resolved = "32"
    device_type: str = "cpu"

    def __post_init__(self) -> None:
        self.scaler: torch.amp.GradScaler | None = (
            torch.amp.GradScaler(self.device_type) if self.precision == "16-mixed" else None
        )
        self.stepped = False  # an optimizer stepped since the scale last adapted

    @classmethod
    def of(cls, precision: str, device: torch.device) -> Amp:
        return cls(resolve_precision(precision, device), device.type)

    def autocast(self) -> AbstractContextManager[Any]:
        """The forward pass's context (nothing at float32)."""
        if self.precision == "32":
            return nullcontext()
        return torch.autocast(self.device_type, dtype=DTYPES[self.precision])

    def scale(self, loss: Tensor) -> Tensor:
        """``loss`` as its backward pass sees it (scaled up under ``16-mixed``)."""
        return self.scaler.scale(loss) if self.scaler is not None else loss

    def backward(self, loss: Tensor) -> None:
        self.scale(loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """The gradients of ``optimizer``'s parameters back at their true size (before clipping)."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()``, skipped under ``16-mixed`` when its gradients overflowed."""
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.stepped = True
        else:
            optimizer.step()

    def update(self) -> None:
        """After a training step's optimizers stepped: the loss scale adapts (``16-mixed``; a
        step that stepped none leaves it)."""
        if self.scaler is not None and self.stepped:
            self.scaler.update()
            self.stepped = False

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


def channels_last(device: torch.device) -> bool:
    """Whether models and image batches go channels-last on ``device`` (CUDA only)."""
    return device.type == "cuda"


def place(model: nn.Module, device: torch.device, *, last: bool) -> nn.Module:
    """``model`` on ``device``, its 4-d weights channels-last when ``last``; on a CUDA device
    cuDNN picks its convolution algorithms by timing them (``cudnn.benchmark``)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model.to(device)
    if last:
        model.to(memory_format=torch.channels_last)
    return model


def batch_to(x: Tensor, device: torch.device, *, last: bool) -> Tensor:
    """A batch on ``device`` (channels-last when ``last`` and it is a batch of images)."""
    if last and x.dim() == 4:
        return x.to(device, non_blocking=True, memory_format=torch.channels_last)
    return x.to(device, non_blocking=True)
