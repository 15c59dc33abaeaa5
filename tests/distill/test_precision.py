"""Precision (``train.precision``): what each setting resolves to, that float32 keeps every stage
key of the configs stored before the setting existed, that bf16 and 16-mixed really train in
their dtypes (on CPUs here), and that the loss scale of 16-mixed survives a resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from distill.precision import Amp, precision_key, resolve_precision
from distill.stages import stage_key
from distill.train import Supervised, TrainConfig, fit, preset
from search.config import RunConfig

CPU = torch.device("cpu")
CUDA = torch.device("cuda")

# stage_key("teacher", {"train": ...}) of these configs, computed by the code as it was before
# precision and devices existed (pinned: a stored stage keeps its key)
KEYS_BEFORE = {"cpu-tiny": "c1e0400137b9", "cifar": "26ff981bba9a"}
CUSTOM_BEFORE = "fbcd586002f5"


def _custom(**kw: object) -> TrainConfig:
    return TrainConfig(
        epochs=2, grad_clip=5.0, schedule="cosine-power", power=2.0, device="cpu", **kw
    )


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def bf16_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine whose CUDA device supports bfloat16 (as far as the resolution asks)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)


@pytest.mark.usefixtures("no_cuda")
@pytest.mark.parametrize("name", list(KEYS_BEFORE))
@pytest.mark.parametrize("precision", ["auto", "32"])
def test_float32_on_a_cpu_keeps_the_stage_keys_stored_before_the_setting(
    name: str, precision: str
) -> None:
    config = preset(name, precision=precision)
    assert stage_key("teacher", {"train": config.to_dict()}) == KEYS_BEFORE[name]
    custom = _custom(precision=precision)
    assert stage_key("teacher", {"train": custom.to_dict()}) == CUSTOM_BEFORE
    assert "precision" not in config.to_dict() and "devices" not in config.to_dict()


@pytest.mark.usefixtures("no_cuda")
def test_a_precision_that_changes_results_changes_the_key() -> None:
    keys = {
        p: stage_key("t", {"train": _custom(precision=p).to_dict()}) for p in ("bf16", "16-mixed")
    }
    assert len(set(keys.values()) | {CUSTOM_BEFORE}) == 3
    assert _custom(precision="bf16").to_dict()["precision"] == "bf16"
    assert _custom(devices=2).to_dict()["devices"] == 2  # per-rank batch norms: another result


@pytest.mark.usefixtures("bf16_gpu")
def test_auto_is_bf16_on_a_gpu_that_supports_it_and_keys_say_so() -> None:
    assert resolve_precision("auto", CUDA) == "bf16"
    assert resolve_precision("auto", CPU) == "32"
    config = preset("cpu-tiny", device="auto")
    assert config.to_dict()["precision"] == "bf16"
    assert stage_key("teacher", {"train": config.to_dict()}) != KEYS_BEFORE["cpu-tiny"]
    # what it resolves to is the key's, however it was spelled
    assert config.to_dict() == preset("cpu-tiny", device="auto", precision="bf16").to_dict()


def test_auto_is_float32_on_a_gpu_without_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_precision("auto", CUDA) == "32"
    assert precision_key("auto", CUDA) == {}


def test_a_run_config_carries_the_precision_to_every_training() -> None:
    config = RunConfig.model_validate(
        {
            "dataset": "digits",
            "teacher": {"model": "resnet8"},
            "student": {"model": "resnet8"},
            "train": {"precision": "bf16"},
            "devices": 2,
        }
    )
    for kw in ({}, {"teacher": True}, {"nas": True}):
        trains = config.train_config(**kw)  # type: ignore[arg-type]
        assert (trains.precision, trains.devices) == ("bf16", 2)
        assert trains.run_key() == {"precision": "bf16", "devices": 2}
    with pytest.raises(ValueError, match="precision"):
        RunConfig.model_validate(
            {"dataset": "digits", "teacher": {"model": "resnet8"},
             "student": {"model": "resnet8"}, "train": {"precision": "fp8"}}
        )  # fmt: skip


class DtypeProbe(nn.Module):
    """A linear classifier that records the dtype its layer computed in."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 3)
        self.seen: set[torch.dtype] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc(x)
        self.seen.add(out.dtype)
        return out


def _data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=g)
    return TensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long())


@pytest.mark.parametrize(
    ("precision", "dtype"),
    [("32", torch.float32), ("bf16", torch.bfloat16), ("16-mixed", torch.float16)],
)
def test_each_precision_trains_in_its_dtype_and_keeps_float32_weights(
    precision: str, dtype: torch.dtype
) -> None:
    torch.manual_seed(0)
    model = DtypeProbe()
    config = TrainConfig(epochs=4, batch_size=16, lr=0.2, device="cpu", precision=precision)
    history = fit(Supervised(model), _data(), config=config, progress=False)
    assert model.seen == {dtype}
    assert model.fc.weight.dtype == torch.float32
    assert history.final.loss < history.epochs[0].loss  # it learns in every precision


def test_16_mixed_scales_the_loss_and_its_scale_survives_a_resume(tmp_path: Path) -> None:
    """The GradScaler's scale is in the epoch checkpoint: an interrupted run resumes with it and
    ends where an uninterrupted one ends."""
    config = TrainConfig(epochs=3, batch_size=16, lr=0.2, device="cpu", precision="16-mixed")

    class Interrupted(Exception):
        pass

    def stop_after_first(record: object, total: int) -> None:
        if getattr(record, "epoch", 0) == 1:
            raise Interrupted

    torch.manual_seed(0)
    whole = DtypeProbe()
    fit(Supervised(whole), _data(), config=config, progress=False)
    torch.manual_seed(0)
    resumed = DtypeProbe()
    with pytest.raises(Interrupted):
        fit(Supervised(resumed), _data(), config=config, checkpoint_dir=tmp_path,
            progress=False, on_epoch=stop_after_first)  # fmt: skip
    state = torch.load(tmp_path / "last.pt", weights_only=False)
    assert state["scaler"]["scale"] == 2.0**16  # torch's initial scale, no overflow yet
    history = fit(Supervised(resumed), _data(), config=config, checkpoint_dir=tmp_path,
                  progress=False)  # fmt: skip
    assert history.resumed_from == 1
    torch.testing.assert_close(resumed.fc.weight, whole.fc.weight, rtol=0, atol=0)


def test_an_overflowing_float16_step_is_skipped_and_the_scale_halves() -> None:
    model = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    amp = Amp("16-mixed", "cpu")
    before = model.weight.detach().clone()
    with amp.autocast():
        loss = model(torch.full((1, 2), 6e4)).float().sum() * 1e4  # inf once scaled by 2^16
    amp.backward(loss)
    amp.unscale(optimizer)
    amp.step(optimizer)
    amp.update()
    assert torch.equal(model.weight, before)
    assert amp.state_dict()["scale"] == 2.0**15
