"""One res-student search: strategy -> budget-aware derivation -> the product counter's check ->
``genotype.json``, ``search.json`` and ``alphas.png`` in the output directory, and what the
strategy found (its argmax genotype and every operation's weight) in ``found.json``, from which
:func:`derive_search` derives the network at another budget without searching again.

``objective_factory`` builds the residual KD objective of eq. 6 for a network: against T - S_{i-1}
for a res-student, against T alone when there is no base yet (a searched S0).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from distill.data import DatasetInfo
from distill.losses import Objective
from distill.report import repair_text
from distill.residual import MethodConfig, ResidualDistillation
from search.budget import (
    Derivation,
    auto_channels,
    cap_skips,
    check_budget,
    derive_within_budget,
)
from search.cells import draw_cells, genotype_text
from search.plot import plot_search
from search.rank import candidates, rank
from search.spec import StrategySpec
from search.strategies import (
    ObjectiveFactory,
    SearchContext,
    StrategyResult,
    SupernetPlan,
    strategy_for,
)
from space.flops import Complexity, count
from space.genotypes import Genotype
from space.numbers import count as count_text
from space.numbers import mflops
from space.supernet import NetShape


@dataclass
class SearchResult:
    spec: StrategySpec
    derivation: Derivation
    argmax: Genotype
    complexity: Complexity  # the derived network, by the product counter
    history: list[dict[str, Any]]
    seconds: float
    plot: Path | None
    directory: Path
    selection: dict[str, Any] = field(default_factory=lambda: {"method": "argmax"})

    @property
    def genotype(self) -> Genotype:
        return self.derivation.genotype

    @property
    def channels(self) -> int:
        return self.derivation.channels

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_dict(),
            "genotype": self.genotype.to_dict(),
            "argmax_genotype": self.argmax.to_dict(),
            "channels": self.channels,
            "layers": self.spec.layers,
            "mflops": self.complexity.mflops,
            "params": self.complexity.params,
            "derivation": self.derivation.to_dict(),
            "seconds": self.seconds,
            "selection": self.selection,
            "history": self.history,
        }

    def summary(self) -> str:
        d = self.derivation
        return (
            f"{genotype_text(self.genotype)}\n"
            f"channels {self.channels}, {self.spec.layers} cells: {mflops(self.complexity.mflops)} "
            f"MFLOPs counted (budget {mflops(d.budget_mflops)}, {100 * d.use:.1f}% used), "
            f"{count_text(self.complexity.params)} params\n{repair_text(d.repair())}"
        )


def shape_for(spec: StrategySpec, info: DatasetInfo) -> NetShape:
    """The supernet's and the derived network's shape; ``channels: auto`` resolved on the budget."""
    shape = NetShape.of(
        channels=spec.channels if spec.channels != "auto" else spec.min_channels,
        layers=spec.layers,
        num_classes=info.num_classes,
        in_chans=info.in_chans,
        input_size=info.image_size,
    )
    if spec.channels != "auto":
        return shape
    step = max(2, spec.partial_channels)
    return shape.with_channels(
        auto_channels(shape, spec.budget_mflops, least=spec.min_channels, step=step)
    )


def residual_objective(
    *,
    method: MethodConfig,
    objective: Objective,
    teacher: nn.Module | None,
    base: nn.Module | None,
    cache: tuple[Tensor, Tensor | None] | None,
) -> ObjectiveFactory:
    """Eq. 6's objective for any network on any subset: the residual task of ``distill.residual``
    (cached teacher / base logits are sliced to the subset's samples)."""

    def make(model: nn.Module, indices: list[int] | None) -> ResidualDistillation:
        sliced = cache
        if cache is not None and indices is not None:
            index = torch.tensor(indices)
            t, b = cache
            sliced = (t[index], b[index] if b is not None else None)
        return ResidualDistillation(
            model,
            objective=objective,
            method=method,
            teacher=None if sliced is not None else teacher,
            base=None if sliced is not None else base,
            cache=sliced,
        )

    return make


def run_search(
    spec: StrategySpec,
    *,
    info: DatasetInfo,
    train_data: Dataset[tuple[Tensor, int]],
    objective_factory: ObjectiveFactory,
    out_dir: Path,
    device: str = "auto",
    progress: bool = True,
    log: Callable[[str], None] = print,
    precision: str = "auto",
    devices: int = 1,
) -> SearchResult:
    """Search with ``spec``'s strategy, derive the network within the budget (ranking the best
    candidates when asked), check it with the product counter and write it to ``out_dir``.
    Its trainings run at ``precision`` on ``devices`` (``distill.train.TrainConfig``'s)."""
    shape = shape_for(spec, info)
    check_budget(shape, spec.budget_mflops, spec.min_channels)  # before any work
    out_dir.mkdir(parents=True, exist_ok=True)
    strategy = strategy_for(spec)
    log(_announce(spec, shape, strategy.plan(spec, shape)))
    started = time.perf_counter()
    ctx = SearchContext(
        spec, shape, train_data, objective_factory, device, out_dir / "checkpoints", progress, log,
        precision, devices,
    )  # fmt: skip
    found = strategy.search(ctx)
    write_found(found, out_dir)
    return derive_search(
        spec, found, info=info, train_data=train_data, objective_factory=objective_factory,
        out_dir=out_dir, device=device, progress=progress, log=log, started=started,
        precision=precision, devices=devices,
    )  # fmt: skip


def write_found(found: StrategyResult, out_dir: Path) -> None:
    (out_dir / "found.json").write_text(
        json.dumps(
            {
                "genotype": found.genotype.to_dict(),
                "scores": {kind: list(edges) for kind, edges in found.scores.items()},
                "history": found.history,
                "seconds_per_stage": found.seconds_per_stage,
                "selection": found.selection,
            }
        )
    )


def read_found(directory: Path) -> StrategyResult:
    """What a stored search found (``found.json``)."""
    raw = json.loads((directory / "found.json").read_text())
    return StrategyResult(
        Genotype.from_dict(raw["genotype"]),
        raw["scores"],
        raw["history"],
        raw["seconds_per_stage"],
        raw["selection"],
    )


def derive_search(
    spec: StrategySpec,
    found: StrategyResult,
    *,
    info: DatasetInfo,
    train_data: Dataset[tuple[Tensor, int]],
    objective_factory: ObjectiveFactory,
    out_dir: Path,
    device: str = "auto",
    progress: bool = True,
    log: Callable[[str], None] = print,
    started: float | None = None,
    precision: str = "auto",
    devices: int = 1,
) -> SearchResult:
    """The network ``spec`` asks for, derived from what a search found (its own, or a shared
    supernet's at another budget): the budget repair, the ranking of candidates when asked,
    the product counter's check; written to ``out_dir``."""
    started = time.perf_counter() if started is None else started
    shape = shape_for(spec, info)
    check_budget(shape, spec.budget_mflops, spec.min_channels)
    out_dir.mkdir(parents=True, exist_ok=True)
    derivation = _derive(spec, shape, found)
    ranking: list[dict[str, Any]] = []
    if spec.rank_candidates > 1:
        options = candidates(
            derivation, found.scores, shape=shape, budget_mflops=spec.budget_mflops,
            min_channels=spec.min_channels, count=spec.rank_candidates, seed=spec.seed,
        )  # fmt: skip
        ranked = rank(
            options, shape=shape, train_data=train_data, objective=objective_factory,
            epochs=spec.rank_epochs, batch_size=spec.batch_size, seed=spec.seed,
            device=device, progress=progress, log=log, precision=precision, devices=devices,
        )  # fmt: skip
        ranking = [r.to_dict() for r in ranked]
        derivation = ranked[0].derivation
        log(f"rank: kept the {ranked[0].source} network of {len(ranked)}")
    counted = _counted(derivation, shape, info, spec.budget_mflops)
    for move in derivation.moves:
        log(f"budget: {move}")
    result = SearchResult(
        spec,
        derivation,
        found.genotype,
        counted,
        found.history,
        time.perf_counter() - started,
        None,
        out_dir,
        found.selection | ({"ranking": ranking} if ranking else {}),
    )
    _write(result)
    log(result.summary())
    return result


def _announce(spec: StrategySpec, shape: NetShape, plan: list[SupernetPlan]) -> str:
    """The search's opening line: strategy, optimisation, shape, budget and epochs."""
    wider = spec.supernet_channels(shape.channels)
    shallower = [f" ({p.layers} in {p.stage})" for p in plan if p.layers != spec.layers]
    return (
        f"search ({spec.strategy}, {spec.resolved_optimization}): {shape.channels} channels"
        + (f" (supernet {wider})" if wider != shape.channels else "")
        + f", {spec.layers} cells{''.join(shallower)}"
        + f", budget {mflops(spec.budget_mflops)} MFLOPs, {spec.epochs} epoch(s)"
        + (" per stage" if len(plan) > 1 else "")
    )


def _derive(spec: StrategySpec, shape: NetShape, found: StrategyResult) -> Derivation:
    """The search's genotype (its skips capped) repaired to fit the budget."""
    start = found.genotype
    if spec.max_skips is not None:
        start = cap_skips(start, found.scores, spec.max_skips, shape.steps)
    return derive_within_budget(
        start,
        found.scores,
        shape=shape,
        budget_mflops=spec.budget_mflops,
        min_channels=spec.min_channels,
    )


def _counted(
    derivation: Derivation, shape: NetShape, info: DatasetInfo, budget_mflops: float
) -> Complexity:
    """The derived network by the product counter, which must agree with the layout's cost."""
    net = shape.derived(derivation.genotype, derivation.channels)
    counted = count(net, input_shape=info.input_shape)
    if counted.macs != derivation.macs or counted.mflops > budget_mflops:
        raise AssertionError(  # the layout's cost and the counter disagree: a bug, never ignored
            f"derived network counted {counted.mflops:.6f} MFLOPs, layout said "
            f"{derivation.mflops:.6f}, budget {budget_mflops:g}"
        )
    return counted


# What an epoch record of a strategy's history needs for alphas.png (a strategy that trains no
# supernet, e.g. random search, records none of it and gets no weights plot).
PLOTTED = {"probabilities", "expected_mflops", "loss"}


def _write(result: SearchResult) -> None:
    """``alphas.png``, ``cells.png``, ``genotype.json`` and ``search.json`` in its directory."""
    spec, out_dir, counted = result.spec, result.directory, result.complexity
    if result.history and all(set(epoch) >= PLOTTED for epoch in result.history):
        result.plot = plot_search(
            result.history, budget_mflops=spec.budget_mflops, path=out_dir / "alphas.png"
        )
    draw_cells(
        result.genotype,
        out_dir / "cells.png",
        title=f"{result.channels} channels, {spec.layers} cells, {mflops(counted.mflops)} MFLOPs "
        f"(budget {mflops(spec.budget_mflops)}); repair changed "
        f"{result.derivation.operations_changed} operation(s)",
    )
    (out_dir / "genotype.json").write_text(
        json.dumps(
            {
                "genotype": result.genotype.to_dict(),
                "channels": result.channels,
                "layers": spec.layers,
                "mflops": counted.mflops,
            },
            indent=2,
        )
    )
    (out_dir / "search.json").write_text(json.dumps(result.to_dict(), indent=2))
