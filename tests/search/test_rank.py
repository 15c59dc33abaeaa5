"""Ranking a search's best few networks by a short training (``search/rank.py``)."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.utils.data import Subset

from distill.data import load_dataset
from distill.methods import KDConfig
from search.budget import NON_ZERO, derive_within_budget
from search.rank import candidates, drawn_scores
from search.run import residual_objective, run_search
from search.spec import SearchSpec
from space.genotypes import Genotype
from space.network import genotype_macs
from space.supernet import CELL_KINDS, NetShape, argmax_genotype, edge_count

torch.set_num_threads(1)


def test_drawn_scores_draw_each_edge_operation_in_proportion_to_its_weight() -> None:
    weights = {"none": 0.5, "sep_conv_3x3": 0.3, "max_pool_3x3": 0.15, "skip_connect": 0.05}
    scores = {kind: [dict(weights)] for kind in CELL_KINDS}
    rng = random.Random(0)
    draws = Counter()
    n = 6000
    for _ in range(n):
        drawn = drawn_scores(scores, rng)["normal"][0]
        assert "none" not in drawn  # derivation never keeps none: it is never drawn
        draws[max(drawn, key=lambda op: drawn[op])] += 1
    # renormalised over the non-zero operations: 0.6, 0.3, 0.1 (3 standard errors at most)
    for op, p in (("sep_conv_3x3", 0.6), ("max_pool_3x3", 0.3), ("skip_connect", 0.1)):
        assert abs(draws[op] / n - p) < 3 * (p * (1 - p) / n) ** 0.5 + 1e-3, draws


def test_candidates_start_with_the_derivation_are_distinct_and_within_budget() -> None:
    shape = NetShape.of(channels=4, layers=5, num_classes=10, in_chans=1, input_size=28)
    rng = random.Random(1)
    scores = {
        kind: [{op: rng.random() for op in NON_ZERO} for _ in range(edge_count(4))]
        for kind in CELL_KINDS
    }
    budget = 2.4
    first = derive_within_budget(
        argmax_genotype(scores), scores, shape=shape, budget_mflops=budget, min_channels=2
    )
    options = candidates(
        first, scores, shape=shape, budget_mflops=budget, min_channels=2, count=5, seed=0
    )
    assert options[0] == (first, "argmax") and [s for _, s in options[1:]] == ["drawn"] * 4
    keys = {(tuple(d.genotype.normal), tuple(d.genotype.reduce), d.channels) for d, _ in options}
    assert len(keys) == 5
    for d, _ in options:
        assert d.mflops <= budget
        assert d.macs == genotype_macs(
            d.genotype, channels=d.channels, layers=shape.layers, num_classes=10, in_chans=1,
            input_size=28,
        )  # fmt: skip
    again = candidates(
        first, scores, shape=shape, budget_mflops=budget, min_channels=2, count=5, seed=0
    )
    assert [d.genotype for d, _ in again] == [d.genotype for d, _ in options]  # seeded


@pytest.mark.slow
def test_a_ranked_search_keeps_the_candidate_with_the_lowest_held_out_objective(
    tmp_path: Path,
) -> None:
    data = load_dataset("digits")
    n = 160
    torch.manual_seed(0)
    teacher, student = torch.randn(n, 10) * 3, torch.randn(n, 10)
    method = KDConfig(distance="kl")
    factory = residual_objective(
        method=method, objective=method.objective(), teacher=None, base=None,
        cache=(teacher, student),
    )  # fmt: skip
    spec = SearchSpec(
        budget_mflops=0.12, epochs=1, channels=4, layers=3, batch_size=32, rank_candidates=3
    )
    result = run_search(
        spec, info=data.info, train_data=Subset(data.train, list(range(n))),
        objective_factory=factory, out_dir=tmp_path, progress=False, log=lambda _: None,
    )  # fmt: skip
    record = json.loads((tmp_path / "search.json").read_text())
    ranking = record["selection"]["ranking"]
    assert len(ranking) == 3 and sum(r["source"] == "argmax" for r in ranking) == 1
    losses = [r["held_out_loss"] for r in ranking]
    assert losses == sorted(losses)  # best first
    assert Genotype.from_dict(ranking[0]["genotype"]) == result.genotype  # the best is kept
    assert ranking[0]["channels"] == result.channels and result.complexity.mflops <= 0.12
    assert record["spec"]["rank_candidates"] == 3
    # a search that does not rank keeps the stage key it had before ranking existed
    assert "rank_candidates" not in SearchSpec(budget_mflops=0.12).to_dict()
