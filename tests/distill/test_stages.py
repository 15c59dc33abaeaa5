"""The one stage store: a stage is reused only once committed whole; a crash at any point between
its files leaves nothing a later run trusts, and that run recomputes or reuses cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from distill.combined import LogitSum
from distill.methods import KDConfig
from distill.observe import observing
from distill.residual import ResidualDistillation
from distill.stages import StageStore, stage_key
from distill.train import Supervised, TrainConfig, evaluate
from tests.distill.observers import Recording

PAYLOAD = {"net": "tiny", "train": {"epochs": 1}}


class Crash(Exception):
    pass


def store(tmp_path: Path) -> StageStore:
    return StageStore(tmp_path, log=lambda _: None)


def test_a_crash_between_files_is_recomputed_then_reused(tmp_path: Path) -> None:
    calls: list[str] = []

    def crashing(directory: Path) -> None:
        (directory / "weights.pt").write_text("half")
        raise Crash  # killed after the first file

    with pytest.raises(Crash):
        store(tmp_path).compute("student", PAYLOAD, desc="S0", make=crashing)
    key = stage_key("student", PAYLOAD)
    assert not (tmp_path / f"student-{key}").exists()  # nothing committed

    def make(directory: Path) -> None:
        calls.append("make")
        (directory / "weights.pt").write_text("whole")

    first = store(tmp_path).compute("student", PAYLOAD, desc="S0", make=make)
    assert first.trained and (first.directory / "weights.pt").read_text() == "whole"
    again = store(tmp_path).compute("student", PAYLOAD, desc="S0", make=make)
    assert not again.trained and calls == ["make"]
    assert again.seconds == pytest.approx(first.seconds, abs=0.01)


def test_a_crash_before_the_rename_commits_nothing(tmp_path: Path, monkeypatch) -> None:
    rename = Path.rename

    def killed(self: Path, target: Path) -> Path:
        raise Crash

    monkeypatch.setattr(Path, "rename", killed)
    with pytest.raises(Crash):
        store(tmp_path).compute("search", PAYLOAD, desc="R1", make=lambda d: None)
    monkeypatch.setattr(Path, "rename", rename)
    key = stage_key("search", PAYLOAD)
    assert not (tmp_path / f"search-{key}").exists()
    result = store(tmp_path).compute("search", PAYLOAD, desc="R1", make=lambda d: None)
    assert result.trained and (result.directory / "stage.json").is_file()


def test_a_half_written_stage_of_an_older_version_is_not_trusted(tmp_path: Path) -> None:
    key = stage_key("teacher", PAYLOAD)
    old = tmp_path / f"teacher-{key}"
    old.mkdir()
    (old / "weights.pt").write_text("written before stage.json, then killed")
    result = store(tmp_path).compute(
        "teacher", PAYLOAD, desc="T", make=lambda d: (d / "weights.pt").write_text("new")
    )
    assert result.trained and (old / "weights.pt").read_text() == "new"


def test_trained_weights_come_back_on_reuse(tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(32, 4), torch.randint(0, 2, (32,)))
    config = TrainConfig(epochs=1, batch_size=8, lr=0.1, device="cpu")

    def train(net: nn.Module) -> bool:
        return store(tmp_path).train(
            "teacher", PAYLOAD, {"model": net}, task=Supervised(net), train_data=data,
            config=config, desc="T", progress=False,
        ).trained  # fmt: skip

    first, second = nn.Linear(4, 2), nn.Linear(4, 2)
    assert train(first) and not train(second)
    assert torch.equal(first.weight, second.weight)


Epochs = Recording  # keeps every epoch's record (what a worker stores per epoch)


def test_a_residual_stage_reports_the_d_v_accuracy_of_s_i_every_epoch(tmp_path: Path) -> None:
    """With cached targets (looked up by training-set index) and its base S_{i-1} given, the
    per-epoch accuracy on D_v, a Subset of the training set, is that of S_i = S_{i-1} + R_i, not
    of R_i alone: S_{i-1} here is exact on every sample, R_i starts at zero."""
    torch.manual_seed(0)
    x = torch.randn(96, 4)
    y = x[:, :3].argmax(1)
    data = torch.utils.data.TensorDataset(x, y)
    d_v = torch.utils.data.Subset(data, list(range(0, 96, 4)))
    base = nn.Linear(4, 3)
    with torch.no_grad():  # S_{i-1}: ten times the first three features, right on every sample
        base.weight.copy_(10 * torch.eye(3, 4))
        base.bias.zero_()
        cached = base(x)
    r = nn.Linear(4, 3)
    nn.init.zeros_(r.weight)
    nn.init.zeros_(r.bias)
    method = KDConfig()
    task = ResidualDistillation(
        r, objective=method.objective(), method=method, base=base, cache=(cached, cached)
    )
    config = TrainConfig(epochs=2, batch_size=16, lr=0.01, device="cpu")
    seen = Epochs()
    with observing(seen):
        store(tmp_path).train(
            "residual", PAYLOAD, {"model": r}, task=task, train_data=data, config=config,
            desc="R1", progress=False, eval_data=d_v,
        )  # fmt: skip
    s_i = evaluate(LogitSum([base, r]), d_v)
    r_alone = evaluate(r, d_v)
    assert [rec.eval_accuracy for rec in seen.records] == [s_i, s_i] and s_i == 1.0
    assert r_alone < 0.9  # what the records would hold had R_i been evaluated alone
