"""The differentiable supernet: every edge of a cell holds a mixture of candidate operations
weighted by a softmax over its architecture parameters (DARTS's continuous relaxation).
Candidates are per edge, so one class serves DARTS (all of ``PRIMITIVES`` on every edge),
STACNAS stage 1 (one representative per operation group) and STACNAS stage 2 (each edge's
winning group).

The supernet also knows what the network derived from it costs. ``expected_mflops()`` is, in
value, the counted MFLOPs of the network that derivation (``argmax_genotype``) would give now, and
in gradient that of a smooth expectation of it (a straight-through estimator):
- per edge, the expected MFLOPs of its operation over the non-``none`` candidates, renormalised
  (derivation never keeps ``none``, so raising ``none``'s weight must not make an edge cheaper);
- per node, each edge weighted by its chance of being among the node's two kept inputs: the
  inclusion probability of drawing two edges without replacement (Plackett-Luce) with weights
  ``softmax(strength / EDGE_TEMPERATURE)``, ``strength`` being what derivation ranks edges by.
The value is exact (so a FLOPs penalty acts exactly when the derived network is over budget); the
gradient says which weights make the derived network cheaper. ``cost_table`` gives the per-edge
figures for the budget-aware derivation.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from space.fused import FusedSearchCell
from space.genotypes import Edge, Genotype
from space.network import (
    CellPlan,
    GenotypeNetwork,
    StemKind,
    edge_count,
    edge_inputs,
    head_macs,
    layout,
    make_stem,
    preprocessing,
    preprocessing_macs,
    stem_kind,
    stem_macs,
)
from space.operations import OPS, op_macs

CELL_KINDS = ("normal", "reduce")
EdgeStrength = Literal["max", "non_zero"]
Weighting = Literal["softmax", "sigmoid", "gumbel"]
# Edge strengths are softmax weights (differences of a few hundredths to tenths between the inputs
# of a node while a search runs): at 0.05, a difference of 0.1 is a 7:1 odds of being kept.
EDGE_TEMPERATURE = 0.05
Candidates = tuple[tuple[str, ...], ...]  # per edge, the candidate operations


def uniform_candidates(ops: Sequence[str], steps: int = 4) -> dict[str, Candidates]:
    """The same candidate list on every edge of both cell types."""
    edges = tuple(tuple(ops) for _ in range(edge_count(steps)))
    return {kind: edges for kind in CELL_KINDS}


class MixedOp(nn.Module):
    """sum_k w_k * op_k(x) over the edge's candidates; ``none`` contributes nothing and is not run
    (its weight still takes part in the softmax). Pooling gets a non-affine BN, as in DARTS.

    ``partial`` = K > 1 is PC-DARTS's partial channel connection (Xu et al. 2020): only 1/K of
    the channels go through the candidates, the rest bypass the edge (max-pooled on a reduction
    edge), and the channels are shuffled so that the next cell sees a different subset: about K
    times less work per step, and less room for parameter-free operations to win by default.

    ``aux`` adds DARTS-'s auxiliary skip connection outside the mixture (Chu et al. 2021):
    ``forward(x, weights, beta)`` adds ``beta * skip(x)`` (the identity, or a factorized reduce on
    a strided edge), so that the residual path a deep supernet needs to train does not have to
    come from the candidates' ``skip_connect``."""

    def __init__(
        self, c: int, stride: int, candidates: Sequence[str], partial: int = 1, aux: bool = False
    ) -> None:
        super().__init__()
        if c % partial:
            raise ValueError(f"partial: {partial} must divide the {c} channels")
        self.partial = partial
        self.aux = OPS["skip_connect"](c // partial, stride, False) if aux else None
        self.names = tuple(candidates)
        self.index = [k for k, name in enumerate(candidates) if name != "none"]
        ops = []
        for k in self.index:
            op = OPS[candidates[k]](c // partial, stride, False)
            if "pool" in candidates[k]:
                op = nn.Sequential(op, nn.BatchNorm2d(c // partial, affine=False))
            ops.append(op)
        self.ops = nn.ModuleList(ops)
        self.bypass = nn.MaxPool2d(2, 2) if stride == 2 and partial > 1 else nn.Identity()

    def op(self, name: str) -> nn.Module:
        """The module of candidate ``name`` (not ``none``, which has none)."""
        return self.ops[[self.names[k] for k in self.index].index(name)]

    def forward(self, x: Tensor, weights: Tensor, beta: float = 0.0) -> Tensor:
        c = x.shape[1] // self.partial
        part = x if self.partial == 1 else x[:, :c]
        mixed: Tensor = sum(
            weights[k] * op(part) for k, op in zip(self.index, self.ops, strict=True)
        )
        if self.aux is not None and beta:
            mixed = mixed + beta * self.aux(part)
        if self.partial == 1:
            return mixed
        out = torch.cat([mixed, self.bypass(x[:, c:])], dim=1)
        b, channels, h, w = out.shape  # channel shuffle with K groups
        return (
            out.view(b, self.partial, channels // self.partial, h, w)
            .transpose(1, 2)
            .reshape(b, channels, h, w)
        )


class SearchCell(nn.Module):
    def __init__(
        self,
        plan: CellPlan,
        candidates: Candidates,
        steps: int,
        partial: int = 1,
        aux: bool = False,
    ) -> None:
        super().__init__()
        self.steps = steps
        self.preprocess0, self.preprocess1 = preprocessing(plan, affine=False)
        self.edges = nn.ModuleList(
            MixedOp(plan.c, plan.stride(i), candidates[e], partial, aux)
            for e, (_, i) in enumerate(edge_inputs(steps))
        )

    def forward(self, s0: Tensor, s1: Tensor, weights: Tensor, beta: float = 0.0) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self.steps):
            node = sum(
                self.edges[offset + i](h, weights[offset + i], beta) for i, h in enumerate(states)
            )
            offset += len(states)
            states.append(node)
        return torch.cat(states[2:], dim=1)


@dataclass(frozen=True)
class NetShape:
    """The macro shape shared by the supernet and the derived network."""

    channels: int
    layers: int
    num_classes: int
    in_chans: int
    input_size: int
    stem: StemKind
    steps: int = 4

    @classmethod
    def of(
        cls,
        *,
        channels: int,
        layers: int,
        num_classes: int,
        in_chans: int,
        input_size: int,
        stem: StemKind | str = "auto",
        steps: int = 4,
    ) -> NetShape:
        kind: StemKind = stem_kind(input_size) if stem == "auto" else stem  # type: ignore[assignment]
        return cls(channels, layers, num_classes, in_chans, input_size, kind, steps)

    def with_channels(self, channels: int) -> NetShape:
        return NetShape(
            channels,
            self.layers,
            self.num_classes,
            self.in_chans,
            self.input_size,
            self.stem,
            self.steps,
        )

    def derived(self, genotype: Genotype, channels: int | None = None) -> GenotypeNetwork:
        """The network a genotype derives at this shape (at ``channels`` when given)."""
        return GenotypeNetwork(
            genotype,
            channels=self.channels if channels is None else channels,
            layers=self.layers,
            num_classes=self.num_classes,
            in_chans=self.in_chans,
            input_size=self.input_size,
            stem=self.stem,
        )

    def plans(self) -> tuple[list[CellPlan], int, int]:
        return layout(
            channels=self.channels,
            layers=self.layers,
            input_size=self.input_size,
            multiplier=self.steps,
            stem=self.stem,
        )

    def fixed_macs(self) -> int:
        """Stem, preprocessing and head of the derived network: everything but the operations."""
        plans, c_last, size_last = self.plans()
        return (
            stem_macs(self.stem, self.in_chans, self.channels, self.input_size)
            + sum(preprocessing_macs(p) for p in plans)
            + head_macs(c_last, size_last, self.num_classes)
        )

    def cost_table(self, ops: Sequence[str]) -> dict[str, list[dict[str, int]]]:
        """MACs of each operation on each edge in the derived network, summed over the cells of
        each kind (cells of one kind share their architecture)."""
        plans, _, _ = self.plans()
        table: dict[str, list[dict[str, int]]] = {
            kind: [dict.fromkeys(ops, 0) for _ in range(edge_count(self.steps))]
            for kind in CELL_KINDS
        }
        for plan in plans:
            kind = "reduce" if plan.reduction else "normal"
            for e, (_, i) in enumerate(edge_inputs(self.steps)):
                for op in ops:
                    size, stride = plan.input_size(i), plan.stride(i)
                    table[kind][e][op] += op_macs(op, plan.c, size, stride)
        return table


class Supernet(nn.Module):
    """DARTS's search network with per-edge candidates; ``alphas`` holds the architecture
    parameters of both cell types (padded to the longest candidate list, absent entries masked
    to -inf before the softmax). ``fused`` (default) computes each cell per state
    (``space.fused``); ``fused=False`` is the straightforward per-edge reference, with the same
    outputs and gradients (``copy_from`` takes its weights).

    ``cost_shape`` (default: ``shape``) is the shape of the network derivation gives, at which
    every MFLOPs figure is counted: a supernet wider than the derived network (``search_width``)
    still asks for the derived network's budget. It must have the same cells and input.

    ``aux_skip`` gives every edge DARTS-'s auxiliary skip connection, scaled by ``aux_beta``
    (set by the search as it decays to 0; at 0 the supernet computes what it computes without
    one, and derivation never sees it)."""

    def __init__(
        self,
        shape: NetShape,
        candidates: Mapping[str, Candidates],
        *,
        edge_strength: EdgeStrength = "max",
        partial: int = 1,
        fused: bool = True,
        cost_shape: NetShape | None = None,
        weighting: Weighting = "softmax",
        aux_skip: bool = False,
    ) -> None:
        super().__init__()
        self.shape = shape
        self.aux_beta = 0.0
        self.weighting: Weighting = weighting
        cost = shape if cost_shape is None else cost_shape
        if cost.with_channels(shape.channels) != shape:
            raise ValueError("cost_shape: must differ from the supernet's shape in channels only")
        self.cost_shape = cost
        self.edge_strength: EdgeStrength = edge_strength
        self.candidates = {kind: tuple(tuple(c) for c in candidates[kind]) for kind in CELL_KINDS}
        n_edges = edge_count(shape.steps)
        for kind in CELL_KINDS:
            if len(self.candidates[kind]) != n_edges:
                raise ValueError(f"candidates.{kind}: one candidate list per edge ({n_edges})")
        plans, c_last, _ = shape.plans()
        self.stem0, self.stem1 = make_stem(shape.stem, shape.in_chans, shape.channels)
        cell = FusedSearchCell if fused else SearchCell
        self.cells = nn.ModuleList(
            cell(
                p,
                self.candidates["reduce" if p.reduction else "normal"],
                shape.steps,
                partial,
                aux_skip,
            )
            for p in plans
        )
        self.reductions = [p.reduction for p in plans]
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_last, shape.num_classes)
        width = max(len(c) for kind in CELL_KINDS for c in self.candidates[kind])
        self.alphas = nn.ParameterDict(
            {kind: nn.Parameter(1e-3 * torch.randn(n_edges, width)) for kind in CELL_KINDS}
        )
        for kind in CELL_KINDS:
            mask = torch.full((n_edges, width), float("-inf"))
            for e, cands in enumerate(self.candidates[kind]):
                mask[e, : len(cands)] = 0.0
            self.register_buffer(f"mask_{kind}", mask)
        ops = sorted({op for kind in CELL_KINDS for c in self.candidates[kind] for op in c})
        self._table = cost.cost_table(ops)  # MACs of each operation on each edge, per kind
        self._costs, self._real = self._cost_tensors()
        self._fixed_mflops = cost.fixed_macs() / 1e6  # once: expected_mflops runs every step
        self._edge_of = {pair: e for e, pair in enumerate(edge_inputs(shape.steps))}
        self._override: dict[str, Tensor] | None = None

    def copy_from(self, reference: Supernet) -> None:
        """Take every weight of a supernet of the same shape and candidates (fused or not)."""
        own = self.state_dict()
        self.load_state_dict(
            {k: v for k, v in reference.state_dict().items() if k in own and ".edges." not in k},
            strict=False,
        )
        for mine, theirs in zip(self.cells, reference.cells, strict=True):
            if isinstance(mine, FusedSearchCell) and isinstance(theirs, SearchCell):
                mine.copy_from(theirs)
            elif type(mine) is not type(theirs):
                raise TypeError("copy_from: a per-edge supernet cannot take a fused one's weights")

    # -- parameters -------------------------------------------------------------------------------

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alphas.values())

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def weights(self) -> dict[str, Tensor]:
        """Softmax over each edge's candidates (DARTS), or each candidate's own sigmoid
        (``weighting: sigmoid``, FairDARTS: the candidates do not compete for one unit of weight);
        masked entries get weight 0 either way. With ``weighting: gumbel`` (GDAS) this is the
        softmax the search samples one operation per edge from (``search.task.gumbel_weights``);
        derivation, the cost estimate and evaluation read it as they read DARTS's."""
        out = {}
        for kind in CELL_KINDS:
            logits = self.alphas[kind] + getattr(self, f"mask_{kind}")
            sigmoid = self.weighting == "sigmoid"
            out[kind] = torch.sigmoid(logits) if sigmoid else torch.softmax(logits, dim=-1)
        return out

    def probabilities(self) -> dict[str, list[dict[str, float]]]:
        """Each edge's weights by operation name (for derivation, logs and plots)."""
        weights = {k: w.detach().cpu() for k, w in self.weights().items()}
        return {
            kind: [
                {op: float(weights[kind][e, k]) for k, op in enumerate(cands)}
                for e, cands in enumerate(self.candidates[kind])
            ]
            for kind in CELL_KINDS
        }

    # -- forward ----------------------------------------------------------------------------------

    @contextmanager
    def using(self, weights: Mapping[str, Tensor]) -> Iterator[None]:
        """Run forward passes with these per-kind (edges x candidates) weights instead of the
        softmax of ``alphas`` (e.g. with one operation's weight zeroed, to measure what it adds)."""
        self._override = dict(weights)
        try:
            yield
        finally:
            self._override = None

    def forward_features(self, x: Tensor) -> Tensor:
        weights = self.weights() if self._override is None else self._override
        s0 = self.stem0(x)
        s1 = self.stem1(s0) if self.stem1 is not None else s0
        for cell, reduction in zip(self.cells, self.reductions, strict=True):
            s0, s1 = s1, cell(s0, s1, weights["reduce" if reduction else "normal"], self.aux_beta)
        return s1

    def forward_head(self, features: Tensor) -> Tensor:
        return self.fc(self.global_pool(features).flatten(1))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    # -- cost -------------------------------------------------------------------------------------

    def _cost_tensors(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Per kind, an (edges x candidates) table of each candidate's MFLOPs in the derived
        network, and a mask of the candidates derivation can keep (present and not ``none``)."""
        width = self.alphas["normal"].shape[1]
        costs, real = {}, {}
        for kind in CELL_KINDS:
            t = torch.zeros(len(self.candidates[kind]), width)
            m = torch.zeros(len(self.candidates[kind]), width, dtype=torch.bool)
            for e, cands in enumerate(self.candidates[kind]):
                for k, op in enumerate(cands):
                    t[e, k] = self._table[kind][e][op] / 1e6
                    m[e, k] = op != "none"
            costs[kind], real[kind] = t, m
        return costs, real

    def smooth_mflops(self, weights: dict[str, Tensor] | None = None) -> Tensor:
        """The smooth expectation of the derived network's MFLOPs (the estimator's gradient)."""
        weights = self.weights() if weights is None else weights
        total = torch.zeros((), device=weights["normal"].device)
        steps = self.shape.steps
        for kind in CELL_KINDS:
            w = weights[kind]
            real = self._real[kind].to(w.device)
            kept = w.masked_fill(~real, 0.0)
            mass = kept.sum(-1)  # 1 - w(none)
            op_cost = (kept * self._costs[kind].to(w.device)).sum(-1) / mass.clamp_min(1e-12)
            strength = kept.max(-1).values if self.edge_strength == "max" else mass
            lo = 0
            for node in range(steps):
                hi = lo + node + 2
                pi = torch.softmax(strength[lo:hi] / EDGE_TEMPERATURE, dim=0)
                odds = pi / (1 - pi).clamp_min(1e-6)
                # P(e among two draws without replacement) = pi_e (1 + sum_{f != e} pi_f/(1-pi_f))
                keep = (pi * (1 + odds.sum() - odds)).clamp(max=1.0)
                total = total + (keep * op_cost[lo:hi]).sum()
                lo = hi
        return self._fixed_mflops + total

    def genotype(self) -> Genotype:
        """What derivation gives now (DARTS's argmax with this supernet's edge ranking)."""
        return argmax_genotype(
            self.probabilities(), self.shape.steps, edge_strength=self.edge_strength
        )

    def mflops_of(self, genotype: Genotype) -> float:
        """Counted MFLOPs of ``genotype``'s network at the derived shape (``cost_shape``)."""
        macs = self.cost_shape.fixed_macs()
        for kind, edges in (("normal", genotype.normal), ("reduce", genotype.reduce)):
            for k, (op, i) in enumerate(edges):
                macs += self._table[kind][self._edge_of[(k // 2, i)]][op]
        return macs / 1e6

    def expected_mflops(self) -> Tensor:
        """The derived network's MFLOPs in value, ``smooth_mflops``'s in gradient."""
        smooth = self.smooth_mflops()
        derived = self.mflops_of(self.genotype())
        return smooth + (derived - smooth.detach())


def argmax_genotype(
    probabilities: Mapping[str, list[dict[str, float]]],
    steps: int = 4,
    *,
    edge_strength: EdgeStrength = "max",
) -> Genotype:
    """DARTS's derivation: per edge the strongest non-zero operation; per node the two strongest
    edges. An edge's strength is its strongest non-zero operation's weight (``max``, DARTS) or
    its whole non-zero weight, 1 - w(none) (``non_zero``, for STACNAS stage 2, whose edges hold
    groups of different sizes: splitting weight between two similar members must not make an
    edge look weaker than a one-member edge)."""
    cells: dict[str, list[Edge]] = {}
    inputs = edge_inputs(steps)
    for kind in CELL_KINDS:
        edges: list[Edge] = []
        for node in range(steps):
            best = []
            for e, (j, i) in enumerate(inputs):
                if j != node:
                    continue
                ops = {op: w for op, w in probabilities[kind][e].items() if op != "none"}
                op = max(ops, key=lambda o: ops[o])
                strength = ops[op] if edge_strength == "max" else sum(ops.values())
                best.append((strength, op, i))
            best.sort(key=lambda t: -t[0])
            edges += [(op, i) for _, op, i in sorted(best[:2], key=lambda t: t[2])]
        cells[kind] = edges
    return Genotype.of(cells["normal"], cells["reduce"])
