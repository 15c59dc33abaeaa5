"""A search cell that runs the candidates of the edges leaving one state together.

An edge's operation depends only on its input state, so once a state exists every edge that leaves
it (to all later nodes) can be computed at once. ``FusedSearchCell`` does, per state and per
candidate operation:
- parameter-free operations once for all of the state's edges: pooling (with its non-affine BN:
  the same input gives the same batch statistics on every edge) and the identity; the edges
  differ only by their architecture weight;
- the learnable ones (separable, dilated convolutions, the factorized reduce of a strided skip)
  as one grouped convolution over the m edges' stacked kernels instead of m convolutions, with
  one BN over the m x C channels (per channel, so per edge as before);
- the ReLU in front of every learnable operation once per state.

Numerically it is ``space.supernet.SearchCell`` (the straightforward per-edge ``MixedOp``): the same
candidates, the same initial weights (``copy_from``), the same outputs and gradients (a test
compares both on random inputs). Candidate lists may differ per edge (STACNAS stage 2): an
operation's bundle holds only the edges that have it, and ``none`` is never run.

The convolutions, BNs and weighted sums inside run in the forms ``space.kernels`` gives (the
same products in another order, chosen by timing: ``benchmarks/results/fused-kernels.md``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from space.kernels import (
    Depthwise5x5,
    batch_norm,
    pointwise,
    shared_depthwise,
    weighted_shared,
)
from space.network import CellPlan, edge_inputs, preprocessing
from space.operations import (
    OPS,
    FactorizedReduce,
    conv_as_product,
    dense_as_product,
    depthwise_pointwise,
    small_maps,
)

_KERNEL = {"sep_conv_3x3": 3, "sep_conv_5x5": 5, "dil_conv_3x3": 3, "dil_conv_5x5": 5}
# From this many channels a depthwise-then-pointwise pair on a shared input runs as the pair
# (``OpBundle._dil``), below it as one dense conv of their product kernel.
PAIR_FROM_CHANNELS = 32


class OpBundle(nn.Module):
    """One operation on the ``m`` edges leaving one state, at ``c`` channels and ``stride``.
    ``forward(x, relu_x)`` gives ``(B, m, c, H', W')``, or ``(B, 1, c, H', W')`` for operations
    whose output is the same on every edge (pooling, identity)."""

    def __init__(self, name: str, c: int, stride: int, m: int) -> None:
        super().__init__()
        self.name, self.c, self.stride, self.m = name, c, stride, m
        self.shared = "pool" in name or (name == "skip_connect" and stride == 1)
        if "pool" in name:
            self.pool = OPS[name](c, stride, False)
            self.bn = nn.BatchNorm2d(c, affine=False)
        elif name == "skip_connect" and stride == 2:
            self.w1 = nn.Parameter(torch.empty(m * (c // 2), c, 1, 1))
            self.w2 = nn.Parameter(torch.empty(m * (c // 2), c, 1, 1))
            self.bn = nn.BatchNorm2d(m * c, affine=False)
        elif name in _KERNEL:
            k = _KERNEL[name]
            self.kernel = k
            self.dilation = 2 if name.startswith("dil") else 1
            self.dw1 = nn.Parameter(torch.empty(m * c, 1, k, k))
            self.pw1 = nn.Parameter(torch.empty(m * c, c, 1, 1))
            self.bn1 = nn.BatchNorm2d(m * c, affine=False)
            if name.startswith("sep"):
                self.dw2 = nn.Parameter(torch.empty(m * c, 1, k, k))
                self.pw2 = nn.Parameter(torch.empty(m * c, c, 1, 1))
                self.bn2 = nn.BatchNorm2d(m * c, affine=False)
        elif name != "skip_connect":
            raise ValueError(f"operation: {name!r} cannot be fused")
        if not self.shared:  # the per-edge modules' initialisation, stacked
            self.copy_from([OPS[name](c, stride, False) for _ in range(m)])

    @torch.no_grad()
    def copy_from(self, ops: Sequence[Any]) -> None:
        """Take the weights of ``m`` per-edge operations (``OPS[name](c, stride, False)``, pooling
        wrapped with its BN as ``MixedOp`` does)."""
        if len(ops) != self.m:
            raise ValueError(f"ops: expected {self.m} operations, got {len(ops)}")
        if self.shared:
            return
        if isinstance(ops[0], FactorizedReduce):
            self.w1.copy_(torch.cat([op.conv_1.weight for op in ops]))
            self.w2.copy_(torch.cat([op.conv_2.weight for op in ops]))
            return
        stages = [list(op) for op in ops]  # SepConv: two DilConv; DilConv: its layers
        if self.name.startswith("sep"):
            first = [list(s[0]) for s in stages]
            second = [list(s[1]) for s in stages]
            self.dw2.copy_(torch.cat([s[1].weight for s in second]))
            self.pw2.copy_(torch.cat([s[2].weight for s in second]))
        else:
            first = stages
        self.dw1.copy_(torch.cat([s[1].weight for s in first]))
        self.pw1.copy_(torch.cat([s[2].weight for s in first]))

    def large(self, x: Tensor) -> bool:
        """Maps of 32x32 and more or from 32 channels: where the fused cells' float rounding
        already differs from the per-edge cells' (none of the demo's or MNIST's searches), so
        faster forms that round differently may run (``batch_norm``'s ``fast``)."""
        return self.c >= PAIR_FROM_CHANNELS or x.shape[2] * x.shape[3] >= 1024

    def folds(self, x: Tensor) -> bool:
        """Whether ``forward(x, relu_x, scale)`` takes the edges' architecture weights into its
        last BN (a learnable operation where ``large``)."""
        return not self.shared and self.large(x)

    def _dil(
        self,
        x: Tensor,
        dw: Tensor,
        pw: Tensor,
        bn: nn.BatchNorm2d,
        stride: int,
        shared: bool,
        scale: Tensor | None = None,
        last: Callable[[], Tensor] | None = None,
        fast: bool = False,
    ) -> Tensor:
        """ReLU'd input -> depthwise (dilated) conv -> pointwise, per edge -> BN (times
        ``scale``, one weight per edge, when given: ``batch_norm``).

        ``shared``: ``x`` is the state every edge reads (c channels). Below
        ``PAIR_FROM_CHANNELS`` a depthwise conv followed by a pointwise one is then one dense
        conv from c to m x c channels whose kernel is their product ``pw[o, i] * dw[i]``: the
        parameters (and so the gradients and the optimisation) stay those of the two convs, and
        on CPUs the dense conv is faster than the pair up to 16 channels. It does c times a
        depthwise conv's multiply-adds, so from 32 channels (and for ``_pair_of_5x5``) the pair
        runs: every edge's depthwise conv at once (``shared_depthwise``), then the pointwise
        convs as one batched matrix product.

        Otherwise (a separable conv's second stage) ``x`` holds each edge's own m x c channels
        and the pair runs as it is, grouped per edge (the composed kernel, a grouped dense conv,
        was no faster there); its pointwise part goes through ``pointwise`` (a batched matrix
        product on large maps).

        On tiny CPU maps, where oneDNN's per-call work sets the cost, both run as matrix
        products instead (``space.operations``): the second stage on maps up to 8x8
        (``small_maps``), the dense product conv on 2x2 ones (``dense_as_product``)."""
        m, c, k = self.m, self.c, self.kernel
        pad = self.dilation * (k - 1) // 2
        weight = None if scale is None else scale.repeat_interleave(c)  # edge-major channels
        if not shared:
            if small_maps(x):  # oneDNN's per-call work dominates there (``space.operations``)
                y = depthwise_pointwise(x, dw, pw, stride, pad, self.dilation, m)
                return batch_norm(bn, y, weight, fast)
            if (
                k == 5
                and x.device.type == "cpu"
                and stride == 1
                and (c >= PAIR_FROM_CHANNELS or x.shape[2] * x.shape[3] >= 1024)
            ):
                y = Depthwise5x5.apply(x, dw, pad, self.dilation)
            else:
                y = F.conv2d(x, dw, None, stride, pad, self.dilation, groups=x.shape[1])
            return batch_norm(bn, pointwise(y, pw, m), weight, fast)
        if c >= PAIR_FROM_CHANNELS or _pair_of_5x5(x, k, m, stride):
            y = shared_depthwise(x, dw, m, stride, pad, self.dilation, last)
            b, h, w = y.shape[0], y.shape[2], y.shape[3]
            y = torch.matmul(pw.view(m, c, c), y.view(b, m, c, h * w))
            return batch_norm(bn, y.view(b, m * c, h, w), weight, fast)
        kernel = (pw.view(m, c, c, 1, 1) * dw.view(m, 1, c, k, k)).reshape(m * c, c, k, k)
        if dense_as_product(x, m * c, stride):  # tiny maps: one matrix product
            y = conv_as_product(x, kernel, stride, pad, self.dilation)
        else:
            y = F.conv2d(x, kernel, None, stride, pad, self.dilation)
        return batch_norm(bn, y, weight, fast)

    def forward(
        self,
        x: Tensor,
        relu_x: Tensor,
        scale: Tensor | None = None,
        last: Callable[[], Tensor] | None = None,
    ) -> Tensor:
        """``scale``: the m edges' architecture weights, taken into the last BN (``folds``);
        without it the output is unweighted. ``last``: ``relu_x`` in channels-last memory, made
        once for the state's bundles that want it (``shared_depthwise``)."""
        b, c = x.shape[0], self.c
        if scale is not None and self.shared:
            raise ValueError(f"{self.name}: its output is shared by the edges, not weighted")
        fast = self.large(x)
        if self.shared:
            y = x if "pool" not in self.name else batch_norm(self.bn, self.pool(x), None, fast)
            return y.unsqueeze(1)
        if self.name == "skip_connect":  # FactorizedReduce on every edge
            shifted = F.pad(relu_x, (0, relu_x.shape[3] % 2, 0, relu_x.shape[2] % 2))[:, :, 1:, 1:]
            y1 = F.conv2d(relu_x, self.w1, stride=2)
            y2 = F.conv2d(shifted, self.w2, stride=2)
            h, w = y1.shape[-2:]
            y = torch.cat([y1.view(b, self.m, c // 2, h, w), y2.view(b, self.m, c // 2, h, w)], 2)
            weight = None if scale is None else scale.repeat_interleave(c)
            return batch_norm(self.bn, y.view(b, self.m * c, h, w), weight, fast).view(
                b, self.m, c, h, w
            )
        sep = self.name.startswith("sep")
        first = None if sep else scale
        y = self._dil(relu_x, self.dw1, self.pw1, self.bn1, self.stride, True, first, last, fast)
        if sep:  # the second stage: each edge on its own channels
            y = self._dil(F.relu(y), self.dw2, self.pw2, self.bn2, 1, False, scale, None, fast)
        return y.view(b, self.m, c, *y.shape[-2:])


class FusedSearchCell(nn.Module):
    """``SearchCell`` computed per state: see the module's docstring."""

    def __init__(
        self,
        plan: CellPlan,
        candidates: Sequence[Sequence[str]],
        steps: int,
        partial: int = 1,
        aux: bool = False,
    ) -> None:
        super().__init__()
        if plan.c % partial:
            raise ValueError(f"partial: {partial} must divide the {plan.c} channels")
        self.steps, self.partial, self.c = steps, partial, plan.c // partial
        self.preprocess0, self.preprocess1 = preprocessing(plan, affine=False)
        inputs = edge_inputs(steps)
        width = max(len(c) for c in candidates)
        # per state: its edges (in node order), and per operation the positions among them
        self.out_edges: list[list[int]] = []
        self.bundles = nn.ModuleList()
        self.positions: list[dict[str, list[int]]] = []
        for s in range(steps + 1):
            edges = [e for e, (_, i) in enumerate(inputs) if i == s]
            ops: dict[str, list[int]] = {}  # operation -> positions among the state's edges
            for pos, e in enumerate(edges):
                for name in candidates[e]:
                    if name != "none":
                        ops.setdefault(name, []).append(pos)
            self.out_edges.append(edges)
            self.positions.append(ops)
            self.bundles.append(
                nn.ModuleDict(
                    {
                        name: OpBundle(name, self.c, plan.stride(s), len(pos))
                        for name, pos in ops.items()
                    }
                )
            )
            # where each (edge, operation) weight sits in the cell's flattened weights
            for name, positions in ops.items():
                flat = [
                    edges[p] * width + list(candidates[edges[p]]).index(name) for p in positions
                ]
                self.register_buffer(f"w_{s}_{name}", torch.tensor(flat), persistent=False)
                if len(positions) < len(edges):
                    self.register_buffer(f"p_{s}_{name}", torch.tensor(positions), persistent=False)
        self.bypass = nn.ModuleList(
            nn.MaxPool2d(2, 2) if plan.stride(s) == 2 and partial > 1 else nn.Identity()
            for s in range(steps + 1)
        )
        # DARTS-'s auxiliary skip on every edge (``MixedOp``'s ``aux``): the identity, once per
        # state, or on a strided state a factorized reduce per edge
        self.aux = aux
        self.aux_reduce = nn.ModuleDict(
            {
                str(s): OpBundle("skip_connect", self.c, 2, len(self.out_edges[s]))
                for s in range(steps + 1)
                if aux and plan.stride(s) == 2
            }
        )

    def copy_from(self, cell: Any) -> None:
        """Take the weights of a ``SearchCell`` with the same plan and candidates."""
        self.preprocess0.load_state_dict(cell.preprocess0.state_dict())
        self.preprocess1.load_state_dict(cell.preprocess1.state_dict())
        for s, edges in enumerate(self.out_edges):
            bundles: Any = self.bundles[s]
            for name, bundle in bundles.items():
                bundle.copy_from([cell.edges[edges[p]].op(name) for p in self.positions[s][name]])
            if str(s) in self.aux_reduce:
                aux: Any = self.aux_reduce[str(s)]
                aux.copy_from([cell.edges[e].aux for e in edges])

    def _mixed(self, s: int, x: Tensor, flat: Tensor, beta: float = 0.0) -> Tensor:
        """Weighted sums of every candidate on every edge leaving state ``s``: (B, m, c, H, W),
        plus ``beta`` times the auxiliary skip."""
        if self.partial > 1:
            x = x[:, : self.c]
        relu_x = F.relu(x)
        last = functools.cache(lambda: relu_x.contiguous(memory_format=torch.channels_last))
        total: Tensor | None = None
        m = len(self.out_edges[s])
        bundles: Any = self.bundles[s]
        shared: list[tuple[Tensor, Tensor]] = []  # large maps: (output, its weight per edge)
        for name, bundle in bundles.items():
            w = flat[getattr(self, f"w_{s}_{name}")]
            if bundle.shared and bundle.large(x):
                pos = getattr(self, f"p_{s}_{name}", None)
                column = w if pos is None else w.new_zeros(m).index_put((pos,), w)
                shared.append((bundle(x, relu_x), column))
                continue
            if bundle.folds(x):  # the weights inside the last BN's kernel (``batch_norm``)
                y = bundle(x, relu_x, w, last)
            else:
                y = bundle(x, relu_x, None, last) * w.view(1, -1, 1, 1, 1)
            pos = getattr(self, f"p_{s}_{name}", None)
            if pos is None:
                total = y if total is None else total + y
            else:
                if total is None:
                    total = y.new_zeros((y.shape[0], m, *y.shape[2:]))
                total = total.index_add(1, pos, y)
        if shared:
            total = weighted_shared(shared, total)
        if total is None:  # every edge of this state is ``none`` only
            raise ValueError(f"state {s}: no candidate besides none")
        if self.aux and beta:
            if str(s) in self.aux_reduce:
                skip = self.aux_reduce[str(s)](x, relu_x)
            else:
                skip = x.unsqueeze(1)
            total = total + beta * skip
        return total

    def forward(self, s0: Tensor, s1: Tensor, weights: Tensor, beta: float = 0.0) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        flat = weights.reshape(-1)
        # each state's edges, unbound once: one backward that stacks the edges' gradients, where
        # indexing an edge at a time zero-fills and then adds a state-sized gradient per edge
        mixed: list[tuple[Tensor, ...]] = []
        bypass: list[Tensor] = []
        for s in range(self.steps + 2):
            if s >= 2:
                j = s - 2  # node j reads states 0..j+1; its slot among state i's edges
                node: Any = sum(mixed[i][j - max(0, i - 1)] for i in range(j + 2))
                if self.partial > 1:
                    rest: Any = sum(bypass[i] for i in range(j + 2))
                    node = _shuffle(torch.cat([node, rest], dim=1), self.partial)
                states.append(node)
            if s <= self.steps:
                mixed.append(self._mixed(s, states[s], flat, beta).unbind(1))
                if self.partial > 1:
                    bypass.append(self.bypass[s](states[s][:, self.c :]))
        return torch.cat(states[2:], dim=1)


def _pair_of_5x5(x: Tensor, k: int, m: int, stride: int) -> bool:
    """Whether a shared input below ``PAIR_FROM_CHANNELS`` runs its 5x5 depthwise-pointwise
    pairs as the pair rather than the dense product conv: on CPU maps of 32x32 and more, stride
    1, from 3 edges. There the product does 5-7x the pair's multiply-adds, and the pair with its
    depthwise conv in channels-last memory (``shared_depthwise``) was faster, forward and
    backward; at 2 edges the two tied, and at 3x3 the product won, so both keep it."""
    return (
        k == 5
        and m >= 3
        and stride == 1
        and x.device.type == "cpu"
        and x.shape[2] * x.shape[3] >= 1024
    )


def _shuffle(x: Tensor, groups: int) -> Tensor:
    b, channels, h, w = x.shape
    return x.view(b, groups, channels // groups, h, w).transpose(1, 2).reshape(b, channels, h, w)
