"""Sample-adaptive inference (Algorithm 2) really skips work and returns S_L's logits."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from distill.combined import CombinedStudent, evaluate_adaptive
from distill.losses import energy
from distill.models import NetSpec


class Recorder(nn.Module):
    """Adds a fixed vector to nothing: returns ``scale * x[:, :C]`` and records what it saw."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.seen: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        self.seen.append(x.clone())
        return self.scale * x


def _nets() -> tuple[CombinedStudent, list[Recorder]]:
    s0, r1, r2 = Recorder(1.0), Recorder(2.0), Recorder(4.0)
    return CombinedStudent(s0, [r1, r2], mflops=[10.0, 5.0, 2.0]), [s0, r1, r2]


X = torch.tensor([[4.0, 0.0], [0.1, 0.0], [0.0, 0.2], [3.0, 3.0]])


def test_samples_above_the_threshold_never_reach_later_res_students() -> None:
    model, (_, r1, r2) = _nets()
    th = 0.9
    result = model.adaptive(X, threshold=th)
    e0 = energy(X)
    confident = e0 > th
    assert confident.tolist() == [True, False, False, False]
    # R1 saw exactly the samples with Energy(S0) <= TH, nothing else
    torch.testing.assert_close(r1.seen[0], X[~confident])
    e1 = energy(3 * X)  # S1 = S0 + R1 = 3x
    reach_r2 = (~confident) & (e1 <= th)
    torch.testing.assert_close(r2.seen[0], X[reach_r2])
    assert result.used.tolist() == [0, 2 if reach_r2[1] else 1, 2 if reach_r2[2] else 1, 2]


def test_every_sample_gets_the_logits_of_the_student_it_stopped_at() -> None:
    model, _ = _nets()
    result = model.adaptive(X, threshold=0.6)
    partial = [X, 3 * X, 7 * X]  # S0, S1, S2
    for j, used in enumerate(result.used.tolist()):
        torch.testing.assert_close(result.logits[j], partial[used][j])


def test_infinite_thresholds_give_s_n_and_s0() -> None:
    model, _ = _nets()
    torch.testing.assert_close(model.adaptive(X, threshold=math.inf).logits, 7 * X)
    torch.testing.assert_close(model.adaptive(X, threshold=math.inf).logits, model.full(X))
    torch.testing.assert_close(model.adaptive(X, threshold=-math.inf).logits, X)
    assert model.adaptive(X, threshold=-math.inf).used.tolist() == [0, 0, 0, 0]


def test_expected_mflops_counts_what_each_sample_used() -> None:
    model, _ = _nets()
    assert model.expected_mflops(torch.tensor([0, 1, 2, 2])) == pytest.approx(
        (10 + 15 + 17 + 17) / 4
    )


def test_save_and_load_one_file_with_weights_only(tmp_path: Path) -> None:
    torch.manual_seed(0)
    specs = [NetSpec("resnet8", 0.5, 10, 1, 8), NetSpec("resnet8", 0.25, 10, 1, 8)]
    model = CombinedStudent(
        specs[0].build(), [specs[1].build()], threshold=0.7, specs=specs, mflops=[0.2, 0.05]
    ).eval()
    model.save(tmp_path / "combined.pt")
    raw = torch.load(tmp_path / "combined.pt", weights_only=True)
    assert raw["threshold"] == 0.7
    loaded = CombinedStudent.load(tmp_path / "combined.pt")
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert loaded.threshold == 0.7 and loaded.mflops == [0.2, 0.05]


def test_evaluate_adaptive_over_a_dataset() -> None:
    model, _ = _nets()
    data = torch.utils.data.TensorDataset(X, torch.tensor([0, 0, 1, 1]))
    result = evaluate_adaptive(model, data, threshold=-math.inf, batch_size=3)
    assert result.stage_histogram == [4, 0, 0]
    assert result.expected_mflops == pytest.approx(10.0)
    assert result.accuracy == pytest.approx(0.75)  # argmax of X: 0, 0, 1, 0 (tie) vs 0, 0, 1, 1
