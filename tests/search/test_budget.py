from __future__ import annotations

import random

import pytest

from search.budget import (
    FILL,
    NON_ZERO,
    BudgetError,
    derive_within_budget,
    maximum_mflops,
    minimum_mflops,
)
from space.flops import count
from space.network import GenotypeNetwork
from space.supernet import CELL_KINDS, NetShape, argmax_genotype

SHAPES = [
    NetShape.of(channels=8, layers=5, num_classes=10, in_chans=1, input_size=28),
    NetShape.of(channels=6, layers=3, num_classes=10, in_chans=1, input_size=8),
    NetShape.of(channels=8, layers=4, num_classes=100, in_chans=3, input_size=32),
]


def _random_search_outcome(rng: random.Random) -> tuple[dict, dict]:
    scores = {k: [{op: rng.random() for op in NON_ZERO} for _ in range(14)] for k in CELL_KINDS}
    probs = {k: [dict(e, none=rng.random()) for e in scores[k]] for k in CELL_KINDS}
    return probs, scores


@pytest.mark.parametrize("shape", SHAPES, ids=["mnist", "digits", "cifar100"])
def test_derived_network_never_exceeds_its_budget_and_uses_it_well(shape: NetShape) -> None:
    """A property over a spread of budgets (log-uniform from the minimum to past the maximum) and
    random architecture weights: the counted MFLOPs of the built network never exceed the budget,
    and a reachable budget is at least 85% used."""
    rng = random.Random(sum(map(ord, str(shape))))
    low, high = minimum_mflops(shape, 4), maximum_mflops(shape)
    for _ in range(12):
        probs, scores = _random_search_outcome(rng)
        budget = low * (1.3 * high / low) ** rng.random()
        derived = derive_within_budget(
            argmax_genotype(probs), scores, shape=shape, budget_mflops=budget
        )
        net = GenotypeNetwork(
            derived.genotype,
            channels=derived.channels,
            layers=shape.layers,
            num_classes=shape.num_classes,
            in_chans=shape.in_chans,
            input_size=shape.input_size,
        )
        counted = count(net, input_shape=(shape.in_chans, shape.input_size, shape.input_size))
        assert counted.macs == derived.macs
        assert counted.mflops <= budget, (counted.mflops, budget, derived.moves)
        if budget <= high:
            assert counted.mflops >= FILL * budget, (counted.mflops, budget, derived.moves)


def test_an_argmax_within_budget_is_kept_as_it_is() -> None:
    shape = SHAPES[0]
    probs, scores = _random_search_outcome(random.Random(1))
    genotype = argmax_genotype(probs)
    net = GenotypeNetwork(genotype, channels=8, layers=5, num_classes=10, in_chans=1, input_size=28)
    cost = count(net, input_shape=(1, 28, 28)).mflops
    derived = derive_within_budget(genotype, scores, shape=shape, budget_mflops=cost / 0.9)
    assert derived.genotype == genotype and derived.channels == 8 and not derived.moves
    repair = derived.to_dict()["repair"]  # provenance: the search chose all of it
    assert repair["operations_changed"] == 0 and repair["channels_changed"] == 0
    assert repair["kept_search_choice"] and repair["mflops_before"] == repair["mflops_after"]


def test_over_budget_trades_the_operation_losing_least_weight_per_mflop() -> None:
    shape = SHAPES[1]
    probs, scores = _random_search_outcome(random.Random(2))
    for kind in CELL_KINDS:  # every edge wants sep_conv_5x5 ...
        for e in range(14):
            scores[kind][e] = dict.fromkeys(NON_ZERO, 0.1) | {"sep_conv_5x5": 0.9}
            probs[kind][e] = dict(scores[kind][e], none=0.0)
    scores["normal"][0]["sep_conv_3x3"] = 0.89  # ... but one edge barely prefers it
    genotype = argmax_genotype(probs)
    full = derive_within_budget(genotype, scores, shape=shape, budget_mflops=1e3)
    derived = derive_within_budget(genotype, scores, shape=shape, budget_mflops=full.mflops - 1e-6)
    assert derived.moves[0].startswith("normal node 0 input 0: sep_conv_5x5 -> sep_conv_3x3")
    assert derived.mflops < full.mflops
    repair = derived.repair()  # provenance: one operation changed, channels kept
    assert repair["operations_changed"] == 1 and repair["channels_changed"] == 0
    assert repair["mflops_before"] == pytest.approx(full.mflops)
    assert (
        repair["mflops_after"] == pytest.approx(derived.mflops) and not repair["kept_search_choice"]
    )
    least = minimum_mflops(shape, shape.channels)  # the cheapest operations at these channels
    narrowed = derive_within_budget(genotype, scores, shape=shape, budget_mflops=0.95 * least)
    assert narrowed.repair()["channels_changed"] > 0
    assert narrowed.repair()["channels_before"] == shape.channels


def test_a_budget_below_the_smallest_network_fails_with_the_minimum() -> None:
    shape = SHAPES[0]
    least = minimum_mflops(shape, 4)
    probs, scores = _random_search_outcome(random.Random(3))
    with pytest.raises(BudgetError, match=rf"budget_mflops: 0.1 is below .* {least:.4f} MFLOPs"):
        derive_within_budget(argmax_genotype(probs), scores, shape=shape, budget_mflops=0.1)


def test_cap_skips_keeps_the_strongest_skip_connections_only() -> None:
    from search.budget import cap_skips
    from space.genotypes import Genotype

    probs, scores = _random_search_outcome(random.Random(4))
    for e in range(14):
        scores["normal"][e] = dict.fromkeys(NON_ZERO, 0.1)
        scores["normal"][e]["skip_connect"] = 0.9 + e / 1000  # later edges weigh more
        scores["normal"][e]["dil_conv_3x3"] = 0.5
        probs["normal"][e] = dict(scores["normal"][e], none=0.0)
    genotype = argmax_genotype(probs)
    assert [op for op, _ in genotype.normal] == ["skip_connect"] * 8
    capped = cap_skips(genotype, scores, 2)
    ops = [op for op, _ in capped.normal]
    assert ops.count("skip_connect") == 2 and ops[-2:] == ["skip_connect"] * 2
    assert [i for _, i in capped.normal] == [i for _, i in genotype.normal]  # same topology
    assert capped.reduce == genotype.reduce and isinstance(capped, Genotype)
