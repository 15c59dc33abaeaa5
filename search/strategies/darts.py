"""``darts`` (Liu et al. 2019): one stage over all eight operations; first-order bilevel by
default."""

from __future__ import annotations

from typing import Literal

from search.spec import StrategySpec
from search.strategies.base import SearchContext, Strategy, StrategyResult, SupernetPlan
from search.strategies.training import (
    SupernetSpec,
    non_zero_scores,
    perturbation,
    train_supernet,
)
from space.operations import PRIMITIVES
from space.supernet import NetShape, argmax_genotype, uniform_candidates


class DartsSpec(SupernetSpec):
    """DARTS: one stage, first-order bilevel by default."""

    strategy: Literal["darts"] = "darts"


class Darts(Strategy):
    config = DartsSpec

    def plan(self, spec: StrategySpec, shape: NetShape) -> list[SupernetPlan]:
        return [SupernetPlan.of(spec, shape, "darts", PRIMITIVES, spec.layers)]

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
        return StrategyResult(
            argmax_genotype(p, ctx.shape.steps), non_zero_scores(p), history, [seconds]
        )
