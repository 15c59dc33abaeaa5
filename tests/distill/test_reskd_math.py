"""Energy, the residual target, termination and the report's distances, pinned by hand."""

from __future__ import annotations

import math

import pytest
import torch

from distill.losses import energy, mutual_kl, relational_angle, relational_distance
from distill.residual import (
    dataset_energy,
    fixed_by_residuals,
    gi_over_c1_to_teacher,
    gi_per_sample,
    l2_to_teacher,
    residual_target,
    should_stop,
)


def test_energy_eq8_and_eq9_by_hand() -> None:
    logits = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])  # softmax [.75, .25] and [.5, .5]
    torch.testing.assert_close(energy(logits), torch.tensor([0.625, 0.5]))
    assert dataset_energy(logits) == pytest.approx(0.5625)
    assert energy(torch.tensor([[100.0, 0.0, 0.0]])).item() == pytest.approx(1.0)
    assert energy(torch.zeros(1, 4)).item() == pytest.approx(0.25)  # 1/C when uniform


def test_residual_target_and_stage_sum() -> None:
    t = torch.tensor([[2.0, -1.0]])
    s0 = torch.tensor([[1.5, 0.5]])
    t1 = residual_target(t, s0)
    torch.testing.assert_close(t1, torch.tensor([[0.5, -1.5]]))
    r1 = torch.tensor([[0.25, -1.0]])
    t2 = residual_target(t1, r1)  # T_2 = T_1 - R_1 = T - S_1
    torch.testing.assert_close(t2, residual_target(t, s0 + r1))


def test_termination_rule() -> None:
    assert should_stop(0.91, 1.0, 0.9) and not should_stop(0.9, 1.0, 0.9)
    assert not should_stop(0.95, 1.0, 1.0)
    assert not should_stop(1.0, 0.01, None)  # termination off: never


def test_distances_to_the_teacher() -> None:
    t = torch.zeros(2, 2)
    s = torch.tensor([[3.0, 4.0], [0.0, 0.0]])  # distances 5 and 0
    assert l2_to_teacher(s, t) == pytest.approx(2.5)
    torch.testing.assert_close(gi_per_sample(s, t), torch.tensor([5.0, 0.0]))


def test_gi_subset_reading_of_table_viii() -> None:
    """Section V: the average GI over the samples S0 predicts wrongly and a residual-guided
    S_i predicts correctly, the same samples for every row."""
    labels = torch.tensor([0, 0, 0, 0])
    s0 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])  # wrong on 1, 2, 3
    s1 = s0 + torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 0.0], [0.0, 0.0]])  # fixes 1
    s2 = s1 + torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [4.0, 0.0]])  # fixes 3
    mask = fixed_by_residuals([s0, s1, s2], labels)
    assert mask.tolist() == [False, True, False, True]  # 0: S0 right; 2: never fixed
    t = torch.tensor([[3.0, 0.0], [3.0, 0.0], [3.0, 0.0], [3.0, 0.0]])
    # S0 on samples 1 and 3: ||(-3, 1)|| both; S2: ||(-1, 1)|| and ||(1, 1)||
    assert gi_over_c1_to_teacher(gi_per_sample(s0, t), mask) == pytest.approx(math.sqrt(10))
    assert gi_over_c1_to_teacher(gi_per_sample(s2, t), mask) == pytest.approx(math.sqrt(2))
    assert gi_over_c1_to_teacher(gi_per_sample(s0, t), torch.zeros(4, dtype=torch.bool)) is None
    assert not fixed_by_residuals([s0], labels).any()  # no res-student: no sample


def test_mutual_kl_is_zero_for_equal_predictions_and_detaches_the_peer() -> None:
    a = torch.tensor([[1.0, 2.0]], requires_grad=True)
    b = torch.tensor([[1.0, 2.0]], requires_grad=True)
    loss = mutual_kl(a, b)
    assert loss.item() == pytest.approx(0.0, abs=1e-7)
    (mutual_kl(a, b * 2)).backward()
    assert b.grad is None and a.grad is not None


def test_relational_losses_are_zero_for_a_scaled_copy() -> None:
    torch.manual_seed(0)
    e = torch.randn(6, 4)
    assert relational_distance(3 * e, e).item() == pytest.approx(0.0, abs=1e-6)
    assert relational_angle(3 * e, e).item() == pytest.approx(0.0, abs=1e-6)
    assert relational_distance(torch.randn(6, 4), e).item() > 0
