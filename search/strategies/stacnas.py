"""``stacnas`` (default; Li et al. 2019): stage 1 searches among one representative per operation
group (zero, pooling, identity, separable conv, dilated conv); stage 2 expands each edge's winning
group into its members and searches among them. One-level optimisation."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator

from search.budget import NON_ZERO, Scores
from search.spec import Optimization, StrategySpec
from search.strategies.base import (
    Probabilities,
    SearchContext,
    Strategy,
    StrategyResult,
    SupernetPlan,
)
from search.strategies.training import SupernetSpec, perturbation, train_supernet
from space.operations import GROUP_OF, GROUPS, REPRESENTATIVES
from space.supernet import CELL_KINDS, NetShape, uniform_candidates

TIE_BREAK = 1e-3  # weight of stage 2's within-group preference in STACNAS's operation scores
STAGE1_OPS: tuple[str, ...] = ("none", *(REPRESENTATIVES[g] for g in GROUPS if g != "zero"))
WIDEST_GROUP: tuple[str, ...] = max(GROUPS.values(), key=len)  # what the dry run prices stage 2 at


class StacnasSpec(SupernetSpec):
    """STACNAS: two stages of ``epochs`` each, one-level by default."""

    default_optimization: ClassVar[Optimization] = "one-level"

    strategy: Literal["stacnas"] = "stacnas"
    stage1_layers: int | None = Field(
        None,
        ge=3,
        le=64,
        description="cells of stage 1's proxy supernet (StacNAS: 14, then 20 = layers in stage "
        "2 and the derived network, to close the depth gap); default: layers",
    )

    @field_validator("stage1_layers")
    @classmethod
    def _shallower_stage1(cls, value: int | None, info: ValidationInfo) -> int | None:
        layers = info.data.get("layers", value)
        if value is not None and layers is not None and value > layers:
            raise ValueError(f"must be an integer in [3, layers={layers}]")
        return value

    def left_out(self) -> set[str]:
        return super().left_out() | ({"stage1_layers"} if self.stage1_layers is None else set())


class StacNAS(Strategy):
    config = StacnasSpec
    stage1_ops = STAGE1_OPS

    def plan(self, spec: StrategySpec, shape: NetShape) -> list[SupernetPlan]:
        assert isinstance(spec, StacnasSpec)
        stage1 = spec.stage1_layers or spec.layers
        return [
            SupernetPlan.of(spec, shape, "stage 1", STAGE1_OPS, stage1),
            SupernetPlan.of(spec, shape, "stage 2", ("none", *WIDEST_GROUP), spec.layers),
        ]

    def search(self, ctx: SearchContext) -> StrategyResult:
        spec = ctx.spec
        assert isinstance(spec, StacnasSpec)
        pt = spec.selection == "perturbation"
        stage1, history1, t1 = train_supernet(
            ctx,
            uniform_candidates(STAGE1_OPS, ctx.shape.steps),
            "stage1",
            layers=spec.stage1_layers,
        )
        # stage 1 decides each edge's group; stage 2 its member and the node's inputs
        selection: dict[str, Any] = {"method": spec.selection}
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
