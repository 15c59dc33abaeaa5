"""The teacher gate: before anything trains on the teacher, its accuracy on D_v is measured (a
stage of the store), and a given teacher near chance, or one that does clearly better under
another usual input normalisation than under the run's, stops the run with the likely cause.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from distill.config import ConfigError
from distill.data import DatasetInfo, dataset_info, num_samples
from distill.stages import StageStore, write_atomic
from distill.train import accuracy

WEAK_TEACHER = 2.0  # a teacher under this many times chance accuracy on D_v is stopped


class GateSettings(Protocol):
    """What the gate reads of a run config."""

    @property
    def teacher_checkpoint(self) -> str | None: ...
    @property
    def allow_weak_teacher(self) -> bool: ...


IMAGENET_NORMALISATION = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
GATE_MARGIN = 0.05  # another usual normalisation this much better on D_v: the run's is wrong
GATE_SAMPLES = 256  # D_v's first samples the other normalisations are tried on


def _normalisations(info: DatasetInfo, raw: Tensor) -> dict[str, tuple[list[float], list[float]]]:
    """The usual input normalisations a teacher may have been trained with: raw [0, 1] pixels,
    [-1, 1], ImageNet's, the dataset's catalogued one and D_v's own statistics."""
    c = info.in_chans

    def per(v: Sequence[float]) -> list[float]:
        return [round(float(x), 4) for x in (list(v) * c if len(v) == 1 else v)][:c]

    own = raw.transpose(0, 1).flatten(1)
    found = {
        "[0, 1] pixels": (per([0.0]), per([1.0])),
        "[-1, 1] pixels": (per([0.5]), per([0.5])),
        "the data's own statistics": (per(own.mean(1).tolist()), per(own.std(1).tolist())),
        f"{info.name}'s catalogued one": (
            per(dataset_info(info.name).mean),
            per(dataset_info(info.name).std),
        ),
    }
    if c == 3:
        found["ImageNet's"] = (list(IMAGENET_NORMALISATION[0]), list(IMAGENET_NORMALISATION[1]))
    return found


def _better_normalisation(
    net: nn.Module, d_v: Dataset[tuple[Tensor, int]], info: DatasetInfo, device: torch.device
) -> tuple[str, list[float], list[float], float, float] | None:
    """A usual normalisation under which the teacher does clearly better on D_v than under the
    run's (name, mean, std, its accuracy, the run's), or None."""
    n = min(GATE_SAMPLES, num_samples(d_v))
    xs, ys = zip(*(d_v[i] for i in range(n)), strict=True)
    x, y = torch.stack(list(xs)), torch.tensor(ys)
    shape = (1, info.in_chans, 1, 1)
    mean, std = torch.tensor(info.mean).view(shape), torch.tensor(info.std).view(shape)
    raw = x * std + mean

    def acc(m: Sequence[float], s: Sequence[float]) -> float:
        z = (raw - torch.tensor(m).view(shape)) / torch.tensor(s).view(shape)
        with torch.no_grad():
            logits = torch.cat([net(b.to(device)).cpu() for b in z.split(128)])
        return accuracy(logits, y)

    current = acc(info.mean, info.std)
    best = None
    for name, (m, s) in _normalisations(info, raw).items():
        if min(s) <= 0:
            continue
        a = acc(m, s)
        if a >= current + GATE_MARGIN and (best is None or a > best[3]):
            best = (name, m, s, a, current)
    return best


def gate(
    config: GateSettings,
    net: nn.Module,
    d_v: Dataset[tuple[Tensor, int]],
    info: DatasetInfo,
    device: torch.device,
    identity: dict[str, Any],
    store: StageStore,
    keys: tuple[str, str, dict[str, Any]],
    stages: list[dict[str, Any]],
) -> list[str]:
    """The teacher gate: T's D_v accuracy, measured before anything trains on it, stops a given
    teacher near chance, or one that does clearly better under another usual normalisation than
    under the run's (unless ``allow_weak_teacher``: then it is a warning). A teacher the run
    trained itself near chance is a warning: it was fed as it will be."""
    t_key, split_digest, data_key = keys
    acc, chance = identity["val_accuracy"], 1 / info.num_classes
    line = f"T {identity['arch']} on D_v: {100 * acc:.2f}% (chance {100 * chance:.2f}%)"
    store.log(f"teacher gate: {line}")
    found: dict[str, Any] = {}

    def measure(directory: Path) -> None:
        # a teacher the run trained was fed the run's normalisation; a given one may not have been
        given = config.teacher_checkpoint is not None
        better = _better_normalisation(net, d_v, info, device) if given else None
        found["better"] = better
        record = identity | {"better_normalisation": better}
        write_atomic(directory / "gate.json", json.dumps(record, indent=2))

    result = store.compute(
        "gate", {"teacher": t_key, "split": split_digest, **data_key},
        desc=f"teacher gate: {line}", make=measure,
        load=lambda d: found.update(
            better=json.loads((d / "gate.json").read_text()).get("better_normalisation")
        ),
    )  # fmt: skip
    stages.append(result.summary() | {"val_accuracy": acc})
    problems = _problems(config, acc, info, found.get("better"))
    if problems and config.teacher_checkpoint is not None and not config.allow_weak_teacher:
        raise ConfigError.at(
            ("teacher_checkpoint",),
            f"{'; '.join(problems)}; allow_weak_teacher: true runs on anyway",
        )
    return problems


def _problems(
    config: GateSettings, acc: float, info: DatasetInfo, better: tuple[Any, ...] | None
) -> list[str]:
    """What is wrong with a teacher that scores ``acc`` on D_v (``better``: a normalisation
    under which it does clearly better)."""
    chance = 1 / info.num_classes
    problems = []
    if acc < WEAK_TEACHER * chance and config.teacher_checkpoint is None:
        # trained here, on this run's data as fed: too little training, not a mismatch
        return [
            f"the teacher this run trained scores {100 * acc:.2f}% on D_v, under "
            f"{WEAK_TEACHER:g}x chance ({100 * WEAK_TEACHER * chance:.2f}%): train it longer "
            "(teacher_train.epochs) or give a trained one (teacher_checkpoint)"
        ]
    if acc < WEAK_TEACHER * chance:
        problems.append(
            f"the teacher scores {100 * acc:.2f}% on D_v, under {WEAK_TEACHER:g}x chance "
            f"({100 * WEAK_TEACHER * chance:.2f}%). Likely causes: its normalisation (this run "
            f"feeds mean {list(info.mean)} std {list(info.std)}; give the teacher's own as mean "
            f"and std), its class order (output i must be class "
            f"{', '.join(info.classes[:3])}, ... in this order), or its input size "
            f"({info.image_size}x{info.image_size} here; set image_size)"
        )
    if better is not None:
        name, m, s, a, current = better
        problems.append(
            f"the teacher scores {100 * current:.2f}% on D_v with this run's normalisation "
            f"(mean {list(info.mean)} std {list(info.std)}) but {100 * a:.2f}% with {name} "
            f"(mean {m} std {s}): it was likely trained with that one; set mean and std to it"
        )
    return problems
