"""What every search strategy is and sees: the :class:`Strategy` contract, the
:class:`SearchContext` a search runs in, the :class:`StrategyResult` it returns and the
:class:`SupernetPlan` of each of its stages that the dry run prices."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.utils.data import Dataset

from distill.residual import ResidualDistillation
from search.budget import Scores
from search.spec import StrategySpec
from space.genotypes import Genotype
from space.supernet import NetShape, Supernet, uniform_candidates

Probabilities = dict[str, list[dict[str, float]]]
# Builds the residual KD objective for a network on a subset of the training set (None: all of it).
ObjectiveFactory = Callable[[torch.nn.Module, list[int] | None], ResidualDistillation]


@dataclass
class SearchContext:
    spec: StrategySpec
    shape: NetShape
    train_data: Dataset[tuple[Tensor, int]]
    objective: ObjectiveFactory
    device: str
    checkpoint_dir: Path
    progress: bool = True
    log: Callable[[str], None] = print
    precision: str = "auto"  # the supernet's training's (``distill.precision``)
    devices: int = 1  # its ranks (``distill.distributed``)


@dataclass
class StrategyResult:
    """What a search found. ``history`` holds one record per epoch (stored with the job and
    shown as curves); a record with ``probabilities`` (per cell kind, one ``{op: weight}`` per
    edge), ``expected_mflops`` and ``loss`` is also drawn as ``alphas.png``."""

    genotype: Genotype
    scores: Scores
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds_per_stage: list[float] = field(default_factory=list)
    selection: dict[str, Any] = field(default_factory=lambda: {"method": "argmax"})


@dataclass(frozen=True)
class SupernetPlan:
    """One search stage as the dry run prices it: a supernet of ``ops`` on every edge, at
    ``layers`` cells and ``channels``, trained ``epochs`` epochs at ``passes`` forward-backward
    passes per batch (2 for bilevel: an architecture and a weight step)."""

    stage: str
    ops: tuple[str, ...]
    layers: int
    channels: int
    epochs: int
    passes: int = 1
    partial: int = 1
    aux_skip: bool = False

    @classmethod
    def of(
        cls, spec: StrategySpec, shape: NetShape, stage: str, ops: tuple[str, ...], layers: int
    ) -> SupernetPlan:
        """A stage that trains our supernet as ``spec`` sets it up."""
        return cls(
            stage,
            ops,
            layers,
            spec.supernet_channels(shape.channels),
            spec.epochs,
            passes=2 if spec.resolved_optimization == "bilevel" else 1,
            partial=spec.partial_channels,
            aux_skip=spec.aux_skip > 0,
        )

    def build(self, shape: NetShape) -> Supernet:
        """The supernet (``shape``: the derived network's; its layers and channels replaced)."""
        return Supernet(
            replace(shape, layers=self.layers, channels=self.channels),
            uniform_candidates(self.ops, shape.steps),
            partial=self.partial,
            aux_skip=self.aux_skip,
        )


class Strategy(ABC):
    """A search strategy: ``config`` is its pydantic model (a :class:`StrategySpec` whose
    ``strategy`` is ``Literal[<its registered name>]``); :meth:`search` trains and returns the
    argmax genotype, a weight for every operation on every edge and the history; :meth:`plan`
    says what it trains, for the dry run. A strategy keeps no state between searches: it is
    made afresh for each (``Strategy()``)."""

    config: ClassVar[type[StrategySpec]]

    @abstractmethod
    def search(self, ctx: SearchContext) -> StrategyResult: ...

    @abstractmethod
    def plan(self, spec: StrategySpec, shape: NetShape) -> list[SupernetPlan]:
        """The search's stages in order, for ``spec`` at ``shape`` (the derived network's)."""
