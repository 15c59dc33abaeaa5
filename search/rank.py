"""Choosing among a search's best few networks by training each briefly on the objective.

DARTS's own protocol does not take one argmax on trust: it runs the search four times and keeps
the cell that does best after a short training from scratch. Here the candidates come from one
trained supernet: its derivation first, then genotypes drawn from the architecture distribution
it learnt (per edge an operation with probability proportional to its weight, per node the two
inputs whose perturbed strengths are largest: the Gumbel-max trick on the log-weights), each
brought under the budget by the same repair. Every candidate is trained from scratch for
``rank_epochs`` on the search's objective (the KD loss against the residual) on 80% of the
search's training set, and the one with the lowest objective on the other 20% is kept. The
choice uses training data only; test data never enters a search.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from distill.train import Indexed, TrainConfig, fit, loader, resolve_device
from search.budget import NON_ZERO, Derivation, Scores, derive_within_budget
from space.genotypes import Genotype
from space.supernet import CELL_KINDS, NetShape, argmax_genotype

HELD_OUT = 0.2  # share of the search's training set a candidate is judged on
DRAWS = 64  # attempts at drawing distinct candidates


@dataclass
class Ranked:
    derivation: Derivation
    source: str  # "argmax" or "drawn"
    held_out_loss: float
    held_out_accuracy: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "genotype": self.derivation.genotype.to_dict(),
            "channels": self.derivation.channels,
            "mflops": self.derivation.mflops,
            "source": self.source,
            "held_out_loss": self.held_out_loss,
            "held_out_accuracy": self.held_out_accuracy,
            "seconds": self.seconds,
        }


def drawn_scores(scores: Scores, rng: random.Random) -> dict[str, list[dict[str, float]]]:
    """The weights with Gumbel noise on their logarithms: the argmax of each edge's perturbed
    weights is a draw from the categorical distribution of its (non-zero) weights."""
    out: dict[str, list[dict[str, float]]] = {}
    for kind in CELL_KINDS:
        edges = []
        for weights in scores[kind]:
            ops = {op: w for op, w in weights.items() if op in NON_ZERO and w > 0}
            total = sum(ops.values()) or 1.0
            edges.append(
                {
                    op: math.exp(math.log(w / total) - math.log(-math.log(rng.random() or 1e-12)))
                    for op, w in ops.items()
                }
            )
        out[kind] = edges
    return out


def candidates(
    first: Derivation,
    scores: Scores,
    *,
    shape: NetShape,
    budget_mflops: float,
    min_channels: int,
    count: int,
    seed: int,
) -> list[tuple[Derivation, str]]:
    """The search's own derivation and up to ``count - 1`` distinct ones drawn around it."""
    rng = random.Random(seed)
    found: list[tuple[Derivation, str]] = [(first, "argmax")]
    seen = {_key(first)}
    for _ in range(DRAWS):
        if len(found) >= count:
            break
        start = argmax_genotype(drawn_scores(scores, rng), shape.steps)
        d = derive_within_budget(
            start, scores, shape=shape, budget_mflops=budget_mflops, min_channels=min_channels
        )
        if _key(d) not in seen:
            seen.add(_key(d))
            found.append((d, "drawn"))
    return found


def _key(d: Derivation) -> tuple[Any, ...]:
    g: Genotype = d.genotype
    return (tuple(g.normal), tuple(g.reduce), d.channels)


def rank(
    options: list[tuple[Derivation, str]],
    *,
    shape: NetShape,
    train_data: Dataset[tuple[Tensor, int]],
    objective: Callable[[torch.nn.Module, list[int] | None], Any],
    epochs: int,
    batch_size: int,
    seed: int,
    device: str,
    progress: bool,
    log: Callable[[str], None],
    precision: str = "auto",
    devices: int = 1,
) -> list[Ranked]:
    """Train each option from scratch on 80% of ``train_data`` and judge it on the rest; the
    list comes back best first (lowest held-out objective)."""
    n = len(train_data)  # type: ignore[arg-type]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    cut = max(1, min(n - 1, round(n * (1 - HELD_OUT))))
    train_idx, held_idx = order[:cut], order[cut:]
    config = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=0.025,
        momentum=0.9,
        weight_decay=3e-4,
        schedule="cosine",
        seed=seed,
        device=device,
        grad_clip=5.0,
        precision=precision,
        devices=devices,
    )
    ranked = []
    for i, (d, source) in enumerate(options):
        started = time.perf_counter()
        torch.manual_seed(seed)
        net = shape.derived(d.genotype, d.channels)
        task = objective(net, train_idx)
        fit(
            task,
            Subset(train_data, train_idx),
            config=config,
            desc=f"rank {i + 1}/{len(options)}",
            progress=progress,
        )
        loss, accuracy = _judge(objective(net, held_idx), Subset(train_data, held_idx), device)
        seconds = time.perf_counter() - started
        ranked.append(Ranked(d, source, loss, accuracy, seconds))
        log(
            f"rank {i + 1}/{len(options)} ({source}, {d.mflops:.4f} MFLOPs): held-out objective "
            f"{loss:.4f}, accuracy {100 * accuracy:.2f}% ({seconds:.0f} s)"
        )
    return sorted(ranked, key=lambda r: r.held_out_loss)


@torch.no_grad()
def _judge(task: Any, data: Dataset[tuple[Tensor, int]], device: str) -> tuple[float, float]:
    """Mean objective and accuracy of base + candidate on ``data``."""
    task.eval()
    total, correct, seen = 0.0, 0, 0
    dev = resolve_device(device)
    for x, y, index in loader(Indexed(data), batch_size=256):
        x, y = x.to(dev), y.to(dev)
        loss, s = task.loss(x, y, index)
        total += float(loss) * len(y)
        correct += int((s.argmax(1) == y).sum())
        seen += len(y)
    return total / seen, correct / seen
