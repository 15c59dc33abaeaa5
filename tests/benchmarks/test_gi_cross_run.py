"""``python -m benchmarks.gi_cross_run``: Table VIII read from run directories."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distill.gap_info import SampleOutputs


def _save(run_dir: Path, stages: list[torch.Tensor], archs: list[str]) -> None:
    run_dir.mkdir()
    labels = torch.tensor([0, 0])
    teacher = torch.tensor([[3.0, 0.0], [3.0, 0.0]])
    SampleOutputs.of(
        stages=stages, teacher_logits=teacher, labels=labels, archs=archs, teacher="T@1"
    ).save(run_dir)


def test_the_command_prints_every_student_and_the_subset(tmp_path: Path, capsys) -> None:
    from benchmarks.gi_cross_run import main

    s0 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # wrong on sample 1 only: (-3, 1) to T
    _save(tmp_path / "a", [s0, s0 + torch.tensor([[0.0, 0.0], [2.0, 0.0]])], ["r20", "r20-r8"])
    _save(tmp_path / "b", [s0, s0], ["r20", "r20-r14"])  # its R1 fixes nothing
    assert main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == [
        "run",
        "model",
        "arch",
        "test",
        "acc",
        "L2",
        "to",
        "T",
        "GI/C1",
        "to",
        "T",
    ]
    # sample 1 is the subset (run a's S1 fixes it): S0 sqrt(10) = 3.1623 there, a's S1 (-1, 1)
    assert lines[2].split()[-3:] == ["50.00%", "2.5811", "3.1623"]  # L2: (2 + sqrt(10)) / 2
    assert lines[3].split()[-2:] == ["1.7071", "1.4142"]  # L2: (2 + sqrt(2)) / 2
    assert lines[4].split()[1:3] == ["S1", "r20-r14"] and len(lines) == 6
    assert "over the 1 test samples S0 gets wrong" in lines[5]


def test_a_directory_without_outputs_is_named(tmp_path: Path) -> None:
    from benchmarks.gi_cross_run import main

    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path)])
    assert exit_.value.code == 2
