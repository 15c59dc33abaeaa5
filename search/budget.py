"""The hard FLOPs budget at derivation.

The argmax genotype of a search is only a starting point. If its counted MFLOPs exceed the budget,
operations are traded, one at a time, for the cheaper operation that loses the least architecture
weight per MFLOP saved; if even the cheapest operations do not fit, the channels are narrowed (by
2, keeping them even) and the trading starts again from the argmax. A derived network that leaves
more than 15% of the budget unused is then upgraded the same way (least weight lost, or most
gained, per MFLOP added) while it fits. Costs come from the layout (``space.network``), which equals
the product counter's figure; ``search.run`` checks the built network with the counter as well.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from space.genotypes import Genotype
from space.operations import PRIMITIVES
from space.supernet import CELL_KINDS, NetShape, edge_inputs

NON_ZERO: tuple[str, ...] = tuple(p for p in PRIMITIVES if p != "none")
FILL = 0.85  # a derived network should use at least this share of a reachable budget
Scores = Mapping[str, list[dict[str, float]]]  # per kind, per edge: weight of each operation


class BudgetError(ValueError):
    pass


@dataclass
class Derivation:
    genotype: Genotype
    channels: int
    macs: int
    budget_mflops: float
    minimum_mflops: float
    maximum_mflops: float  # the most this space reaches at the search's channel count
    moves: list[str] = field(default_factory=list)
    start: Genotype | None = None  # what the search chose (argmax after any skip cap, or ranked)
    start_channels: int = 0
    start_macs: int = 0  # the start's counted MACs at the search's channel count

    @property
    def operations_changed(self) -> int:
        """Edges whose operation the repair changed (0: the search's choice was kept)."""
        if self.start is None:
            return 0
        return sum(
            a != b
            for a, b in zip(
                (*self.start.normal, *self.start.reduce),
                (*self.genotype.normal, *self.genotype.reduce),
                strict=True,
            )
        )

    def repair(self) -> dict[str, Any]:
        """Provenance: how much of the derived network the budget repair, not the search, chose."""
        return {
            "operations_changed": self.operations_changed,
            "operations": len(self.genotype.normal) + len(self.genotype.reduce),
            "channels_before": self.start_channels,
            "channels_after": self.channels,
            "channels_changed": self.start_channels - self.channels,
            "mflops_before": self.start_macs / 1e6,
            "mflops_after": self.mflops,
            "kept_search_choice": self.operations_changed == 0
            and self.start_channels == self.channels,
        }

    @property
    def mflops(self) -> float:
        return self.macs / 1e6

    @property
    def use(self) -> float:
        """Share of the budget used."""
        return self.mflops / self.budget_mflops

    def to_dict(self) -> dict[str, Any]:
        return {
            "genotype": self.genotype.to_dict(),
            "start_genotype": self.start.to_dict() if self.start is not None else None,
            "channels": self.channels,
            "mflops": self.mflops,
            "budget_mflops": self.budget_mflops,
            "use_of_budget": self.use,
            "minimum_mflops": self.minimum_mflops,
            "maximum_mflops": self.maximum_mflops,
            "moves": self.moves,
            "repair": self.repair(),
        }


def _edge_index(steps: int) -> dict[tuple[int, int], int]:
    return {pair: e for e, pair in enumerate(edge_inputs(steps))}


def _extreme_macs(
    shape: NetShape, cost_of: Callable[[dict[str, int]], int], *, dearest: bool = False
) -> int:
    """Fixed part plus, per node, the two cheapest edges (the two dearest with ``dearest``), each
    at the cost ``cost_of`` gives from its operations' costs."""
    table = shape.cost_table(NON_ZERO)
    total = shape.fixed_macs()
    inputs = edge_inputs(shape.steps)
    for kind in CELL_KINDS:
        for node in range(shape.steps):
            costs = [cost_of(table[kind][e]) for e, (j, _) in enumerate(inputs) if j == node]
            costs.sort(reverse=dearest)
            total += sum(costs[:2])
    return total


def minimum_mflops(shape: NetShape, min_channels: int) -> float:
    """The smallest network of this space: the cheapest operations at ``min_channels``."""
    return _extreme_macs(shape.with_channels(min_channels), lambda c: min(c.values())) / 1e6


def maximum_mflops(shape: NetShape) -> float:
    return _extreme_macs(shape, lambda c: max(c.values()), dearest=True) / 1e6


LEAST_LEARNABLE = "dil_conv_3x3"  # the cheapest operation with weights


def learnable_mflops(shape: NetShape) -> float:
    """The cheapest network whose kept edges all learn: ``dil_conv_3x3`` on the two cheapest
    inputs of every node."""
    return _extreme_macs(shape, lambda costs: costs[LEAST_LEARNABLE]) / 1e6


def auto_channels(shape: NetShape, budget_mflops: float, *, least: int = 2, step: int = 2) -> int:
    """``channels: auto``: the widest channel count (a multiple of ``step``, from ``least``) at
    which a cell of learnable operations on every edge fits the budget, so that the budget never
    forces the search into skip connections and pools (what a fixed, too wide channel count did:
    the cheapest way to meet the budget was to make the normal cell parameter-free); ``least``
    when none does."""
    best = channels = max(step, least + (-least) % step)
    while channels <= 256 and learnable_mflops(shape.with_channels(channels)) <= budget_mflops:
        best = channels
        channels += step
    return best


def check_budget(shape: NetShape, budget_mflops: float, min_channels: int) -> None:
    """Reject, before any work, a budget below the smallest network of the space."""
    least = minimum_mflops(shape, min_channels)
    if budget_mflops < least:
        raise BudgetError(
            f"budget_mflops: {budget_mflops:g} is below the minimum of this search space, "
            f"{least:.4f} MFLOPs (cheapest operations at {min_channels} channels, "
            f"{shape.layers} cells, input {shape.in_chans}x{shape.input_size}x{shape.input_size})"
        )


def cap_skips(genotype: Genotype, scores: Scores, max_skips: int, steps: int = 4) -> Genotype:
    """P-DARTS's remedy for the collapse to parameter-free cells: keep at most ``max_skips``
    skip connections in the normal cell (those weighing most); each other one becomes its edge's
    best operation that is not a skip connection."""
    index = _edge_index(steps)
    normal = list(genotype.normal)
    skips = [k for k, (op, _) in enumerate(normal) if op == "skip_connect"]
    weight = {k: scores["normal"][index[(k // 2, normal[k][1])]] for k in skips}
    skips.sort(key=lambda k: -weight[k]["skip_connect"])
    for k in skips[max_skips:]:
        row = weight[k]
        normal[k] = (
            max((op for op in NON_ZERO if op != "skip_connect"), key=row.__getitem__),
            normal[k][1],
        )
    return Genotype.of(
        normal,
        list(genotype.reduce),
        normal_concat=genotype.normal_concat,
        reduce_concat=genotype.reduce_concat,
    )


Table = Mapping[str, list[dict[str, int]]]  # per kind, per edge: MACs of each operation
Move = tuple[float, str, int, str, int]  # (weight lost per MAC, kind, position, operation, delta)


class _Trade:
    """The operations of a genotype being traded, one move at a time, with the moves made."""

    def __init__(self, genotype: Genotype, scores: Scores, steps: int) -> None:
        self._genotype = genotype
        self._scores = scores
        self._index = _edge_index(steps)
        self.moves: list[str] = []
        self.restart([])

    def restart(self, moves: list[str]) -> None:
        """Back to the genotype's operations, with ``moves`` as the only moves made."""
        self.kinds = {"normal": list(self._genotype.normal), "reduce": list(self._genotype.reduce)}
        self.moves[:] = moves

    def _edge(self, kind: str, k: int) -> int:
        return self._index[(k // 2, self.kinds[kind][k][1])]

    def best(self, table: Table, room: float, *, cheaper: bool) -> Move | None:
        """The move with the least weight lost per MFLOP: to a cheaper operation with
        ``cheaper``, else to a dearer one that adds at most ``room``."""
        best: Move | None = None
        for kind in CELL_KINDS:
            for k, (op, _) in enumerate(self.kinds[kind]):
                e = self._edge(kind, k)
                for new in NON_ZERO:
                    delta = table[kind][e][new] - table[kind][e][op]
                    if (cheaper and delta >= 0) or (not cheaper and (delta <= 0 or delta > room)):
                        continue
                    lost = self._scores[kind][e].get(op, 0.0) - self._scores[kind][e].get(new, 0.0)
                    ratio = lost / abs(delta)
                    if best is None or ratio < best[0]:
                        best = (ratio, kind, k, new, delta)
        return best

    def apply(self, move: Move) -> int:
        """Make ``move``; the MACs it adds (negative: saves)."""
        _, kind, k, new, delta = move
        old, i = self.kinds[kind][k]
        self.kinds[kind][k] = (new, i)
        self.moves.append(
            f"{kind} node {k // 2} input {i}: {old} -> {new} ({delta / 1e6:+.4f} MFLOPs)"
        )
        return int(delta)

    def total(self, table: Table, fixed: int) -> int:
        """The network's MACs with the current operations."""
        return fixed + sum(
            table[kind][self._edge(kind, k)][op]
            for kind in CELL_KINDS
            for k, (op, _) in enumerate(self.kinds[kind])
        )

    def genotype(self) -> Genotype:
        return Genotype.of(
            self.kinds["normal"],
            self.kinds["reduce"],
            normal_concat=self._genotype.normal_concat,
            reduce_concat=self._genotype.reduce_concat,
        )


def derive_within_budget(
    genotype: Genotype,
    scores: Scores,
    *,
    shape: NetShape,
    budget_mflops: float,
    min_channels: int = 4,
) -> Derivation:
    """``genotype`` (the search's argmax) adjusted so that its network at the returned channel
    count costs at most ``budget_mflops`` and, where the space allows, at least 85% of it."""
    check_budget(shape, budget_mflops, min_channels)
    budget = budget_mflops * 1e6
    trade = _Trade(genotype, scores, shape.steps)
    channels = shape.channels
    narrowed: list[str] = []
    start_macs = 0
    while True:
        current = shape.with_channels(channels)
        table, fixed = current.cost_table(NON_ZERO), current.fixed_macs()
        total = trade.total(table, fixed)
        start_macs = start_macs or total
        while total > budget and (move := trade.best(table, 0.0, cheaper=True)) is not None:
            total += trade.apply(move)
        if total <= budget or channels - 2 < min_channels:
            break
        narrowed.append(f"channels {channels} -> {channels - 2} (cheapest operations still over)")
        channels -= 2
        trade.restart(narrowed)
    assert total <= budget, "check_budget guarantees a fit at min_channels"
    while total < FILL * budget:
        move = trade.best(table, budget - total, cheaper=False)
        if move is None:
            break
        total += trade.apply(move)
    return Derivation(
        trade.genotype(),
        channels,
        total,
        budget_mflops,
        minimum_mflops(shape, min_channels),
        maximum_mflops(shape),
        trade.moves,
        genotype,
        shape.channels,
        start_macs,
    )
