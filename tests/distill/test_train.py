from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distill.data import load_dataset
from distill.losses import KDLoss
from distill.models import build_model
from distill.train import (
    Distillation,
    Supervised,
    TrainConfig,
    cosine_power_factors,
    evaluate,
    fit,
    preset,
)
from distill.train_config import make_optimizer, make_schedule


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", augment=False)


def _config(**kw) -> TrainConfig:
    return preset("cpu-tiny", batch_size=64, **kw)


def test_supervised_training_learns_real_digits(digits) -> None:
    model = build_model("resnet8", digits.info, width=0.5)
    history = fit(
        Supervised(model),
        digits.train,
        config=_config(epochs=3),
        progress=False,
        eval_data=digits.test,
    )
    assert [r.epoch for r in history.epochs] == [1, 2, 3]
    assert history.epochs[-1].loss < history.epochs[0].loss
    assert evaluate(model, digits.test) > 0.5  # chance is 0.1
    assert history.final.eval_accuracy == pytest.approx(evaluate(model, digits.test))


def test_distillation_keeps_the_teacher_frozen(digits) -> None:
    teacher = build_model("resnet8", digits.info)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = build_model("resnet8", digits.info, width=0.25)
    task = Distillation(student, teacher, KDLoss(distance="kl"))
    fit(task, digits.train, config=_config(epochs=1), progress=False)
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN stats included
    assert not teacher.training


def test_resume_continues_from_the_last_epoch_exactly(digits, tmp_path: Path) -> None:
    class Interrupted(Exception):
        pass

    def stop_after_two(record, total) -> None:
        if record.epoch == 2:
            raise Interrupted

    def run(ckpt: Path | None, on_epoch=None) -> tuple[torch.nn.Module, object]:
        torch.manual_seed(123)
        model = build_model("resnet8", digits.info, width=0.25)
        h = fit(
            Supervised(model),
            digits.train,
            config=_config(epochs=3),
            progress=False,
            checkpoint_dir=ckpt,
            on_epoch=on_epoch,
        )
        return model, h

    straight, _ = run(None)
    with pytest.raises(Interrupted):
        run(tmp_path, stop_after_two)  # the process dies after epoch 2
    resumed, history = run(tmp_path)
    assert history.resumed_from == 2
    assert [r.epoch for r in history.epochs] == [1, 2, 3]
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"epochs": 0}, "epochs"),
        ({"lr": -1.0}, "lr"),
        ({"optimizer": "lion"}, "optimizer"),
        ({"schedule": "step"}, "schedule"),
        ({"momentum": 1.0}, "momentum"),
        ({"schedule": "cosine-power", "lr_min": 0.2}, "lr_min"),
        ({"power": 0.5}, "power"),
    ],
)
def test_bad_training_config_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field}:"):
        TrainConfig(**kwargs)


def test_presets_follow_the_paper() -> None:
    cifar = preset("cifar")
    assert (cifar.epochs, cifar.batch_size, cifar.lr, cifar.momentum, cifar.weight_decay) == (
        250,
        128,
        0.1,
        0.9,
        1e-4,
    )
    assert cifar.milestones == (150, 200) and cifar.gamma == 0.1
    with pytest.raises(ValueError, match="unknown preset 'fast'.*cifar"):
        preset("fast")


def test_cosine_power_annealing_as_stacnas_trains_its_networks() -> None:
    """sharpDARTS's curve, pinned by hand for 3 epochs, p = 2, 0.1 -> 1e-4: c_e = 0.75, 0.25, 0
    and 2^(c_e + 1) rescaled to [0, 1] gives 1, 0.3784 / 1.3636, 0."""
    middle = 1e-4 + (0.1 - 1e-4) * (2**1.25 - 2) / (2**1.75 - 2)
    want = [0.1, middle, 1e-4]
    assert [f * 0.1 for f in cosine_power_factors(3, 0.1, 1e-4, 2)] == pytest.approx(want)
    # power 1 is plain cosine over epochs 1..E rescaled: 1, 1/3, 0 for 3 epochs
    assert cosine_power_factors(3, 1.0, 0.0, 1) == pytest.approx([1.0, 1 / 3, 0.0])
    config = TrainConfig(epochs=3, lr=0.1, schedule="cosine-power", lr_min=1e-4, power=2)
    optimizer = make_optimizer([torch.nn.Parameter(torch.zeros(1))], config)
    schedule, seen = make_schedule(optimizer, config), []
    for _ in range(4):  # past the end it stays at lr_min
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert seen == pytest.approx([*want, 1e-4])
    # fields added later leave the stage keys of configs that do not use them unchanged
    assert "lr_min" not in TrainConfig().to_dict() and config.to_dict()["power"] == 2


def test_empty_training_set_fails_before_training(digits) -> None:
    model = build_model("resnet8", digits.info)
    empty = torch.utils.data.Subset(digits.train, [])
    with pytest.raises(ValueError, match="empty"):
        fit(Supervised(model), empty, config=_config(), progress=False)


def test_in_memory_sets_are_batched_as_tensors_in_the_dataloaders_order() -> None:
    """Digits and MNIST 5k without augmentation are served as tensors gathered by index (no
    per-sample ``__getitem__`` and collation): the same batches, in the same order, leaving the
    generators where a DataLoader leaves them; augmented sets keep the per-sample path."""
    from torch.utils.data import DataLoader, Subset

    from distill.data import load_dataset
    from distill.train import Indexed, TensorBatches, loader

    plain = load_dataset("digits", augment=False)
    nested = Indexed(Subset(Subset(plain.train, list(range(7, 900))), list(range(3, 800, 3))))
    for shuffle in (True, False):
        for seeded in (True, False):
            g1 = torch.Generator().manual_seed(5) if seeded else None
            g2 = torch.Generator().manual_seed(5) if seeded else None
            torch.manual_seed(1)
            expected = list(DataLoader(nested, batch_size=32, shuffle=shuffle, generator=g1))
            after_expected = torch.rand(3)
            torch.manual_seed(1)
            batches = loader(nested, batch_size=32, shuffle=shuffle, generator=g2)
            assert isinstance(batches, TensorBatches) and len(batches) == len(expected)
            got = list(batches)
            assert torch.equal(torch.rand(3), after_expected)  # the global RNG as after it
            if g1 is not None and g2 is not None:
                assert torch.equal(g1.get_state(), g2.get_state())
            assert len(got) == len(expected)
            for (x1, y1, i1), (x2, y2, i2) in zip(expected, got, strict=True):
                assert torch.equal(x1, x2) and torch.equal(y1, y2) and torch.equal(i1, i2)
    augmented = load_dataset("digits", augment=True)
    assert isinstance(loader(augmented.train, batch_size=32), DataLoader)
    assert isinstance(loader(plain.test, batch_size=32), TensorBatches)
