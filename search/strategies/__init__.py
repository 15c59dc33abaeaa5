"""Search strategies behind one interface, as a registry (``search.spec.STRATEGIES``, the
entry-point group ``reskd.strategies``): a strategy trains supernets on the search objective and
returns the argmax genotype, a weight for every operation on every edge (what the budget-aware
derivation trades by) and the per-epoch history; ``search.run`` derives, checks and writes the
network, whatever the strategy.

The built-ins register through the entry-point group exactly as a plug-in does:

- ``stacnas`` (default; :mod:`search.strategies.stacnas`): two stages, one-level.
- ``darts`` (:mod:`search.strategies.darts`): one stage over all eight operations, bilevel.
- ``nni-darts`` (:mod:`search.strategies.nni_darts`): NNI 3.0's DARTS on the same cells and
  objective (``pip install .[nni]``; only ``search.nni_adapter`` imports NNI).

A strategy in one file: a config model and a :class:`Strategy` subclass, registered under the
config's ``strategy`` name::

    from typing import Literal
    from search.strategies import (
        SearchContext, Strategy, StrategyResult, StrategySpec, SupernetPlan,
    )

    class RandomSpec(StrategySpec):
        \"\"\"What the strategy does (shown on /docs).\"\"\"

        strategy: Literal["random"] = "random"  # the entry point's name
        samples: int = 8  # its own settings, validated like any config field

    class RandomStrategy(Strategy):
        config = RandomSpec

        def search(self, ctx: SearchContext) -> StrategyResult:
            # ctx.spec (a RandomSpec), ctx.shape, ctx.train_data, ctx.objective(net, indices),
            # ctx.device, ctx.checkpoint_dir, ctx.log
            return StrategyResult(genotype, scores, history)

        def plan(self, spec, shape) -> list[SupernetPlan]:  # what the dry run prices
            return []  # or SupernetPlan.of(spec, shape, "stage", ops, layers) per stage

    # its pyproject.toml
    [project.entry-points."reskd.strategies"]
    random = "my_package.module:RandomStrategy"

``scores`` maps ``"normal"`` and ``"reduce"`` to one ``{operation: weight}`` per edge over the
non-zero operations (``search.budget.NON_ZERO``). The entry point's name must be the config's
``strategy`` literal (the registry checks it); the config joins ``search.spec.SearchSpec``, the
union a run config's ``search:`` takes, when the run config is defined (so a strategy registered
in code later needs ``model_rebuild(force=True)`` of the configs that hold it). A strategy that
trains our supernet subclasses :class:`SupernetSpec` and calls :func:`train_supernet` per stage.
"""

from __future__ import annotations

from search.spec import STRATEGIES, SearchSpec, StrategySpec
from search.strategies.base import (
    ObjectiveFactory,
    Probabilities,
    SearchContext,
    Strategy,
    StrategyResult,
    SupernetPlan,
)
from search.strategies.training import (
    SupernetSpec,
    non_zero_scores,
    perturbation,
    selection_batches,
    train_supernet,
)
from search.task import cycle

__all__ = [
    "STRATEGIES",
    "ObjectiveFactory",
    "Probabilities",
    "SearchContext",
    "SearchSpec",
    "Strategy",
    "StrategyResult",
    "StrategySpec",
    "SupernetPlan",
    "SupernetSpec",
    "cycle",
    "non_zero_scores",
    "perturbation",
    "selection_batches",
    "strategy_for",
    "train_supernet",
]


def strategy_for(spec: StrategySpec) -> Strategy:
    """The strategy that ``spec`` names (made afresh)."""
    return STRATEGIES[spec.strategy]()
