"""Search strategies behind one interface: a strategy trains supernets on the search objective and
returns the argmax genotype, a weight for every operation on every edge (what the budget-aware
derivation trades by) and the per-epoch history.

- ``stacnas`` (default; Li et al. 2019): stage 1 searches among one representative per operation
  group (zero, pooling, identity, separable conv, dilated conv); stage 2 expands each edge's
  winning group into its members and searches among them. One-level optimisation.
- ``darts`` (Liu et al.): one stage over all eight operations; first-order bilevel by default.
- ``nni-darts``: NNI 3.0's DARTS strategy on the same cells and objective (``search.nni_adapter``,
  the only module that imports NNI; ``pip install .[nni]``).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from distill.residual import ResidualDistillation
from distill.train import Indexed, fit, loader, resolve_device
from search.budget import NON_ZERO, Scores, learnable_mflops
from search.perturb import Batch, Importance, importance
from search.spec import SearchSpec
from search.task import SearchTask
from space.genotypes import Genotype
from space.operations import GROUP_OF, GROUPS, PRIMITIVES, REPRESENTATIVES
from space.supernet import (
    CELL_KINDS,
    Candidates,
    EdgeStrength,
    NetShape,
    Supernet,
    argmax_genotype,
    uniform_candidates,
)

Probabilities = dict[str, list[dict[str, float]]]
TIE_BREAK = 1e-3  # weight of stage 2's within-group preference in STACNAS's operation scores
# Builds the residual KD objective for a network on a subset of the training set (None: all of it).
ObjectiveFactory = Callable[[torch.nn.Module, list[int] | None], ResidualDistillation]


@dataclass
class SearchContext:
    spec: SearchSpec
    shape: NetShape
    train_data: Dataset[tuple[Tensor, int]]
    objective: ObjectiveFactory
    device: str
    checkpoint_dir: Path
    progress: bool = True
    log: Callable[[str], None] = print


@dataclass
class StrategyResult:
    genotype: Genotype
    scores: Scores
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds_per_stage: list[float] = field(default_factory=list)
    selection: dict[str, Any] = field(default_factory=lambda: {"method": "argmax"})


class Strategy(Protocol):
    name: str

    def search(self, ctx: SearchContext) -> StrategyResult: ...


def _cycle(batches: Any) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    while True:  # a fresh shuffle each pass
        yield from batches


def train_supernet(
    ctx: SearchContext,
    candidates: dict[str, Candidates],
    stage: str,
    *,
    edge_strength: EdgeStrength = "max",
    layers: int | None = None,
) -> tuple[Supernet, list[dict[str, Any]], float]:
    """Train one supernet on the objective with the spec's optimisation; resumable per epoch.
    With ``layers`` (a shallower proxy than the derived network) the budget is scaled by the
    ratio of the two depths' costs of a cell of learnable operations, so the penalty still asks
    for the derived network's share of the budget. The supernet is ``search_width`` times wider
    than the derived network; its MFLOPs are counted at the derived network's channels."""
    spec = ctx.spec
    torch.manual_seed(spec.seed)
    shape, budget = ctx.shape, spec.budget_mflops
    if layers is not None and layers != shape.layers:
        shape = replace(shape, layers=layers)
        budget *= learnable_mflops(shape) / learnable_mflops(ctx.shape)
    supernet = Supernet(
        shape.with_channels(spec.supernet_channels(shape.channels)),
        candidates,
        edge_strength=edge_strength,
        partial=spec.partial_channels,
        cost_shape=shape,
        weighting=spec.weighting,
        aux_skip=spec.aux_skip > 0,
    )
    n = len(ctx.train_data)  # type: ignore[arg-type]
    optimization = spec.resolved_optimization
    held_out = held_batches = None
    train_data: Dataset[tuple[Tensor, int]] = ctx.train_data
    objective = ctx.objective(supernet, None)
    if optimization == "bilevel":
        order = torch.randperm(n, generator=torch.Generator().manual_seed(spec.seed)).tolist()
        cut = max(1, min(n - 1, round(n * (1 - spec.held_out))))
        train_idx, held_idx = order[:cut], order[cut:]
        train_data = Subset(ctx.train_data, train_idx)
        objective = ctx.objective(supernet, train_idx)
        held_out = ctx.objective(supernet, held_idx)
        generator = torch.Generator().manual_seed(spec.seed + 1)
        held_batches = _cycle(
            loader(
                Indexed(Subset(ctx.train_data, held_idx)),
                batch_size=spec.batch_size,
                shuffle=True,
                generator=generator,
            )
        )
    task = SearchTask(
        supernet,
        objective=objective,
        budget_mflops=budget,
        flops_weight=spec.flops_weight,
        budget_floor=spec.resolved_budget_floor,
        arch_lr=spec.arch_lr,
        arch_weight_decay=spec.arch_weight_decay,
        optimization=optimization,
        grad_clip=spec.grad_clip,
        warmup_epochs=spec.warmup_epochs,
        beta_decay=spec.beta_decay,
        random_smoothing=spec.random_smoothing,
        zero_one=spec.zero_one_loss,
        aux_skip=spec.aux_skip,
        seed=spec.seed,
        held_out=held_out,
        held_out_batches=held_batches,
    )
    history = fit(
        task,
        train_data,
        config=spec.train_config(ctx.device),
        checkpoint_dir=ctx.checkpoint_dir / stage,
        desc=f"search {stage}",
        progress=ctx.progress,
    )
    for record in task.history:
        record["stage"], record["budget_mflops"] = stage, budget
    seconds = sum(r.seconds for r in history.epochs)
    return supernet.cpu().eval(), task.history, seconds


def selection_batches(ctx: SearchContext) -> list[Batch]:
    """The fixed sample of the training set that perturbation-based selection scores on."""
    n = len(ctx.train_data)  # type: ignore[arg-type]
    generator = torch.Generator().manual_seed(ctx.spec.seed + 2)
    chosen = torch.randperm(n, generator=generator)[: ctx.spec.selection_samples].tolist()
    data = Subset(Indexed(ctx.train_data), chosen)
    return list(loader(data, batch_size=ctx.spec.batch_size))


def perturbation(
    ctx: SearchContext, supernet: Supernet, stage: str, *, edges: bool = True
) -> Importance:
    """DARTS-PT's scores of ``supernet`` on the search objective (``search.perturb``)."""
    device = resolve_device(ctx.device)
    supernet.to(device)
    objective = ctx.objective(supernet, None).to(device)
    started = time.perf_counter()
    scores = importance(
        supernet,
        lambda x, y, i: objective.loss(x, y, i)[0],
        selection_batches(ctx),
        edges=edges,
    )
    supernet.cpu()
    ctx.log(
        f"{stage}: perturbation-based selection, {scores.evaluations} evaluations on "
        f"{ctx.spec.selection_samples} images in {time.perf_counter() - started:.1f}s"
    )
    return scores


class StacNAS:
    name = "stacnas"
    stage1_ops: tuple[str, ...] = ("none", *(REPRESENTATIVES[g] for g in GROUPS if g != "zero"))

    def search(self, ctx: SearchContext) -> StrategyResult:
        pt = ctx.spec.selection == "perturbation"
        stage1, history1, t1 = train_supernet(
            ctx,
            uniform_candidates(self.stage1_ops, ctx.shape.steps),
            "stage1",
            layers=ctx.spec.stage1_layers,
        )
        # stage 1 decides each edge's group; stage 2 its member and the node's inputs
        selection: dict[str, Any] = {"method": ctx.spec.selection}
        if pt:
            found1 = perturbation(ctx, stage1, "stage1", edges=False)
            p1, selection["stage1"] = found1.ops, found1.to_dict()
        else:
            p1 = stage1.probabilities()
        winners = {kind: [self._winner(edge) for edge in p1[kind]] for kind in CELL_KINDS}
        ctx.log(
            "STACNAS stage 1 groups: "
            + "; ".join(f"{kind} {' '.join(w[:4])}..." for kind, w in winners.items())
        )
        candidates = {
            kind: tuple(("none", *GROUPS[g]) for g in winners[kind]) for kind in CELL_KINDS
        }
        stage2, history2, t2 = train_supernet(ctx, candidates, "stage2", edge_strength="non_zero")
        if pt:
            found = perturbation(ctx, stage2, "stage2")
            genotype = found.genotype(ctx.shape.steps)
            scores = self._pt_scores(p1, found.ops, winners)
            selection["stage2"] = found.to_dict()
        else:
            genotype = stage2.genotype()
            scores = self._scores(p1, stage2.probabilities(), winners)
        return StrategyResult(genotype, scores, history1 + history2, [t1, t2], selection)

    @staticmethod
    def _pt_scores(s1: Probabilities, s2: Probabilities, winners: dict[str, list[str]]) -> Scores:
        """Perturbation scores (the objective's rise when an operation is removed) of every
        operation on every edge: its group's stage-1 score, plus, inside the winning group, its
        own stage-2 score (the members of the other groups were not searched in stage 2)."""
        return {
            kind: [
                {
                    op: s1[kind][e][REPRESENTATIVES[GROUP_OF[op]]]
                    + (s2[kind][e][op] if GROUP_OF[op] == winners[kind][e] else 0.0)
                    for op in NON_ZERO
                }
                for e in range(len(s1[kind]))
            ]
            for kind in CELL_KINDS
        }

    @staticmethod
    def _winner(edge: dict[str, float]) -> str:
        groups = {GROUP_OF[op]: w for op, w in edge.items() if op != "none"}
        return max(groups, key=lambda g: groups[g])

    @staticmethod
    def _scores(p1: Probabilities, p2: Probabilities, winners: dict[str, list[str]]) -> Scores:
        """Weight of every operation on every edge, in the two stages' order: stage 1's group
        weight decides between groups, stage 2's weight within the winning group only breaks ties
        inside it (P(group) x P(op | group) would favour one-member groups such as identity over
        a winning group whose weight is split between two similar members)."""
        scores: dict[str, list[dict[str, float]]] = {}
        for kind in CELL_KINDS:
            scores[kind] = []
            for e, edge1 in enumerate(p1[kind]):
                members = GROUPS[winners[kind][e]]
                inside = sum(p2[kind][e][m] for m in members)
                row = {}
                for op in NON_ZERO:
                    group = GROUP_OF[op]
                    p_group = edge1[REPRESENTATIVES[group]]
                    within = (
                        p2[kind][e][op] / inside
                        if group == winners[kind][e]
                        else 1 / len(GROUPS[group])
                    )
                    row[op] = p_group + TIE_BREAK * within
                scores[kind].append(row)
        return scores


class Darts:
    name = "darts"

    def search(self, ctx: SearchContext) -> StrategyResult:
        supernet, history, seconds = train_supernet(
            ctx, uniform_candidates(PRIMITIVES, ctx.shape.steps), "darts"
        )
        if ctx.spec.selection == "perturbation":
            found = perturbation(ctx, supernet, "darts")
            selection = {"method": "perturbation", "darts": found.to_dict()}
            return StrategyResult(
                found.genotype(ctx.shape.steps), found.ops, history, [seconds], selection
            )
        p = supernet.probabilities()
        scores = {kind: [{op: e[op] for op in NON_ZERO} for e in p[kind]] for kind in CELL_KINDS}
        return StrategyResult(argmax_genotype(p, ctx.shape.steps), scores, history, [seconds])


class NniDarts:
    name = "nni-darts"

    def search(self, ctx: SearchContext) -> StrategyResult:
        # NNI is optional and pins old packages: imported only when this strategy runs.
        adapter = importlib.import_module("search.nni_adapter")
        result: StrategyResult = adapter.search(ctx)
        return result


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (StacNAS(), Darts(), NniDarts())}
