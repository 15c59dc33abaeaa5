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
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from space.network import CellPlan, preprocessing
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
        faster forms that round differently may run (``_batch_norm``'s ``fast``)."""
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
        ``scale``, one weight per edge, when given: ``_batch_norm``).

        ``shared``: ``x`` is the state every edge reads (c channels). Below
        ``PAIR_FROM_CHANNELS`` a depthwise conv followed by a pointwise one is then one dense
        conv from c to m x c channels whose kernel is their product ``pw[o, i] * dw[i]``: the
        parameters (and so the gradients and the optimisation) stay those of the two convs, and
        on CPUs the dense conv runs 1.3-4x faster than the pair at up to 16 channels. It does c
        times a depthwise conv's multiply-adds, so from 32 channels the pair is mostly faster
        (forward and backward, 2 threads, batch 64, at 32 and 64 channels: 1.1-3.8x for 4 edges,
        5x5 kernels gaining most; for 2 edges with 3x3 kernels at 32 channels 0.75-0.85x): every
        edge's depthwise conv as one grouped conv with m outputs per input channel, then the
        pointwise convs as one batched matrix product.

        Otherwise (a separable conv's second stage) ``x`` holds each edge's own m x c channels
        and the pair runs as it is, grouped per edge (the composed kernel, a grouped dense conv,
        was no faster there); its pointwise part goes through ``_pointwise`` (a batched matrix
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
                return _batch_norm(bn, y, weight, fast)
            if (
                k == 5
                and x.device.type == "cpu"
                and stride == 1
                and (c >= PAIR_FROM_CHANNELS or x.shape[2] * x.shape[3] >= 1024)
            ):
                y = _Depthwise5x5.apply(x, dw, pad, self.dilation)
            else:
                y = F.conv2d(x, dw, None, stride, pad, self.dilation, groups=x.shape[1])
            return _batch_norm(bn, _pointwise(y, pw, m), weight, fast)
        if c >= PAIR_FROM_CHANNELS or _pair_of_5x5(x, k, m, stride):
            y = _shared_depthwise(x, dw, m, stride, pad, self.dilation, last)
            b, h, w = y.shape[0], y.shape[2], y.shape[3]
            y = torch.matmul(pw.view(m, c, c), y.view(b, m, c, h * w))
            return _batch_norm(bn, y.view(b, m * c, h, w), weight, fast)
        kernel = (pw.view(m, c, c, 1, 1) * dw.view(m, 1, c, k, k)).reshape(m * c, c, k, k)
        if dense_as_product(x, m * c, stride):  # tiny maps: one matrix product
            y = conv_as_product(x, kernel, stride, pad, self.dilation)
        else:
            y = F.conv2d(x, kernel, None, stride, pad, self.dilation)
        return _batch_norm(bn, y, weight, fast)

    def forward(
        self,
        x: Tensor,
        relu_x: Tensor,
        scale: Tensor | None = None,
        last: Callable[[], Tensor] | None = None,
    ) -> Tensor:
        """``scale``: the m edges' architecture weights, taken into the last BN (``folds``);
        without it the output is unweighted. ``last``: ``relu_x`` in channels-last memory, made
        once for the state's bundles that want it (``_shared_depthwise``)."""
        b, c = x.shape[0], self.c
        if scale is not None and self.shared:
            raise ValueError(f"{self.name}: its output is shared by the edges, not weighted")
        fast = self.large(x)
        if self.shared:
            y = x if "pool" not in self.name else _batch_norm(self.bn, self.pool(x), None, fast)
            return y.unsqueeze(1)
        if self.name == "skip_connect":  # FactorizedReduce on every edge
            shifted = F.pad(relu_x, (0, relu_x.shape[3] % 2, 0, relu_x.shape[2] % 2))[:, :, 1:, 1:]
            y1 = F.conv2d(relu_x, self.w1, stride=2)
            y2 = F.conv2d(shifted, self.w2, stride=2)
            h, w = y1.shape[-2:]
            y = torch.cat([y1.view(b, self.m, c // 2, h, w), y2.view(b, self.m, c // 2, h, w)], 2)
            weight = None if scale is None else scale.repeat_interleave(c)
            return _batch_norm(self.bn, y.view(b, self.m * c, h, w), weight, fast).view(
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
        from space.supernet import edge_inputs  # the supernet imports this module

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
            if bundle.folds(x):  # the weights inside the last BN's kernel (``_batch_norm``)
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
            total = _weighted_shared(shared, total)
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


def _weighted_shared(shared: list[tuple[Tensor, Tensor]], total: Tensor | None) -> Tensor:
    """``total`` (B, m, c, H, W) plus every shared output (B, 1, c, H, W: pooling, the
    identity) times its weight on each of the m edges, as one batched matrix product (m x k
    weights by k outputs) added into ``total`` (``baddbmm``). One broadcast product and one sum
    per operation write m outputs each, and their backward reads the gradient twice per
    operation; here both directions are one product. Forward and backward, batch 64, 2 threads,
    3 shared operations on 4 edges: 10.0 against 15.0 ms at 16 channels on 32x32, 3.9 against
    7.2 at 32 on 16x16, 2.1 against 3.6 at 64 on 8x8. The same sums in another order: float
    rounding apart, the same output and gradients. Used where ``OpBundle.large``."""
    outputs = torch.cat([y for y, _ in shared], 1)  # (B, k, c, H, W)
    weights = torch.stack([w for _, w in shared], 1)  # (m, k)
    b, k = outputs.shape[0], outputs.shape[1]
    m = weights.shape[0]
    flat = outputs.view(b, k, -1)
    if total is None:
        return torch.matmul(weights, flat).view(b, m, *outputs.shape[2:])
    mixed = torch.baddbmm(total.reshape(b, m, -1), weights.expand(b, m, k), flat)
    return mixed.view(total.shape)


class _Depthwise5x5(torch.autograd.Function):
    """A depthwise conv (stride 1) whose weight's gradient is taken in channels-last memory.

    mkldnn's depthwise 5x5 weight gradient in the default layout is its slowest kernel on CPUs:
    301 ms for 64 channels at 32x32, batch 64, 2 threads, against 39 ms in channels-last (plus
    two copies into that layout) and 8 ms for a 3x3 kernel. The forward and the input's gradient
    are the default ones (the same ops, the same floats); only the weight's gradient sums in
    another order. Used where the search's rounding may change: maps of 32x32 and more, or 32
    channels and more, none of which the demo's and MNIST's recorded searches have."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, padding: int, dilation: int) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.dilation = padding, dilation
        return F.conv2d(x, weight, None, 1, padding, dilation, groups=x.shape[1])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        x, weight = ctx.saved_tensors
        conv = (weight, None, [1, 1], [ctx.padding] * 2, [ctx.dilation] * 2, False, [0, 0])
        groups = x.shape[1]
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad, x, *conv, groups, [True, False, False]
            )[0]
        if ctx.needs_input_grad[1]:
            last = torch.channels_last
            grad_w = torch.ops.aten.convolution_backward(
                grad.contiguous(memory_format=last),
                x.contiguous(memory_format=last),
                *conv,
                groups,
                [False, True, False],
            )[1]
        return grad_x, grad_w, None, None


class _SharedDepthwise(torch.autograd.Function):
    """``m`` edges' depthwise convs on their shared input ``x`` (``_shared_depthwise``: 5x5
    kernels, and dilated ones at stride 2), each of the three passes in the form oneDNN runs
    fastest on CPUs:
    - forward: an ordinary depthwise conv over m copies of the input, except dilated at stride
      2: the conv with m outputs per input channel in channels-last memory (``last``: the
      input's copy, made once per state);
    - the input's gradient, not dilated: the copies' gradients, summed;
    - the weight's gradient, and a dilated conv's input gradient: the conv with m outputs per
      input channel, in channels-last memory at stride 1 (dilated: on maps larger than 8x8),
      in the default layout otherwise.

    ms per pass at batch 64, 2 threads, Intel Xeon with AVX-512, conversions included (copies /
    multiplier, default layout / multiplier, channels-last):

    | c, edges, map, kernel, dilation, stride | forward | input gradient | weight gradient |
    |---|---|---|---|
    | 16, 4, 32x32, 5, 1, 1 | 3.2 / 8.2 / 5.7 | 3.3 / 17.9 / 13.5 | 86.6 / 23.6 / 7.2 |
    | 16, 4, 32x32, 5, 2, 1 | 3.2 / 8.3 / 5.8 | 67.5 / 18.4 / 13.2 | 79.9 / 23.4 / 7.5 |
    | 32, 4, 16x16, 5, 1, 1 | 1.5 / 5.8 / 3.2 | 1.6 / 7.4 / 6.7 | 15.5 / 5.0 / 3.7 |
    | 64, 4, 8x8, 5, 1, 1 | 0.8 / 4.1 / 1.7 | 1.0 / 4.4 / 3.8 | 12.0 / 3.7 / 2.0 |
    | 64, 4, 8x8, 5, 2, 1 | 0.7 / 4.0 / 1.7 | 13.8 / 3.8 / 3.0 | 11.3 / 3.6 / 8.9 |
    | 32, 2, 32x32, 5, 1, 2 | 1.8 / 6.4 / 2.7 | 2.2 / 7.4 / 4.8 | 11.9 / 6.3 / 3.4 |
    | 32, 4, 32x32, 5, 2, 2 | 4.6 / 7.8 / 3.2 | 30.8 / 7.7 / 42.8 | 25.3 / 7.0 / 15.7 |
    | 64, 4, 16x16, 5, 2, 2 | 2.0 / 4.6 / 1.6 | 18.3 / 4.1 / 33.7 | 15.8 / 4.1 / 10.2 |
    | 32, 2, 32x32, 3, 2, 2 | 1.8 / 3.4 / 2.0 | 7.8 / 3.7 / 24.8 | 4.8 / 2.5 / 7.4 |

    The same products in another order: float rounding apart, the same output and gradients."""

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        dw: Tensor,
        m: int,
        stride: int,
        pad: int,
        dilation: int,
        last: Callable[[], Tensor] | None,
    ) -> Tensor:
        c = x.shape[1]
        ctx.conv = (m, stride, pad, dilation, last)
        if dilation > 1 and stride > 1:
            if last is None:
                x_last = x.contiguous(memory_format=torch.channels_last)
            else:  # made with autograd on: the state's other bundles may differentiate it
                with torch.enable_grad():
                    x_last = last()
            ctx.save_for_backward(x, None, dw)
            y = F.conv2d(x_last, _per_input(dw, m), None, stride, pad, dilation, groups=c)
            return _edge_major(y, m)
        copies = x.repeat(1, m, 1, 1)
        ctx.save_for_backward(x, copies if dilation == 1 else None, dw)
        return F.conv2d(copies, dw, None, stride, pad, dilation, groups=m * c)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, copies, dw = ctx.saved_tensors
        m, stride, pad, dilation, last = ctx.conv
        b, c, k = x.shape[0], x.shape[1], dw.shape[-1]
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        conv = ([stride] * 2, [pad] * 2, [dilation] * 2, False, [0, 0])
        grad = grad.contiguous()
        grad_x = grad_w = None
        if need_x and copies is not None:
            grad_copies = torch.ops.aten.convolution_backward(
                grad, copies, dw, None, *conv, m * c, [True, False, False]
            )[0]
            grad_x = grad_copies.unflatten(1, (m, c)).sum(1)
            need_x = False
        if need_x or need_w:
            in_last = stride == 1 and (dilation == 1 or x.shape[2] * x.shape[3] > 64)
            h, w = grad.shape[2], grad.shape[3]
            # channel-major: input channel i's m outputs at i*m .. i*m+m-1
            grad_cm = grad.view(b, m, c, h, w).transpose(1, 2).reshape(b, c * m, h, w)
            if in_last:
                grad_cm = grad_cm.contiguous(memory_format=torch.channels_last)
                x = last() if last is not None else x.contiguous(memory_format=torch.channels_last)
            gx, gw, _ = torch.ops.aten.convolution_backward(
                grad_cm, x, _per_input(dw, m), None, *conv, c, [need_x, need_w, False]
            )
            if need_x:
                grad_x = gx
            if need_w:
                grad_w = gw.view(c, m, k, k).transpose(0, 1).reshape(m * c, 1, k, k)
        return grad_x, grad_w, None, None, None, None, None


def _per_input(dw: Tensor, m: int) -> Tensor:
    """Edge-major depthwise kernels (m x c, 1, k, k) in the channel-major order of a conv with m
    outputs per input channel (groups = c): input channel i's at i*m .. i*m+m-1."""
    c, k = dw.shape[0] // m, dw.shape[-1]
    return dw.view(m, c, k, k).transpose(0, 1).reshape(c * m, 1, k, k)


def _edge_major(y: Tensor, m: int) -> Tensor:
    """A channel-major conv output (input channel i's m outputs together) reordered edge-major
    (edge e's c channels together), in the default layout: one copy."""
    b, mc, h, w = y.shape
    return y.unflatten(1, (mc // m, m)).transpose(1, 2).reshape(b, mc, h, w)


def _pair_of_5x5(x: Tensor, k: int, m: int, stride: int) -> bool:
    """Whether a shared input below ``PAIR_FROM_CHANNELS`` runs its 5x5 depthwise-pointwise
    pairs as the pair rather than the dense product conv: on CPU maps of 32x32 and more, stride
    1, from 3 edges. There the product does 5-7x the pair's multiply-adds, and the pair with its
    depthwise conv in channels-last memory (``_shared_depthwise``) was faster, forward and
    backward: 34 against 40 ms at 16 channels, 4 edges, batch 64 (2 threads, Intel Xeon with
    AVX-512); at 2 edges the two tied (21 against 19 ms), and at 3x3 the product won (16 against
    21 ms), so both keep it."""
    return (
        k == 5
        and m >= 3
        and stride == 1
        and x.device.type == "cpu"
        and x.shape[2] * x.shape[3] >= 1024
    )


def _shared_depthwise(
    x: Tensor,
    dw: Tensor,
    m: int,
    stride: int,
    pad: int,
    dilation: int,
    last: Callable[[], Tensor] | None = None,
) -> Tensor:
    """The depthwise convs of ``m`` edges on their shared input ``x`` (c channels; ``dw``:
    (m x c, 1, k, k), edge-major): m x c channels, edge-major (edge e at e*c .. e*c+c-1), as the
    pointwise product reads them. A conv with m outputs per input channel gives them
    channel-major (input channel i feeds i*m .. i*m+m-1); one copy reorders them (the product
    would copy its transposed operand otherwise, both ways).

    oneDNN's depthwise conv with a channel multiplier (groups=c, m outputs per input channel) is
    slow in the default layout. On CPUs, forward and backward (input and weight gradients), batch
    64, 2 threads, ms (default layout / channels-last / m copies of the input), 4 edges:

    | c, map, stride | 3x3 | 5x5 | dilated 3x3 | dilated 5x5 |
    |---|---|---|---|---|
    | 16, 32x32, 1 | 22.2/15.6/11.7 | 50.6/29.0/94.7 | 22.6/16.0/70.2 | 50.9/26.6/158 |
    | 32, 16x16, 1 | 8.2/8.7/4.8 | 20.0/13.4/21.2 | 8.8/8.7/22.0 | 18.4/12.8/46.2 |
    | 64, 8x8, 1 | 6.5/4.4/2.3 | 12.2/7.3/14.5 | 6.2/4.7/15.4 | 11.1/14.4/27.1 |
    | 32, 32x32, 2 | 11.5/12.6/14.4 | 24.0/18.7/38.2 | 10.6/39.5/35.0 | 23.5/62.0/62.9 |

    So: a plain 3x3 at stride 1 as an ordinary depthwise conv (groups = m x c) over m copies of
    the input (oneDNN's fast 3x3 kernel; the copies' gradient is their sum); 5x5, and dilated
    ones at stride 2, with each pass (forward, input gradient, weight gradient) in the form that
    runs it fastest (``_SharedDepthwise``, measured per pass); dilated 3x3 at stride 1 in
    channels-last memory (one copy in, one out), as a single edge's 5x5; the rest (strided
    3x3) as a conv with m outputs per input channel in the default layout. The same
    products in another order: float rounding apart, the same output and gradients. ``last``
    gives ``x`` in channels-last memory, made once per state for all its bundles (the copy and
    its gradient's copy back cost 0.3-2 ms a bundle at the default search shape)."""
    c, k = x.shape[1], dw.shape[-1]
    cpu = x.device.type == "cpu"
    if cpu and k == 3 and dilation == 1 and stride == 1 and m > 1:
        return F.conv2d(x.repeat(1, m, 1, 1), dw, None, 1, pad, 1, groups=m * c)
    if cpu and m > 1 and (k == 5 or (dilation > 1 and stride > 1)):
        y: Tensor = _SharedDepthwise.apply(x, dw, m, stride, pad, dilation, last)
        return y
    in_last = cpu and (
        (dilation == 1 and k == 5)
        or (dilation > 1 and stride == 1 and (k == 3 or x.shape[2] * x.shape[3] > 64))
    )
    if in_last:
        x = last() if last is not None else x.contiguous(memory_format=torch.channels_last)
    return _edge_major(F.conv2d(x, _per_input(dw, m), None, stride, pad, dilation, groups=c), m)


def _batch_norm(bn: nn.BatchNorm2d, x: Tensor, weight: Tensor | None, fast: bool = False) -> Tensor:
    """``bn(x)`` (a non-affine BN), times ``weight`` per channel when given: ``F.batch_norm``'s
    affine weight, so that one kernel normalizes and weights, and its backward gives the weight's
    gradient from the sums it takes anyway. Separately, the product costs a pass over the output
    forward and two backward (the input's gradient and the weight's reduction), as many as the BN
    itself: on the default search shape's first cells 2.1 against 3.4 ms for one
    ``sep_conv_3x3`` bundle's BN and weighting, forward and backward (4 edges, 16 channels,
    32x32, batch 64, 2 threads). The same product in another order: float rounding apart, the
    same output and gradients. Used on maps of 32x32 and more or from 32 channels
    (``OpBundle.folds``), where the fused cells' rounding already differs from the per-edge
    cells' (``_pointwise``, ``_Depthwise5x5``), so the demo's and MNIST's searches keep theirs.

    ``fast`` (the same maps and channels, training on a CPU): the batch statistics come from
    ``_BatchStatsNorm`` instead of PyTorch's training kernel."""
    if weight is None and not fast:
        return bn(x)
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)  # as ``_BatchNorm.forward`` counts
        if bn.momentum is None:
            momentum = 1.0 / float(bn.num_batches_tracked)
    training = bn.training or (bn.running_mean is None and bn.running_var is None)
    keep = not bn.training or bn.track_running_stats
    running_mean = bn.running_mean if keep else None
    running_var = bn.running_var if keep else None
    if fast and training and x.device.type == "cpu" and x.dtype == torch.float32:
        y: Tensor = _BatchStatsNorm.apply(
            x.contiguous(), weight, running_mean, running_var, momentum, bn.eps
        )
        return y
    return F.batch_norm(x, running_mean, running_var, weight, None, training, momentum, bn.eps)


class _BatchStatsNorm(torch.autograd.Function):
    """A training-mode BN on a CPU: ``F.batch_norm(x, None, None, weight, training=True)``, with
    the batch statistics taken as per-plane sums and sums of squares (``sum`` and
    ``vector_norm`` along each (sample, channel) plane: contiguous reductions reading each value
    once, without the product ``vecdot`` writes) and the normalisation done by
    PyTorch's inference kernel (one pass). PyTorch's CPU training kernel takes its mean and its
    variance in two passes of its own and normalises in a third, 1.5-2.3x slower on the search's
    shapes (forward, batch 64, 2 threads, Intel Xeon with AVX-512: 64 channels at 32x32 3.39
    against 1.95 ms, 128 at 16x16 1.59 against 1.04, 256 at 8x8 0.85 against 0.57). The
    variance is E[x^2] - E[x]^2 in float32, which differs from the two-pass figure by float
    rounding (1e-6 relative on unit-scale inputs). The backward is PyTorch's own
    (``native_batch_norm_backward`` with these statistics), so the gradient's formula is the
    same. Running statistics are updated as ``F.batch_norm`` does (unbiased variance)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        weight: Tensor | None,
        running_mean: Tensor | None,
        running_var: Tensor | None,
        momentum: float,
        eps: float,
    ) -> Tensor:
        b, c = x.shape[0], x.shape[1]
        rows = x.view(b * c, -1)  # one (sample, channel) plane per row
        n = b * rows.shape[1]
        sums = rows.sum(1)
        squares = torch.linalg.vector_norm(rows, dim=1).square()
        mean, mean_square = (torch.stack([sums, squares]).view(2, b, c).sum(1) / n).unbind()
        var = (mean_square - mean * mean).clamp_min(0.0)
        if running_mean is not None and running_var is not None:
            running_mean.lerp_(mean, momentum)
            running_var.lerp_(var * (n / max(1, n - 1)), momentum)
        ctx.save_for_backward(x, weight, mean, torch.rsqrt(var + eps))
        ctx.eps = eps
        return F.batch_norm(x, mean, var, weight, None, False, 0.0, eps)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, weight, mean, invstd = ctx.saved_tensors
        mask = [ctx.needs_input_grad[0], weight is not None and ctx.needs_input_grad[1], False]
        grad_x, grad_w, _ = torch.ops.aten.native_batch_norm_backward(
            grad.contiguous(), x, weight, None, None, mean, invstd, True, ctx.eps, mask
        )
        return grad_x, grad_w, None, None, None, None


def _shuffle(x: Tensor, groups: int) -> Tensor:
    b, channels, h, w = x.shape
    return x.view(b, groups, channels // groups, h, w).transpose(1, 2).reshape(b, channels, h, w)


def _pointwise(y: Tensor, pw: Tensor, m: int) -> Tensor:
    """The 1x1 conv of ``m`` groups of c channels each (``pw``: (m x c, c, 1, 1)) on ``y``: (B,
    m x c, H, W). On CPUs, for maps of 32x32 and larger, as one batched matrix product per group:
    there mkldnn's grouped 1x1 conv was up to 7x slower forward and backward (41 ms against 5.9
    at 4 groups of 16 channels, 32x32, batch 64; 2 threads). On smaller maps the two were within
    2 ms of each other either way (16x16: 2.0 against 1.2 ms; 8x8 at 64 channels: 3.0 against
    5.9), so the conv stays there (the maps ``small_maps`` admits take ``depthwise_pointwise``)."""
    b, mc, h, w = y.shape
    c = mc // m
    if y.device.type != "cpu" or not y.is_contiguous() or h * w < 1024:
        return F.conv2d(y, pw, None, 1, 0, 1, m)
    return torch.matmul(pw.view(m, c, c), y.view(b, m, c, h * w)).view(b, mc, h, w)
