"""Perturbation-based architecture selection (DARTS-PT; Wang et al., "Rethinking Architecture
Selection in Differentiable NAS", ICLR 2021).

An operation's architecture weight does not say how much the supernet relies on it: in a short
search the weights of parameter-free operations (skip connections, pooling) grow while the
convolutions are still untrained, and the argmax then keeps a cell of pools. DARTS-PT instead
asks the supernet: remove one operation from one edge (its weight set to 0, the others untouched)
and measure how much worse the supernet does; the operation whose removal hurts most is the one
the supernet needs. Nodes keep the two inputs whose removal (the whole edge zeroed) hurts most.

Here "worse" is the rise of the search objective (the KD loss against the stage's residual,
eq. 6 of ResKD) on a fixed sample of the training set, batch statistics in BatchNorm as in the
search, every perturbation compared on the same images. The budget is left to the derivation's
repair (``search.budget``), which trades operations by these scores per MFLOP saved. DARTS-PT
projects edges one at a time and fine-tunes the supernet in between; here every edge is scored
once on the trained supernet (no fine-tuning), which keeps the selection at seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from space.genotypes import Edge, Genotype
from space.supernet import CELL_KINDS, Supernet, edge_inputs

Batch = tuple[Tensor, Tensor, Tensor]  # images, labels, dataset indices
BatchLoss = Callable[[Tensor, Tensor, Tensor], Tensor]
Scores = dict[str, list[dict[str, float]]]


@dataclass
class Importance:
    """What removing each part costs: the objective's rise (>0: the supernet needs it)."""

    ops: Scores  # per kind, per edge, per non-``none`` candidate
    edges: dict[str, list[float]]  # per kind, per edge: the whole edge removed
    base_loss: float
    evaluations: int

    def genotype(self, steps: int) -> Genotype:
        """Per edge the operation whose removal hurts most; per node the two edges whose removal
        hurts most."""
        cells: dict[str, list[Edge]] = {}
        for kind in CELL_KINDS:
            edges: list[Edge] = []
            for node in range(steps):
                ranked = sorted(
                    (
                        (self.edges[kind][e], e, i)
                        for e, (j, i) in enumerate(edge_inputs(steps))
                        if j == node
                    ),
                    reverse=True,
                )
                for _, e, i in sorted(ranked[:2], key=lambda t: t[2]):
                    row = self.ops[kind][e]
                    edges.append((max(row, key=row.__getitem__), i))
            cells[kind] = edges
        return Genotype.of(cells["normal"], cells["reduce"])

    def to_dict(self) -> dict[str, object]:
        return {
            "base_loss": self.base_loss,
            "evaluations": self.evaluations,
            "ops": self.ops,
            "edges": self.edges,
        }


@torch.no_grad()
def importance(
    supernet: Supernet,
    loss: BatchLoss,
    batches: Sequence[Batch],
    *,
    ops: bool = True,
    edges: bool = True,
) -> Importance:
    """Score every non-``none`` operation (``ops``) and every edge (``edges``) of ``supernet`` by
    the rise of ``loss`` over ``batches`` when it is removed. BatchNorm uses batch statistics;
    its running statistics are restored afterwards."""
    was_training = supernet.training
    buffers = {k: v.clone() for k, v in supernet.named_buffers()}
    supernet.train()
    device = next(supernet.parameters()).device
    data = [(x.to(device), y.to(device), i) for x, y, i in batches]
    base = {kind: w.detach().clone() for kind, w in supernet.weights().items()}
    evaluations = 0

    def mean_loss(weights: dict[str, Tensor]) -> float:
        nonlocal evaluations
        evaluations += 1
        with supernet.using(weights):
            total = sum(float(loss(x, y, i)) * len(x) for x, y, i in data)
        return total / sum(len(x) for x, _, _ in data)

    try:
        base_loss = mean_loss(base)
        op_scores: Scores = {kind: [] for kind in CELL_KINDS}
        edge_scores: dict[str, list[float]] = {kind: [] for kind in CELL_KINDS}
        for kind in CELL_KINDS:
            for e, cands in enumerate(supernet.candidates[kind]):
                row: dict[str, float] = {}
                real = [k for k, op in enumerate(cands) if op != "none"]
                for k in real if ops and len(real) > 1 else []:
                    weights = {n: w.clone() for n, w in base.items()}
                    weights[kind][e, k] = 0.0
                    row[cands[k]] = mean_loss(weights) - base_loss
                if not row:  # one operation (or not asked): nothing to choose between
                    row = {cands[k]: 0.0 for k in real}
                op_scores[kind].append(row)
                if edges:
                    weights = {n: w.clone() for n, w in base.items()}
                    weights[kind][e] = 0.0
                    edge_scores[kind].append(mean_loss(weights) - base_loss)
                else:
                    edge_scores[kind].append(0.0)
    finally:
        for name, buffer in supernet.named_buffers():
            buffer.copy_(buffers[name])
        supernet.train(was_training)
    return Importance(op_scores, edge_scores, base_loss, evaluations)
