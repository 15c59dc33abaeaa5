"""``nni-darts``: NNI 3.0's DARTS strategy on the same cells and objective
(``search.nni_adapter``, the only module that imports NNI; ``pip install .[nni]``). It trains
NNI's own supernet with NNI's own weights and export, so the fields of our supernet's training
are fixed at the values that match it, and it has no FLOPs term of ours."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import ValidationInfo, field_validator

from search.spec import StrategySpec
from search.strategies.base import SearchContext, Strategy, StrategyResult, SupernetPlan
from space.operations import PRIMITIVES
from space.supernet import NetShape

# What nni-darts cannot take: field -> (the value it needs, why).
NNI_FIXED: dict[str, tuple[Any, str]] = {
    "selection": ("argmax", "nni-darts derives by argmax (NNI's own export): use argmax"),
    "weighting": ("softmax", "nni-darts uses NNI's own softmax weights: use softmax"),
    "aux_skip": (0.0, "nni-darts trains NNI's own supernet, which has none: use 0"),
    "search_width": (1.0, "nni-darts searches NNI's own space at the derived width: use 1"),
}


class NniDartsSpec(StrategySpec):
    """NNI's DARTS: one stage, first-order bilevel; the budget is enforced at derivation only."""

    default_budget_floor: ClassVar[float] = 0.0

    strategy: Literal["nni-darts"] = "nni-darts"

    @field_validator(*NNI_FIXED)
    @classmethod
    def _nni_fixed(cls, value: Any, info: ValidationInfo) -> Any:
        needed, why = NNI_FIXED[str(info.field_name)]
        if value != needed:
            raise ValueError(why)
        return value

    @field_validator("budget_floor")
    @classmethod
    def _no_flops_term(cls, value: float | None) -> float | None:
        if value:
            raise ValueError("nni-darts has no FLOPs term of ours (only the derivation): use 0")
        return value


class NniDarts(Strategy):
    config = NniDartsSpec

    def plan(self, spec: StrategySpec, shape: NetShape) -> list[SupernetPlan]:
        """Priced as our supernet of the same eight operations (NNI's is built like it)."""
        return [SupernetPlan.of(spec, shape, "nni-darts", PRIMITIVES, spec.layers)]

    def search(self, ctx: SearchContext) -> StrategyResult:
        # NNI is optional and pins old packages: imported only when this strategy runs.
        from search import nni_adapter

        return nni_adapter.search(ctx)
