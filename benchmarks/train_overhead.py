"""How close the one training loop (``distill.train.fit``) runs to a plain PyTorch loop.

    python -m benchmarks.train_overhead [--epochs 2] [--repeats 2] [--threads 2] [--record FILE]

For each case, the same model (same initial weights), data, optimizer (SGD, momentum 0.9, the
preset's lr and weight decay, cosine schedule), batch size and threads are trained by
- ``fit``: as a stage trains (a checkpoint written every epoch, no progress bar, the service's
  per-batch cancel check and progress hook when ``--observed``), and by
- a minimal hand-written loop: ``DataLoader(shuffle=True)``, forward, cross-entropy, backward,
  step; nothing else.
Cases: ResNet-20 on CIFAR-shaped tensors (3x32x32, 2,048 images), the demo's teacher stage on
digits (ResNet-20, 1,437 images, batch 64) and the MNIST 5k S0 of ``benchmarks.reskd_seeds``
(ResNet-14x0.25, 4,000 images, batch 64). The runs alternate (fit, plain, fit, plain, ...) and
the best of ``--repeats`` of each counts. Prints images/s of both and their ratio; goal
``fit`` at least 0.95 of the plain loop.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from benchmarks.common import add_record_option, announce, write_record
from distill import observe
from distill.data import TensorImages, dataset_info, load_dataset, test_transform
from distill.models import NetSpec
from distill.train import PRESETS, Supervised, TrainConfig, fit


class Observer:
    """What a service worker's observer does per batch, without a database."""

    def __init__(self) -> None:
        self.batches = 0

    def exclusive(self, kind: str, key: str) -> Any:
        from contextlib import nullcontext

        return nullcontext()

    def stage_started(self, kind: str, key: str, name: str) -> None: ...

    def stage_reused(self, kind: str, key: str, name: str) -> None: ...

    def stage_finished(self, kind: str, key: str, seconds: float) -> None: ...

    def epoch(self, record: Any, total: int, resumed_from: int, extra: Any = None) -> None: ...

    def check(self) -> None: ...

    def batch(self, *args: Any, **kwargs: Any) -> None:
        self.batches += 1


def cases() -> list[tuple[str, str, Any, float, int]]:
    """(name, model, dataset, width, batch size)."""
    cifar = dataset_info("cifar10")
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2048, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (2048,), generator=g)
    cifar_like = TensorImages(images, labels, test_transform(cifar, image_size=32))
    digits = load_dataset("digits", augment=False).train
    mnist = load_dataset("mnist5k", augment=False).train
    return [
        ("resnet20, CIFAR-shaped tensors", "resnet20", (cifar, cifar_like), 1.0, 128),
        ("demo teacher stage (digits)", "resnet20", (dataset_info("digits"), digits), 1.0, 64),
        ("MNIST 5k S0 (resnet14x0.25)", "resnet14", (dataset_info("mnist5k"), mnist), 0.25, 64),
    ]


def plain_loop(model: nn.Module, data: Any, config: TrainConfig) -> float:
    """The minimal loop a person writes; returns images per second."""
    torch.manual_seed(config.seed)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum,
        weight_decay=config.weight_decay,
    )  # fmt: skip
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    batches = DataLoader(data, batch_size=config.batch_size, shuffle=True)
    model.train()
    started, seen = time.perf_counter(), 0
    for _ in range(config.epochs):
        for x, y in batches:
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(y)
        schedule.step()
    return seen / (time.perf_counter() - started)


def with_fit(model: nn.Module, data: Any, config: TrainConfig, observed: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        if observed:
            with observe.observing(Observer()):
                fit(Supervised(model), data, config=config, checkpoint_dir=Path(tmp),
                    progress=False)  # fmt: skip
        else:
            fit(Supervised(model), data, config=config, checkpoint_dir=Path(tmp), progress=False)
        seconds = time.perf_counter() - started
    return config.epochs * len(data) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--observed", action="store_true", help="with a worker's observer")
    add_record_option(parser)
    args = parser.parse_args()
    announce()
    torch.set_num_threads(args.threads)
    base = PRESETS["cpu-small"]
    print(f"threads {args.threads}, {args.epochs} epochs per run, best of {args.repeats}")
    rows = []
    for name, model_name, (info, data), width, batch in cases():
        config = TrainConfig(
            epochs=args.epochs, batch_size=batch, lr=base.lr, weight_decay=base.weight_decay,
            schedule="cosine", device="cpu",
        )  # fmt: skip
        spec = NetSpec.for_dataset(model_name, info, width=width)
        torch.manual_seed(0)
        initial = spec.build().state_dict()
        fits, plains = [], []
        for _ in range(args.repeats):
            model = spec.build()
            model.load_state_dict(initial)
            fits.append(with_fit(model, data, config, args.observed))
            model = spec.build()
            model.load_state_dict(initial)
            plains.append(plain_loop(model, data, config))
        ratio = max(fits) / max(plains)
        rows.append((name, max(fits), max(plains), ratio))
        print(
            f"{name:32s} fit {max(fits):8.1f} img/s   plain {max(plains):8.1f} img/s   "
            f"ratio {ratio:.3f}",
            flush=True,
        )
    worst = min(r[3] for r in rows)
    print(f"goal: fit >= 0.95 of the plain loop -> {'met' if worst >= 0.95 else 'NOT met'} "
          f"(worst {worst:.3f})")  # fmt: skip
    if args.record:
        keys = ("case", "fit images/s", "plain images/s", "ratio")
        figures = {"threads": args.threads, "rows": [dict(zip(keys, r, strict=True)) for r in rows]}
        print(f"record: {write_record(args.record, figures)}")


if __name__ == "__main__":
    main()
