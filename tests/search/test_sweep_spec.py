"""The sweep's spec: parsing, errors naming the field, and what a trial's config becomes."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from search.config import RunConfig
from search.sweep import SweepSpec, TrialOutcome, make_sampler, objectives, outcome

ROOT = Path(__file__).resolve().parents[2]
BASE = {
    "dataset": "digits",
    "teacher": "resnet8",
    "student": "resnet8",
    "res_students": [{"search": {"budget_mflops": 0.1, "channels": 4, "layers": 3}}],
    "kd": {"distance": "kl", "t": 4.0, "tau": 0.9},
}


def test_the_shipped_sweep_config_is_valid() -> None:
    spec = SweepSpec.from_dict(yaml.safe_load((ROOT / "configs/digits-sweep.yaml").read_text()))
    assert spec.sampler == "nsga2" and spec.trials == 12
    assert {n for n, _ in spec.space.items()} == {
        "budget_mflops",
        "res_students",
        "t",
        "tau",
        "flops_weight",
    }


def test_a_trial_config_applies_every_parameter_and_keeps_s0() -> None:
    spec = SweepSpec.from_dict({"base": BASE, "space": {"t": [2, 6], "budget_mflops": [0.06, 0.2]}})
    params = {"budget_mflops": 0.15, "res_students": 2, "t": 3.0, "tau": 0.7, "flops_weight": 2.0}
    config = RunConfig.from_dict(spec.trial_config(params))
    assert config.stages == 2
    assert (config.kd.t, config.kd.tau) == (3.0, 0.7)
    assert config.student_kd is not None and (config.student_kd.t, config.student_kd.tau) == (
        4.0,
        0.9,
    )
    search = config.res_students[0].search
    assert search is not None and (search.budget_mflops, search.flops_weight) == (0.15, 2.0)
    assert config.kd_for(0) == config.student_kd and config.kd_for(1) == config.kd
    assert BASE["kd"] == {"distance": "kl", "t": 4.0, "tau": 0.9}  # the base is not modified


@pytest.mark.parametrize(
    ("shared", "supernet"),
    [("largest", (0.2, True)), ("free", (0.2, False)), ("off", (None, True))],
)
def test_trials_share_one_search_at_the_largest_budget_unless_told_not_to(
    shared: str, supernet: tuple[float | None, bool]
) -> None:
    spec = SweepSpec.from_dict(
        {"base": BASE, "space": {"budget_mflops": [0.06, 0.2]}, "shared_search": shared}
    )
    specs = []
    for budget in (0.06, 0.13):
        search = RunConfig.from_dict(spec.trial_config({"budget_mflops": budget}))
        found = search.res_students[0].search
        assert found is not None and found.budget_mflops == budget
        assert (found.supernet_budget_mflops, found.supernet_budget_term) == supernet
        specs.append(found.shared_supernet().to_dict() if supernet[0] else found.to_dict())
    assert (specs[0] == specs[1]) == (shared != "off")  # one stored search for both trials
    fixed = SweepSpec.from_dict({"base": BASE, "space": {"budget_mflops": 0.1, "t": [2, 6]}})
    search = RunConfig.from_dict(fixed.trial_config({"budget_mflops": 0.1, "t": 3.0}))
    assert search.res_students[0].search.supernet_budget_mflops is None  # nothing to share


@pytest.mark.parametrize(
    ("field", "patch", "message"),
    [
        ("sampler", {"sampler": "random"}, "one of nsga2, tpe"),
        ("cost", {"cost": "params"}, "one of mflops, adaptive_mflops"),
        ("trials", {"trials": 2.5}, "an integer"),
        ("parallel", {"parallel": 0}, ">= 1"),
        ("space.width", {"space": {"width": [1, 2]}}, "unknown field"),
        ("space.t", {"space": {"t": [0, 2]}}, "> 0"),
        ("space.res_students", {"space": {"res_students": [1.5, 2]}}, "an integer >= 1"),
        ("space.budget_mflops", {"space": {"budget_mflops": [0.2, 0.1]}}, "low <= high"),
        ("space", {"space": {"budget_mflops": [0.001, 0.1]}}, "below the minimum"),
        ("base.res_students", {"base": {**BASE, "res_students": []}}, "non-empty"),
        ("base", {"base": None}, "a mapping"),
        ("bogus", {"bogus": 1}, "unknown field"),
    ],
)
def test_errors_name_the_field(field: str, patch: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        SweepSpec.from_dict({"base": BASE} | patch)
    assert str(info.value).startswith(f"{field}:") or str(info.value).startswith(f"{field}.")


def test_budget_needs_searched_res_students() -> None:
    handcrafted = {**BASE, "res_students": ["resnet8"]}
    with pytest.raises(ValueError, match="space.budget_mflops: needs searched res-students"):
        SweepSpec.from_dict({"base": handcrafted, "space": {"budget_mflops": [0.1, 0.2]}})


def test_objectives_are_d_v_accuracy_of_s_n_and_its_adaptive_row_never_test_accuracy() -> None:
    """Test and D_v accuracy disagree (S0 is best on test, S1 on D_v): Optuna is told S_n's D_v
    accuracy; its test accuracy travels beside it; a row without D_v accuracy does not rank."""
    result = {
        "rows": [
            {"model": "T", "role": "teacher", "accuracy": 0.99, "val_accuracy": 0.98, "mflops": 5.0},
            {"model": "S0", "role": "stage", "accuracy": 0.95, "val_accuracy": 0.80, "mflops": 1.0},
            {"model": "S1", "role": "stage", "accuracy": 0.93, "val_accuracy": 0.88, "mflops": 1.2},
            {
                "model": "S1 adaptive",
                "role": "adaptive",
                "accuracy": 0.925,
                "val_accuracy": 0.87,
                "mflops": 1.2,
                "adaptive_mflops": 1.05,
            },
            {"model": "ensemble", "role": "baseline", "accuracy": 0.97, "mflops": 1.2},
        ]
    }  # fmt: skip
    assert objectives(result, "mflops") == (0.88, 1.2)
    assert objectives(result, "adaptive_mflops") == (0.87, 1.05)
    assert outcome(result, "mflops") == TrialOutcome(val_accuracy=0.88, cost=1.2, accuracy=0.93)
    with pytest.raises(ValueError, match="no S_n row"):
        objectives({"rows": []}, "mflops")
    old = {"rows": [{k: v for k, v in r.items() if k != "val_accuracy"} for r in result["rows"]]}
    with pytest.raises(ValueError, match="result: S1 has no val_accuracy"):
        objectives(old, "mflops")  # an old result: never ranked on its test accuracy


def test_samplers_move_their_seed_with_the_trials_asked() -> None:
    spec = SweepSpec.from_dict({"base": BASE, "space": {"t": [2, 6]}, "sampler": "tpe"})
    study = optuna.create_study(directions=spec.directions)
    draws = []
    for asked in range(3):  # a fresh sampler per step, as workers build them
        study.sampler = make_sampler(spec, asked)
        trial = study.ask()
        draws.append(spec.suggest(trial)["t"])
    assert len(set(draws)) == 3
