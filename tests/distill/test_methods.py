"""KD methods as a registry: each method's own settings model, joined into the run config's ``kd``
union, with the built-ins loaded from the ``reskd.methods`` entry-point group."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any, Literal

import pytest
import torch
from pydantic import create_model

from distill.config import ConfigError, ConfigModel, parse
from distill.losses import KDLoss, Objective, RelationalObjective
from distill.methods import (
    METHODS,
    DMLConfig,
    KDConfig,
    MethodConfig,
    RelationalConfig,
    method_union,
)
from search.config import RunConfig
from space.registry import RegistryError

BASE = {"dataset": "digits", "teacher": "resnet8", "student": "resnet8", "max_stages": 0}


def test_the_built_in_methods_come_from_the_entry_point_group() -> None:
    declared = {e.name: e.load() for e in entry_points(group="reskd.methods")}
    assert {"kd", "dml", "relational"} <= set(declared)
    assert all(METHODS[name] is model for name, model in declared.items())
    assert (METHODS["kd"], METHODS["dml"], METHODS["relational"]) == (
        KDConfig,
        DMLConfig,
        RelationalConfig,
    )


def test_a_config_without_method_is_kd() -> None:
    config = RunConfig.from_dict(BASE | {"kd": {"tau": 0.5}})
    assert isinstance(config.kd, KDConfig) and config.kd.tau == 0.5 and config.kd.t == 4.0
    assert isinstance(RunConfig.from_dict(BASE).kd, KDConfig)
    relational = RunConfig.from_dict(BASE | {"student_kd": {"method": "relational"}})
    assert isinstance(relational.kd_for(0), RelationalConfig)
    assert isinstance(relational.kd_for(1), KDConfig)
    assert RunConfig.from_dict(relational.to_dict()) == relational


def test_an_unknown_method_lists_the_registered_ones() -> None:
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict(BASE | {"kd": {"method": "nope"}})
    assert str(info.value) == "kd.method: unknown KD method 'nope'; registered: dml, kd, relational"
    assert info.value.errors[0]["loc"] == ["kd", "method"]
    with pytest.raises(ConfigError, match=r"^student_kd\.method: unknown KD method \['kd'\]"):
        RunConfig.from_dict(BASE | {"student_kd": {"method": ["kd"]}})


def test_each_method_has_only_its_own_fields() -> None:
    with pytest.raises(ConfigError, match=r"^kd\.angle_weight: unknown field$"):
        RunConfig.from_dict(BASE | {"kd": {"angle_weight": 1.0}})
    with pytest.raises(ConfigError, match=r"^student_kd\.t: unknown field$"):
        RunConfig.from_dict(BASE | {"student_kd": {"method": "relational", "t": 2}})
    with pytest.raises(ConfigError, match=r"^kd\.tau: must be <= 1, got 3$"):
        RunConfig.from_dict(BASE | {"kd": {"method": "dml", "tau": 3}})


def test_the_schema_documents_every_method() -> None:
    schema = RunConfig.model_json_schema()
    refs = {ref["$ref"].rsplit("/", 1)[1] for ref in schema["properties"]["kd"]["oneOf"]}
    assert refs == {"KDConfig", "DMLConfig", "RelationalConfig"}
    defs = schema["$defs"]
    assert {"distance", "t", "tau", "ce_on"} <= set(defs["KDConfig"]["properties"])
    assert {"distance_weight", "angle_weight"} <= set(defs["RelationalConfig"]["properties"])
    assert defs["DMLConfig"]["properties"]["method"]["const"] == "dml"


def test_each_method_builds_its_own_objective() -> None:
    kd = KDConfig(distance="kl", tau=0.5, t=2.0).objective()
    assert isinstance(kd, KDLoss) and (kd.distance, kd.tau, kd.t) == ("kl", 0.5, 2.0)
    relational = RelationalConfig(angle_weight=1.0).objective()
    assert isinstance(relational, RelationalObjective) and relational.angle_weight == 1.0
    assert DMLConfig.needs_peer and not KDConfig.needs_peer and not RelationalConfig.needs_peer


def test_stage_settings_keep_the_fields_of_the_one_model_config() -> None:
    # stored stages were keyed by every built-in's fields: the split keeps those keys
    fields = {
        "method", "distance", "tau", "t", "residual_target", "ce_on", "distance_weight",
        "angle_weight", "zero_init_residual",
    }  # fmt: skip
    for model in (KDConfig, DMLConfig, RelationalConfig):
        assert set(model().for_stage(1)) == fields
        assert set(model().for_stage(0)) == fields - {
            "residual_target",
            "ce_on",
            "zero_init_residual",
        }


class _Scaled(Objective):
    def __init__(self, weight: float) -> None:
        super().__init__()
        self.weight = weight

    def forward(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor,
        target: torch.Tensor,
        ce_logits: Any = None,
    ) -> torch.Tensor:
        return self.weight * (student - teacher).pow(2).mean()


class ToyConfig(MethodConfig):
    method: Literal["toy"] = "toy"
    weight: float = 2.0

    def objective(self) -> Objective:
        return _Scaled(self.weight)


def test_a_registered_method_joins_a_union_built_afterwards() -> None:
    METHODS.register("toy", ToyConfig)
    try:
        holder = create_model("Holder", __base__=ConfigModel, kd=(method_union(), KDConfig()))
        config: Any = parse(holder, {"kd": {"method": "toy", "weight": 3.0}})
        assert isinstance(config.kd, ToyConfig)
        loss = config.kd.objective()(torch.ones(2, 3), torch.zeros(2, 3), torch.zeros(2))
        assert float(loss) == 3.0
        with pytest.raises(ConfigError, match="registered: dml, kd, relational, toy"):
            parse(holder, {"kd": {"method": "nope"}})
    finally:
        METHODS.unregister("toy")


def test_a_method_whose_name_is_not_its_literal_is_refused() -> None:
    with pytest.raises(RegistryError, match=r"ToyConfig\.method must be Literal\['other'\]"):
        METHODS.register("other", ToyConfig)
    with pytest.raises(RegistryError, match="is not a MethodConfig subclass"):
        METHODS.register("plain", ConfigModel)  # type: ignore[arg-type]
    assert "other" not in METHODS and "plain" not in METHODS
