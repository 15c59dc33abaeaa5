"""The run config (pydantic): errors name the exact field as a list, and the payloads that stage
keys hash are those of the dataclass configs before it (stored stages are still reused)."""

from __future__ import annotations

import pytest

from distill.config import ConfigError
from distill.methods import KDConfig
from distill.stages import stage_key
from search.config import RunConfig
from search.spec import SearchSpec

BASE = {
    "dataset": "digits",
    "teacher": "resnet20",
    "student": "resnet8",
    "res_students": ["resnet8"],
}


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"ratio": "abc"}, ["ratio"]),  # was a TypeError (HTTP 500)
        ({"student_kd": {"tau": 2}}, ["student_kd", "tau"]),  # was reported at kd.tau
        (  # was one segment "res_students[0]"
            {"res_students": [{"search": {"budget_mflops": 0.1, "strategy": "x"}}]},
            ["res_students", 0, "search", "strategy"],
        ),
        ({"train": []}, ["train"]),
        ({"teacher": {"model": "resnet8", "width": "x"}}, ["teacher", "width"]),
        ({"teacher_checkpoint": 5}, ["teacher_checkpoint"]),
        ({"baselines": 5}, ["baselines"]),
        (
            {"res_students": [{"genotype": {"normal": []}, "channels": 4, "layers": 3}]},
            ["res_students", 0, "genotype"],
        ),
    ],
)
def test_errors_are_lists_naming_the_exact_field(change: dict, loc: list) -> None:
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict({**BASE, **change})
    assert info.value.errors[0]["loc"] == loc, info.value.errors
    assert str(info.value).startswith(".".join(str(p) for p in loc).replace(".0", "[0]"))


def test_a_config_round_trips_through_its_dict() -> None:
    config = RunConfig.from_dict(
        {**BASE, "res_students": [{"search": {"budget_mflops": 0.2}}, "resnet8"], "kd": {"t": 3}}
    )
    assert RunConfig.from_dict(config.to_dict()) == config
    assert config.res_students[0].searched and not config.res_students[1].searched


def test_stage_payloads_keep_the_keys_of_the_dataclass_configs() -> None:
    # Keys computed with the dataclass configs this schema replaced (same settings, same keys).
    # The search's key changed on purpose with issue 13 (new fields: a stored search of the old
    # estimator must not be reused): it was c8374fe22c79. It changed again with the default
    # budget floor (0.85): without the floor a search keeps the key it had before it.
    spec = SearchSpec(budget_mflops=0.1, epochs=1, channels=4, layers=3)
    assert stage_key("search", {"spec": spec.to_dict()}) == "76e168d325db"
    unfloored = SearchSpec(budget_mflops=0.1, epochs=1, channels=4, layers=3, budget_floor=0)
    assert stage_key("search", {"spec": unfloored.to_dict()}) == "0d265b07ef1c"
    kd = {
        "kd": KDConfig(distance="kl", t=4.0).for_stage(1),
        "kd0": KDConfig(distance="l2", tau=0.5).for_stage(0),
    }
    assert stage_key("residual", kd) == "6f62db104fa3"
    c = RunConfig.from_dict({**BASE, "train": {"epochs": 3, "milestones": [2]}})
    train = {"t": c.train_config().to_dict(), "tt": c.train_config(teacher=True).to_dict()}
    assert stage_key("train", train) == "b753cbffb4b6"


def test_paper_presets_augment_unless_told_not_to_and_then_it_is_reported() -> None:
    base = {"dataset": "digits", "teacher": "resnet8", "student": "resnet8", "max_stages": 0}
    assert not RunConfig.from_dict(base).augmented  # CPU presets: no augmentation by default
    cifar = RunConfig.from_dict(base | {"preset": "cifar"})
    assert cifar.augmented and cifar.deviations() == []
    plain = RunConfig.from_dict(base | {"preset": "cifar", "augment": False})
    assert not plain.augmented
    assert plain.deviations() and "augment: false with preset cifar" in plain.deviations()[0]
    assert RunConfig.from_dict(base | {"augment": True}).augmented


def test_paper_presets_read_eq3_literally_unless_told_otherwise() -> None:
    """The paper presets put eq. 3's cross-entropy on R_i (``ce_on: residual``); the CPU presets
    keep the measured default (on S_i); an explicit ``combined`` with a paper preset is reported,
    and the reading survives a round trip through the stored config."""
    base = {"dataset": "digits", "teacher": "resnet8", "student": "resnet8", "max_stages": 0}
    assert RunConfig.from_dict(base).kd.ce_on == "combined"
    cifar = RunConfig.from_dict(base | {"preset": "cifar", "kd": {"distance": "l2"}})
    assert cifar.kd.ce_on == "residual" and cifar.kd.residual_target == "residual"
    assert cifar.kd.distance == "l2" and cifar.deviations() == []
    assert RunConfig.from_dict(cifar.to_dict()) == cifar
    told = RunConfig.from_dict(base | {"preset": "imagenet", "kd": {"ce_on": "combined"}})
    assert told.kd.ce_on == "combined"
    assert any(d.startswith("kd.ce_on: combined with preset imagenet") for d in told.deviations())
    target = RunConfig.from_dict(base | {"preset": "cifar", "kd": {"residual_target": "combined"}})
    assert any(d.startswith("kd.residual_target: combined") for d in target.deviations())
    given = RunConfig.from_dict(base | {"preset": "cifar", "kd": KDConfig(tau=0.5)})
    assert given.kd.ce_on == "residual" and given.kd.tau == 0.5


def test_nas_train_is_how_searched_and_genotype_networks_train() -> None:
    base = {"dataset": "digits", "teacher": "resnet8", "student": "resnet8", "max_stages": 0}
    nas = {"weight_decay": 3e-4, "schedule": "cosine-power", "lr_min": 1e-4, "power": 2}
    c = RunConfig.from_dict(base | {"train": {"epochs": 3, "grad_clip": 1.0}, "nas_train": nas})
    plain, searched = c.train_config(), c.train_config(nas=True)
    assert plain.grad_clip == 1.0 and plain.schedule == "cosine" and plain.weight_decay == 5e-4
    assert searched.grad_clip == 5.0 and searched.epochs == 3  # DARTS's clipping; train's epochs
    assert (searched.schedule, searched.lr_min, searched.power) == ("cosine-power", 1e-4, 2)
    assert searched.weight_decay == 3e-4
    clipped = RunConfig.from_dict(base | {"nas_train": {"grad_clip": 2.0}})
    assert clipped.train_config(nas=True).grad_clip == 2.0
    with pytest.raises(ConfigError, match=r"nas_train: lr_min: must be in \[0, lr\)"):
        RunConfig.from_dict(base | {"nas_train": {"lr_min": 1.0}})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({}, "student_checkpoint: no file at"),
        ({"method": "assistant", "res_students": []}, "student_checkpoint: needs method reskd"),
        (
            {"student": {"search": {"budget_mflops": 0.5}}},
            "student_checkpoint: needs a zoo or genotype student",
        ),
    ],
)
def test_a_given_s0_is_checked_before_anything_runs(tmp_path, change: dict, message: str) -> None:
    path = tmp_path / "s0.pt"
    if change:
        path.write_bytes(b"")  # the other checks first need a file there
    with pytest.raises(ConfigError, match=message):  # from_dict runs the checks
        RunConfig.from_dict({**BASE, "student_checkpoint": str(path), **change})


def test_the_dry_run_prices_a_given_s0_as_loaded(tmp_path) -> None:
    import torch

    from search.dryrun import dry_run
    from search.nets import spec_of

    plain = RunConfig.from_dict(BASE)
    info = plain.data_info()
    for name, net in (("t.pt", plain.teacher), ("s0.pt", plain.student)):
        # checked against their networks when the config is; the dry run reads no weights
        torch.save(spec_of(net, info).build().state_dict(), tmp_path / name)
    config = RunConfig.from_dict(
        {**BASE, "teacher_checkpoint": str(tmp_path / "t.pt"),
         "student_checkpoint": str(tmp_path / "s0.pt"), "device": "cpu",
         "baselines": ["ensemble"]}
    )  # fmt: skip
    lines: list[str] = []
    plan = dry_run(config, timing_batch=1, steps=1, warmup=False, log=lines.append)
    assert [p.stage for p in plan] == ["teacher (loaded)", "S0 (loaded)", "R1", "baseline ensemble"]
    assert plan[1].epochs == 0 and plan[1].hours == 0 and plan[2].hours > 0
    # the baseline still trains S0's network: it is priced with it
    assert plan[3].network == "resnet8 + resnet8" and plan[3].hours > plan[2].hours
    assert "the teacher loaded, S0 loaded" in lines[-1]
