"""The fused supernet (per state, candidates sharing an input run together) computes what the
straightforward per-edge one computes: same outputs, same gradients for every parameter."""

from __future__ import annotations

import pytest
import torch

from space.operations import GROUPS, PRIMITIVES
from space.supernet import NetShape, Supernet, edge_count, uniform_candidates
from tests.space.pairs import same_random_architecture

STAGE1 = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3")


def stage2_candidates(seed: int) -> dict[str, tuple[tuple[str, ...], ...]]:
    """STACNAS stage 2: each edge holds its own winning group (lists differ between edges)."""
    rng = torch.Generator().manual_seed(seed)
    groups = [g for g in GROUPS if g != "zero"]
    return {
        kind: tuple(
            ("none", *GROUPS[groups[int(torch.randint(len(groups), (1,), generator=rng))]])
            for _ in range(edge_count(4))
        )
        for kind in ("normal", "reduce")
    }


CASES = {
    "darts-all-ops": (uniform_candidates(PRIMITIVES), 4, 28, 1),
    # 32x32 maps: the separable convs' pointwise stage as a batched matrix product on CPUs
    "darts-all-ops-32x32": (uniform_candidates(PRIMITIVES), 4, 32, 1),
    # 8 channels, 4 cells: the last two at 32 (PAIR_FROM_CHANNELS), where the shared input's
    # separable and dilated convs run as a grouped depthwise conv and a batched pointwise one
    "darts-all-ops-32-channels": (uniform_candidates(PRIMITIVES), 8, 12, 1),
    "stacnas-stage1": (uniform_candidates(STAGE1), 6, 15, 1),  # odd sizes: padded reduce
    "stacnas-stage2": (stage2_candidates(0), 4, 16, 1),
    # 32x32 maps with a different candidate list per edge: pooling on some edges only, weighted
    # into the edges' sums by one batched product (space.kernels.weighted_shared)
    "stacnas-stage2-32x32": (stage2_candidates(0), 4, 32, 1),
    "pc-darts-k2": (uniform_candidates(PRIMITIVES), 4, 16, 2),
    # 4x4, 2x2 and 1x1 maps: the product kernels as one matrix product, the separable convs'
    # second stage as a depthwise and a grouped pointwise matrix product (space.operations)
    "tiny-maps": (uniform_candidates(PRIMITIVES), 4, 4, 1),
    "tiny-maps-stacnas-stage2": (stage2_candidates(0), 4, 5, 1),
}
# A weight's gradient sums over every position of every image: at 32x32 four times the terms of
# 16x16, summed in another order by the fused convs, so float32 rounding reaches 2.6e-5 there
# (with the grouped 1x1 convs as well as with the products; a wrong result is off by O(1)).
ATOL = {"darts-all-ops-32x32": 5e-5, "stacnas-stage2-32x32": 5e-5}


def grads(net: Supernet) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("case", list(CASES))
def test_fused_supernet_matches_the_per_edge_reference(case: str) -> None:
    candidates, channels, size, partial = CASES[case]
    atol = ATOL.get(case, 1e-5)
    shape = NetShape.of(channels=channels, layers=4, num_classes=5, in_chans=2, input_size=size)
    torch.manual_seed(0)
    reference = Supernet(shape, candidates, fused=False, partial=partial)
    fused = Supernet(shape, candidates, partial=partial)
    same_random_architecture(reference, fused)
    x = torch.randn(6, 2, size, size)
    target = torch.randn(6, 5)
    outs = []
    for net in (reference, fused):
        out = net(x)
        (out - target).square().mean().backward()
        outs.append(out.detach())
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=atol)
    g_ref, g_fused = grads(reference), grads(fused)
    for kind in ("normal", "reduce"):  # the architecture gradient, what the search follows
        torch.testing.assert_close(
            g_fused[f"alphas.{kind}"], g_ref[f"alphas.{kind}"], rtol=1e-4, atol=atol
        )
    shared = [n for n in g_ref if ".edges." not in n and not n.startswith("alphas")]
    assert shared, "stems, preprocessing and head take part"
    for name in shared:
        torch.testing.assert_close(g_fused[name], g_ref[name], rtol=1e-4, atol=atol)
    for cell in (0, 1, -1):  # the first: the largest maps; the last: the widest (32 channels)
        check_operation_grads(reference.cells[cell], fused.cells[cell], atol)


def check_operation_grads(
    cell_ref: torch.nn.Module, cell_fused: torch.nn.Module, atol: float
) -> None:
    """The fused bundles hold the per-edge weights (and so their gradients) stacked in edge order."""
    for s, edges in enumerate(cell_fused.out_edges):
        for name, bundle in cell_fused.bundles[s].items():
            if bundle.shared:
                continue
            ops = [cell_ref.edges[edges[p]].op(name) for p in cell_fused.positions[s][name]]
            convs = [[m for m in op.modules() if isinstance(m, torch.nn.Conv2d)] for op in ops]
            mine = [p for n, p in bundle.named_parameters()]
            for i, param in enumerate(mine):
                expected = torch.cat([c[i].weight.grad for c in convs])
                torch.testing.assert_close(param.grad, expected, rtol=1e-4, atol=atol)


def test_fused_supernet_has_the_reference_parameter_count() -> None:
    shape = NetShape.of(channels=4, layers=4, num_classes=10, in_chans=1, input_size=16)
    for candidates in (uniform_candidates(PRIMITIVES), stage2_candidates(1)):
        counts = [
            sum(p.numel() for p in Supernet(shape, candidates, fused=f).parameters())
            for f in (False, True)
        ]
        assert counts[0] == counts[1]


@pytest.mark.parametrize("partial", [1, 2])
def test_auxiliary_skip_fused_matches_reference_and_vanishes_at_zero(partial: int) -> None:
    """DARTS-'s auxiliary skip (identity, a factorized reduce on strided edges): the fused cells
    give the per-edge reference's outputs and gradients with it on (the reduce's weights
    included), have its parameter count, and at a coefficient of 0 compute exactly what the
    supernet without it computes."""
    shape = NetShape.of(channels=4, layers=4, num_classes=5, in_chans=2, input_size=8)
    torch.manual_seed(0)
    reference = Supernet(shape, uniform_candidates(PRIMITIVES), fused=False, partial=partial,
                         aux_skip=True)  # fmt: skip
    fused = Supernet(shape, uniform_candidates(PRIMITIVES), partial=partial, aux_skip=True)
    counts = [sum(p.numel() for p in n.parameters()) for n in (reference, fused)]
    assert counts[0] == counts[1]
    same_random_architecture(reference, fused)
    x = torch.randn(4, 2, 8, 8)
    target = torch.randn(4, 5)
    outs = []
    for net in (reference, fused):
        net.aux_beta = 0.7
        out = net(x)
        (out - target).square().mean().backward()
        outs.append(out.detach())
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-5)
    g_ref, g_fused = grads(reference), grads(fused)
    for kind in ("normal", "reduce"):
        torch.testing.assert_close(g_fused[f"alphas.{kind}"], g_ref[f"alphas.{kind}"],
                                   rtol=1e-4, atol=1e-5)  # fmt: skip
    reduce_ref, reduce_fused = reference.cells[1], fused.cells[1]
    assert reduce_fused.aux_reduce, "a reduction cell's first two states stride"
    for s, bundle in reduce_fused.aux_reduce.items():
        edges = reduce_fused.out_edges[int(s)]
        for mine, conv in ((bundle.w1, "conv_1"), (bundle.w2, "conv_2")):
            expected = torch.cat(
                [getattr(reduce_ref.edges[e].aux, conv).weight.grad for e in edges]
            )
            torch.testing.assert_close(mine.grad, expected, rtol=1e-4, atol=1e-5)
    with_aux = outs[1]
    plain = Supernet(shape, uniform_candidates(PRIMITIVES), partial=partial)
    plain.load_state_dict(fused.state_dict(), strict=False)
    fused.aux_beta = 0.0
    with torch.no_grad():
        torch.testing.assert_close(fused(x), plain(x))
        assert not torch.allclose(with_aux, plain(x), atol=1e-3)
