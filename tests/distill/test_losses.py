from __future__ import annotations

import math

import pytest
import torch

from distill.losses import KDLoss, soft_distance

S = torch.tensor([[0.0, 0.0]])
T = torch.tensor([[math.log(3.0), 0.0]])  # softmax(T) = [0.75, 0.25]
Y = torch.tensor([0])


def test_eq3_with_l2_pinned_by_hand() -> None:
    # softmax(S) = [.5, .5]; L2 = .25^2 + .25^2 = .125; CE(S, 0) = ln 2
    loss = KDLoss(distance="l2", tau=0.5, t=1.0)(S, T, Y)
    assert loss.item() == pytest.approx(0.5 * 0.125 + 0.5 * math.log(2), abs=1e-6)


def test_eq3_temperature_softens_and_scales_by_t_squared() -> None:
    # t = 2: softmax(T/2) = [sqrt3, 1] / (sqrt3 + 1); L2 = 2 * (p - .5)^2; times t^2 = 4
    p = math.sqrt(3) / (math.sqrt(3) + 1)
    loss = KDLoss(distance="l2", tau=1.0, t=2.0)(S, T, Y)
    assert loss.item() == pytest.approx(4 * 2 * (p - 0.5) ** 2, abs=1e-6)


def test_eq3_with_kl_pinned_by_hand() -> None:
    # KL(T || S) = .75 ln(.75/.5) + .25 ln(.25/.5)
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert soft_distance(S, T, distance="kl", t=1.0).item() == pytest.approx(kl, abs=1e-6)
    loss = KDLoss(distance="kl", tau=0.25, t=1.0)(S, T, Y)
    assert loss.item() == pytest.approx(0.25 * kl + 0.75 * math.log(2), abs=1e-6)


def test_distances_average_over_the_batch() -> None:
    s2, t2 = torch.cat([S, T]), torch.cat([T, T])
    assert soft_distance(s2, t2, distance="l2", t=1.0).item() == pytest.approx(0.125 / 2)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"distance": "l1"}, "distance"), ({"tau": 1.5}, "tau"), ({"t": 0.0}, "t")],
)
def test_bad_settings_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field}:"):
        KDLoss(**kwargs)
