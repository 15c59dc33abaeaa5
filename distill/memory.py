"""Device memory: a training that runs out of it fails with a message a user can act on, and
each stage's peak is measured.

A CUDA out-of-memory error (``torch.OutOfMemoryError``, which ``torch.cuda.OutOfMemoryError``
names too) inside ``distill.train.fit`` becomes :class:`DeviceOutOfMemory`, naming the training,
its batch size, precision and devices and what to lower; the memory the failed training held is
released first, so the process (a service worker) goes on to its next job.

The peak (:func:`reset_peak`, :func:`peak`): on a CUDA device the most memory PyTorch's tensors
held (``torch.cuda.max_memory_allocated``, reset when a stage starts); on a CPU the most resident
memory of the whole process since the reset (Linux's ``VmHWM``, reset through
``/proc/self/clear_refs``): tensors, the interpreter and the libraries alike. None where neither
can be read.
"""

from __future__ import annotations

import contextlib
import gc
from pathlib import Path
from typing import Any

import torch

CLEAR_REFS = Path("/proc/self/clear_refs")
STATUS = Path("/proc/self/status")
# the largest peak launched ranks reported since the last reset (their own processes' memory)
_ranks_peak: dict[str, Any] | None = None


class DeviceOutOfMemory(RuntimeError):
    """A training ran out of device memory; the message names it and what to lower."""


def out_of_memory_message(desc: str, *, batch_size: int, precision: str, devices: int) -> str:
    """What a user reads when training ``desc`` ran out of device memory (``precision``: the
    resolved one)."""
    lower = ["train.batch_size"]
    if precision == "32":
        lower.append("train.precision (bf16 or 16-mixed halve the activations)")
    lower.append(f"or spread the batch over more devices (devices: {devices * 2})")
    return (
        f"{desc}: the device ran out of memory at batch size {batch_size} (precision "
        f"{precision}, {devices} device{'s' if devices > 1 else ''}); lower {', '.join(lower)}"
    )


def release() -> None:
    """Give back what the failed training held (its tensors are unreachable by now)."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _cuda() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_initialized()


def reset_peak() -> None:
    """Start measuring a stage's peak."""
    global _ranks_peak
    _ranks_peak = None
    if _cuda():
        torch.cuda.reset_peak_memory_stats()
    with contextlib.suppress(OSError):
        CLEAR_REFS.write_text("5")  # resets VmHWM to the current resident set


def note_peak(figures: dict[str, Any]) -> None:
    """A launched rank's :func:`peak` (``distill.distributed``): where the stage trained, so
    the stage's peak is the largest the ranks reported."""
    global _ranks_peak
    if figures.get("peak_memory_bytes") is None:
        return
    if _ranks_peak is None or figures["peak_memory_bytes"] > _ranks_peak["peak_memory_bytes"]:
        _ranks_peak = dict(figures)


def _rss_peak() -> int | None:
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak() -> dict[str, Any]:
    """The peak since :func:`reset_peak`: ``peak_memory_bytes`` and what it measures
    (``peak_memory_of``: ``cuda`` or ``rss``); a launch's ranks' when they trained it."""
    if _ranks_peak is not None:
        return dict(_ranks_peak)
    if _cuda():
        own: int | None = int(torch.cuda.max_memory_allocated())
        of = "cuda"
    else:
        own, of = _rss_peak(), "rss"
    return {"peak_memory_bytes": own, "peak_memory_of": of if own is not None else None}
