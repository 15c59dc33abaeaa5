"""What the strategies that train our own supernet share (``stacnas``, ``darts``; a plug-in may
too): :class:`SupernetSpec`, the fields of that training, and :func:`train_supernet`, one stage
of it on the search objective, with DARTS-PT's :func:`perturbation` scores for the selection."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import torch
from pydantic import Field, ValidationInfo, field_validator
from torch import Tensor
from torch.utils.data import Dataset, Subset

from distill.train import Indexed, fit, loader, resolve_device
from search.budget import NON_ZERO, Scores, learnable_mflops
from search.perturb import Batch, Importance, importance
from search.spec import StrategySpec
from search.strategies.base import Probabilities, SearchContext
from search.task import SearchSettings, SearchTask
from space.supernet import CELL_KINDS, Candidates, EdgeStrength, Supernet


class SupernetSpec(StrategySpec):
    """A search that trains our supernet (:func:`train_supernet`): its regularisers and the
    perturbation-based selection's sample."""

    beta_decay: float = Field(
        0.0,
        ge=0,
        le=1e4,
        allow_inf_nan=False,
        description="beta-DARTS: weight of the Beta-Decay regularisation (mean log-sum-exp of "
        "each edge's architecture parameters), ramped linearly from 0 over each stage; 0: off",
    )
    random_smoothing: float = Field(
        0.0,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="SDARTS-RS: the weights train at the softmax weights plus uniform noise in "
        "[-epsilon, epsilon] (clipped, renormalised), epsilon ramped linearly from 0.03 to this "
        "value over each stage (SDARTS: 0.3); 0: off",
    )
    zero_one_loss: float = Field(
        0.0,
        ge=0,
        le=1e4,
        allow_inf_nan=False,
        description="FairDARTS: weight of the zero-one loss that pushes each sigmoid weight to 0 "
        "or 1 (FairDARTS: 10); needs weighting: sigmoid; 0: off",
    )
    selection_samples: int = Field(
        256, ge=8, le=1_000_000, description="perturbation: training images it scores on"
    )

    @field_validator("random_smoothing")
    @classmethod
    def _not_sampled(cls, value: float, info: ValidationInfo) -> float:
        if value and info.data.get("weighting") == "gumbel":
            raise ValueError(
                "gumbel trains on sampled architectures, not on SDARTS-RS's perturbed weights: "
                "use random_smoothing: 0 with it"
            )
        return value

    @field_validator("zero_one_loss")
    @classmethod
    def _sigmoid_only(cls, value: float, info: ValidationInfo) -> float:
        if value and info.data.get("weighting", "softmax") != "sigmoid":
            raise ValueError("needs weighting: sigmoid (softmax weights already sum to 1); use 0")
        return value

    def left_out(self) -> set[str]:
        off = {
            "selection_samples": self.selection == "argmax",
            "beta_decay": self.beta_decay == 0,
            "random_smoothing": self.random_smoothing == 0,
            "zero_one_loss": self.zero_one_loss == 0,
        }
        return super().left_out() | {name for name, unset in off.items() if unset}

    def settings(self, budget_mflops: float) -> SearchSettings:
        """The search task's settings at ``budget_mflops`` (a stage's, scaled to its depth)."""
        return SearchSettings(
            budget_mflops=budget_mflops,
            flops_weight=self.flops_weight,
            budget_floor=self.resolved_budget_floor,
            arch_lr=self.arch_lr,
            arch_weight_decay=self.arch_weight_decay,
            optimization=self.resolved_optimization,
            grad_clip=self.grad_clip,
            warmup_epochs=self.warmup_epochs,
            beta_decay=self.beta_decay,
            random_smoothing=self.random_smoothing,
            zero_one=self.zero_one_loss,
            aux_skip=self.aux_skip,
            seed=self.seed,
        )


def supernet_spec(ctx: SearchContext) -> SupernetSpec:
    if not isinstance(ctx.spec, SupernetSpec):
        raise TypeError(f"strategy {ctx.spec.strategy!r} does not train our supernet")
    return ctx.spec


def _held_out_split(
    ctx: SearchContext, supernet: Supernet
) -> tuple[Dataset[tuple[Tensor, int]], dict[str, Any]]:
    """Bilevel: the training part of the data and the task's held-out objective and batches
    (``held_out`` of the training set, drawn by the seed)."""
    spec, n = ctx.spec, len(ctx.train_data)  # type: ignore[arg-type]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(spec.seed)).tolist()
    cut = max(1, min(n - 1, round(n * (1 - spec.held_out))))
    train_idx, held_idx = order[:cut], order[cut:]
    generator = torch.Generator().manual_seed(spec.seed + 1)
    held = loader(
        Indexed(Subset(ctx.train_data, held_idx)),
        batch_size=spec.batch_size,
        shuffle=True,
        generator=generator,
    )
    return Subset(ctx.train_data, train_idx), {
        "objective": ctx.objective(supernet, train_idx),
        "held_out": ctx.objective(supernet, held_idx),
        "held_out_batches": held,
    }


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
    spec = supernet_spec(ctx)
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
    train_data: Dataset[tuple[Tensor, int]] = ctx.train_data
    split: dict[str, Any] = {"objective": ctx.objective(supernet, None)}
    if spec.resolved_optimization == "bilevel":
        train_data, split = _held_out_split(ctx, supernet)
    task = SearchTask(supernet, settings=spec.settings(budget), **split)
    history = fit(
        task,
        train_data,
        config=spec.train_config(ctx.device, precision=ctx.precision, devices=ctx.devices),
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
    spec = supernet_spec(ctx)
    n = len(ctx.train_data)  # type: ignore[arg-type]
    generator = torch.Generator().manual_seed(spec.seed + 2)
    chosen = torch.randperm(n, generator=generator)[: spec.selection_samples].tolist()
    data = Subset(Indexed(ctx.train_data), chosen)
    return list(loader(data, batch_size=spec.batch_size))


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
        f"{supernet_spec(ctx).selection_samples} images in {time.perf_counter() - started:.1f}s"
    )
    return scores


def non_zero_scores(probabilities: Probabilities) -> Scores:
    """Every non-zero operation's weight on every edge (what the derivation trades by)."""
    return {
        kind: [{op: edge[op] for op in NON_ZERO} for edge in probabilities[kind]]
        for kind in CELL_KINDS
    }
