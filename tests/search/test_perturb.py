"""Perturbation-based selection (DARTS-PT) scores what the supernet needs, not what weighs most."""

from __future__ import annotations

import torch

from search.perturb import BatchLoss, Importance, importance
from space.supernet import NetShape, Supernet, edge_count, uniform_candidates
from tests.space.pairs import same_random_architecture

OPS = ("none", "avg_pool_3x3", "sep_conv_3x3")


def small(fused: bool = True) -> Supernet:
    shape = NetShape.of(channels=4, layers=3, num_classes=3, in_chans=1, input_size=8)
    torch.manual_seed(0)
    return Supernet(shape, uniform_candidates(OPS), fused=fused)


def mse_to(target: torch.Tensor, net: Supernet) -> BatchLoss:
    return lambda x, y, i: (net(x) - target).square().mean()


def test_a_heavy_operation_that_adds_nothing_is_not_chosen() -> None:
    """Every edge weighs sep_conv_3x3 most, but its convolutions are zero (it outputs nothing):
    the argmax keeps it everywhere, perturbation keeps the pooling the output depends on."""
    net = small()
    with torch.no_grad():
        for kind in ("normal", "reduce"):
            net.alphas[kind].copy_(torch.tensor([0.0, 0.0, 2.0]).expand(edge_count(4), 3))
        for name, p in net.named_parameters():
            if "sep_conv_3x3" in name:
                p.zero_()
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        target = net(x)  # any change of the output raises the loss
    argmax = net.genotype()
    assert {op for op, _ in (*argmax.normal, *argmax.reduce)} == {"sep_conv_3x3"}
    found = importance(net, mse_to(target, net), [(x, torch.zeros(16), torch.arange(16))])
    chosen = found.genotype(4)
    assert {op for op, _ in (*chosen.normal, *chosen.reduce)} == {"avg_pool_3x3"}
    for kind in ("normal", "reduce"):
        for row in found.ops[kind]:
            assert row["sep_conv_3x3"] == 0.0 < row["avg_pool_3x3"]
    # 2 operations and the edge itself, on 14 edges of 2 cell kinds, and the unperturbed loss
    assert found.evaluations == 1 + 2 * 14 * 3


def test_scores_match_the_per_edge_reference_and_leave_the_supernet_as_it_was() -> None:
    reference, fused = small(fused=False), small()
    same_random_architecture(reference, fused)
    x = torch.randn(8, 1, 8, 8)
    target = torch.randn(8, 3)
    batches = [(x, torch.zeros(8), torch.arange(8))]
    fused.eval()
    before = {k: v.clone() for k, v in fused.state_dict().items()}
    a = importance(reference, mse_to(target, reference), batches)
    b = importance(fused, mse_to(target, fused), batches)
    assert not fused.training  # the mode it was in
    for k, v in fused.state_dict().items():  # BatchNorm's running statistics restored
        torch.testing.assert_close(v, before[k])
    for kind in ("normal", "reduce"):
        for ra, rb in zip(a.ops[kind], b.ops[kind], strict=True):
            assert ra.keys() == rb.keys() == {"avg_pool_3x3", "sep_conv_3x3"}
            for op in ra:
                assert abs(ra[op] - rb[op]) < 1e-4 * max(1.0, abs(a.base_loss))
        for ea, eb in zip(a.edges[kind], b.edges[kind], strict=True):
            assert abs(ea - eb) < 1e-4 * max(1.0, abs(a.base_loss))


def test_genotype_keeps_the_two_edges_whose_removal_hurts_most() -> None:
    edges = [0.0] * edge_count(4)
    # node 0: inputs 0, 1; node 1: 0, 1, 2; node 2: 0..3; node 3: 0..4 (DARTS's edge order)
    for e, rise in {2: 0.5, 4: 0.4, 3: -0.1, 8: 0.3, 6: 0.2, 13: 0.9, 10: 0.8}.items():
        edges[e] = rise
    ops = [{"avg_pool_3x3": 0.1, "sep_conv_3x3": 0.2 if e % 2 else 0.05} for e in range(14)]
    found = Importance({"normal": ops, "reduce": ops}, {"normal": edges, "reduce": edges}, 1.0, 0)
    g = found.genotype(4)
    assert [tuple(edge) for edge in g.normal] == [
        ("avg_pool_3x3", 0),  # node 0: its only two inputs; even edges prefer pooling
        ("sep_conv_3x3", 1),
        ("avg_pool_3x3", 0),  # node 1: edges 2 and 4 (inputs 0 and 2), not edge 3
        ("avg_pool_3x3", 2),
        ("avg_pool_3x3", 1),  # node 2: edges 6 and 8
        ("avg_pool_3x3", 3),
        ("avg_pool_3x3", 1),  # node 3: edges 10 and 13
        ("sep_conv_3x3", 4),
    ]
