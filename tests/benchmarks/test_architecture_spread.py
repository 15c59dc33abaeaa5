"""The variance split of ``benchmarks.architecture_spread`` (how much of R1's accuracy its
architecture explains), on tables whose components are known."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def spread():  # type: ignore[no-untyped-def]
    from benchmarks import architecture_spread

    return architecture_spread


def test_between_and_within_components(spread) -> None:  # type: ignore[no-untyped-def]
    # three genotypes 1 point apart, each +-0.1 point over two seeds
    table = {name: [m + 0.001, m - 0.001] for name, m in (("a", 0.96), ("b", 0.97), ("c", 0.98))}
    parts = spread.decompose(table)
    # MS_within = 6 * 1e-6 / 3 = 2e-6; MS_between = 2 * 2e-4 / 2 = 2e-4
    assert parts["sd_training"] == pytest.approx(2e-6**0.5)
    assert parts["sd_architecture"] == pytest.approx(((2e-4 - 2e-6) / 2) ** 0.5)
    assert parts["f_statistic"] == pytest.approx(100.0)
    assert parts["mean"] == pytest.approx(0.97)
    assert parts["architecture_share"] == pytest.approx(9.9e-5 / (9.9e-5 + 2e-6))
    # F on 2 and d d.f. has the survival function (1 + 2F / d) ** (-d / 2)
    assert parts["p_value"] == pytest.approx((1 + 200 / 3) ** -1.5)


def test_no_architecture_effect_gives_zero_between(spread) -> None:  # type: ignore[no-untyped-def]
    # the same seeds' values for every genotype, reordered: equal means, all of it training noise
    table = {"a": [0.965, 0.970, 0.975], "b": [0.975, 0.965, 0.970], "c": [0.970, 0.975, 0.965]}
    parts = spread.decompose(table)
    assert parts["sd_architecture"] == 0.0 and parts["architecture_share"] == 0.0
    assert parts["sd_training"] == pytest.approx(0.005)
    assert parts["f_statistic"] == 0.0 and parts["p_value"] == 1.0
    with pytest.raises(SystemExit, match="same number"):
        spread.decompose({"a": [0.9, 0.91], "b": [0.9]})


def test_power_of_the_quality_test(spread) -> None:  # type: ignore[no-untyped-def]
    parts = {"sd_architecture": 0.001, "sd_training": 0.001}
    p = spread.power(parts, seeds=3, per_seed=3, top=0.10)
    # delta = z_0.9 * 0.001 = 0.00128155; pooled SE = sqrt(1e-6 + 2e-6 / 3) / sqrt(3) = 0.00074536
    assert p.margin == pytest.approx(0.00128155, rel=1e-4)
    assert p.pooled_se == pytest.approx(0.00074536, rel=1e-4)
    assert p.p_pass == pytest.approx(0.7641, abs=1e-3)  # Phi(1.71939 - 1)
    assert p.p_above == pytest.approx(0.9572, abs=1e-3)  # Phi(1.71939)
    assert p.seeds_for_goal == 4  # (0.00129099 * 1.84162 / 0.00128155) ** 2 = 3.44
    assert spread.power(parts, seeds=4, per_seed=3, top=0.10).p_pass >= 0.8
    assert spread.power(parts, seeds=3, per_seed=3, top=0.10).p_pass < 0.8
    # no architecture variance: a search cannot be told from random, whatever it finds
    none = spread.power(
        {"sd_architecture": 0.0, "sd_training": 0.001}, seeds=3, per_seed=3, top=0.01
    )
    assert none.margin == 0.0 and none.seeds_for_goal is None
    assert none.p_pass == pytest.approx(0.1587, abs=1e-3)  # luck: Phi(-1)
    assert none.p_above == pytest.approx(0.5)
    assert spread.seeds_phrase(None) == "no number of seeds"
    assert spread.seeds_phrase(1) == "1 seed" and spread.seeds_phrase(4) == "4 seeds"


def test_given_genotypes_against_random_ones(spread) -> None:  # type: ignore[no-untyped-def]
    # 4 random genotypes at 0.960-0.963, 2 given ones at 0.965 and 0.962 (their runs +-0.001)
    table = {f"random #{k}": [0.960 + k / 1000 + d for d in (0.001, -0.001)] for k in range(4)}
    table |= {"searched a": [0.966, 0.964], "searched b": [0.963, 0.961]}
    parts = {"sd_architecture": 0.0005, "sd_training": 0.001}
    got = spread.given_vs_random(table, parts)
    assert got["given"] == 2 and got["random"] == 4
    assert got["diff"] == pytest.approx((0.965 + 0.962) / 2 - 0.9615)
    # sqrt(b^2 (1/2 + 1/4) + w^2 (1/4 + 1/8))
    assert got["se"] == pytest.approx((0.0005**2 * 0.75 + 0.001**2 * 0.375) ** 0.5)
    # means 0.965, 0.962 | 0.960, 0.961, 0.962, 0.963: of the 15 pairs of the 6, those summing
    # to at least the given 1.927 are 0.965 with either 0.962 (a tie counts) or with 0.963
    assert got["p_rank"] == pytest.approx(3 / 15)
    # the given ones the best of all: the one pick of 15 that reaches them
    best = table | {"searched a": [0.971, 0.969], "searched b": [0.970, 0.968]}
    assert spread.given_vs_random(best, parts)["p_rank"] == pytest.approx(1 / 15)
    # nothing to compare: no given genotype, or a single random one
    only_random = {k: v for k, v in table.items() if k.startswith("random")}
    assert spread.given_vs_random(only_random, parts) is None
    assert spread.given_vs_random({"searched a": [0.9], "random #0": [0.9]}, parts) is None
