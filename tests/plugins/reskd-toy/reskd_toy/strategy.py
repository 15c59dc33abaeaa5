"""``toy-random``: random search's one-shot baseline. Every operation on every edge gets a weight
drawn from a seeded Dirichlet; the budget-aware derivation then trades by those weights as it
does by a trained supernet's. Nothing is trained, so the dry run prices no stage."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from search.budget import NON_ZERO
from search.strategies import SearchContext, Strategy, StrategyResult, StrategySpec, SupernetPlan
from space.network import edge_inputs
from space.supernet import CELL_KINDS, NetShape, argmax_genotype


class RandomSpec(StrategySpec):
    """Random weights per edge (seeded): a floor any real strategy should beat."""

    strategy: Literal["toy-random"] = "toy-random"
    draw_seed: int = Field(0, ge=0, description="the seed of the weights' draw")


class RandomStrategy(Strategy):
    config = RandomSpec

    def plan(self, spec: StrategySpec, shape: NetShape) -> list[SupernetPlan]:
        return []

    def search(self, ctx: SearchContext) -> StrategyResult:
        assert isinstance(ctx.spec, RandomSpec)
        generator = torch.Generator().manual_seed(ctx.spec.draw_seed)
        edges = len(edge_inputs(ctx.shape.steps))
        scores: dict[str, list[dict[str, float]]] = {}
        for kind in CELL_KINDS:
            scores[kind] = []
            for _ in range(edges):
                # Dirichlet(1, ..., 1): normalised exponential draws
                draws = -torch.rand(len(NON_ZERO), generator=generator).clamp_min(1e-12).log()
                weights = (draws / draws.sum()).tolist()
                scores[kind].append(dict(zip(NON_ZERO, weights, strict=True)))
        ctx.log(f"toy-random: drew weights for {edges} edges per cell (seed {ctx.spec.draw_seed})")
        history = [{"epoch": 1, "drawn_edges": edges}]
        return StrategyResult(argmax_genotype(scores, ctx.shape.steps), scores, history)
