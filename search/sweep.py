"""Optuna budget sweeps: the search space of a sweep, the config of each trial, its objectives.

A sweep varies, around a base ResKD config whose res-students are searched (``{search: {...}}``):

- ``budget_mflops``: the FLOPs budget of each searched res-student (log scale);
- ``res_students``: how many res-students (``max_stages``; Energy may stop the run earlier);
- ``t`` and ``tau``: the KD temperature and weight of the res-students' residual distillation;
- ``flops_weight``: the weight of the search's differentiable FLOPs penalty (log scale).

Each parameter is a range ``[low, high]`` (sampled), a single value (fixed), or left out (the base
config's value). S0 keeps the base config's KD settings (``student_kd``), so every trial reuses
the same teacher and S0 stages.

Objectives: maximise the accuracy of S_n on D_v (the validation set drawn from the training set),
minimise its MFLOPs (``cost: mflops``), or the D_v accuracy and the expected MFLOPs of S_n with
sample-adaptive inference (``cost: adaptive_mflops``). Test accuracy is never an objective: it is
kept beside each trial (:func:`outcome`) and reported, not chosen on. The study is
multi-objective; NSGA-II (default) or TPE samples it. Orchestration (trials as jobs, ask/tell)
lives in ``api.sweeps``; this module knows nothing of the queue.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import optuna
from pydantic import BeforeValidator, Field, ValidationInfo, field_validator

from distill.config import ConfigError, ConfigModel, Name, require
from search.config import RunConfig

DIRECTIONS: tuple[Literal["maximize"], Literal["minimize"]] = ("maximize", "minimize")


@dataclass(frozen=True)
class Param:
    """How one sweep parameter is sampled, and what values it allows."""

    kind: Literal["float", "int"]
    log: bool
    low_bound: float  # values must be above (or at, for ints) this
    allowed: str
    high_bound: float = math.inf


PARAMS: dict[str, Param] = {
    "budget_mflops": Param("float", True, 0.0, "> 0 (MFLOPs of each searched res-student)"),
    "res_students": Param("int", False, 1, "an integer >= 1 (how many res-students)", 64),
    "t": Param("float", False, 0.0, "> 0 (KD temperature)", 1000),
    "tau": Param("float", False, 0.0, "in [0, 1] (KD weight)", 1),
    "flops_weight": Param("float", True, 0.0, "> 0 (weight of the search's FLOPs penalty)"),
}


class Range(ConfigModel):
    low: float
    high: float

    @property
    def fixed(self) -> bool:
        return self.low == self.high


def _pair(raw: Any) -> Any:
    if isinstance(raw, list | tuple):
        if len(raw) != 2:
            raise ValueError(f"[low, high] or a single value, got {list(raw)}")
        return {"low": raw[0], "high": raw[1]}
    return {"low": raw, "high": raw} if not isinstance(raw, Mapping) else raw


SpaceRange = Annotated[Range, BeforeValidator(_pair)]


class SweepSpace(ConfigModel):
    """Each parameter: ``[low, high]`` (sampled), one value (fixed) or absent (the base's)."""

    budget_mflops: SpaceRange | None = None
    res_students: SpaceRange | None = None
    t: SpaceRange | None = None
    tau: SpaceRange | None = None
    flops_weight: SpaceRange | None = None

    @field_validator("*")
    @classmethod
    def _within_bounds(cls, value: Range | None, info: ValidationInfo) -> Range | None:
        if value is None:
            return None
        p = PARAMS[str(info.field_name)]
        for v in (value.low, value.high):
            ok = math.isfinite(v) and v <= p.high_bound
            ok = ok and (v >= p.low_bound if p.kind == "int" else v > p.low_bound)
            if not ok or (p.kind == "int" and not float(v).is_integer()):
                raise ValueError(f"must be {p.allowed}, got {v!r}")
        if value.low > value.high:
            raise ValueError(f"must be [low, high] with low <= high, got {[value.low, value.high]}")
        return value

    def items(self) -> list[tuple[str, Range]]:
        return [(n, r) for n in PARAMS if (r := getattr(self, n)) is not None]

    def __contains__(self, name: str) -> bool:
        return getattr(self, name, None) is not None


class SweepSpec(ConfigModel):
    """An Optuna sweep around a base ResKD config (the body of ``POST /v1/sweeps``)."""

    base: dict[str, Any] = Field(description="the ResKD config every trial starts from")
    space: SweepSpace = Field(default_factory=SweepSpace)
    trials: int = Field(12, ge=1, le=10_000, description="how many trials the sweep asks for")
    sampler: Literal["nsga2", "tpe"] = "nsga2"
    cost: Literal["mflops", "adaptive_mflops"] = Field("mflops", description="the second objective")
    parallel: int = Field(2, ge=1, le=1000, description="trials queued or running at once")
    seed: int = Field(0, ge=0, lt=2**63)
    name: Name | None = None
    shared_search: Literal["largest", "free", "off"] = Field(
        "largest",
        description="trials that differ only in budget_mflops share one search: its supernet "
        "trains once, under the FLOPs term at the space's largest budget (largest) or under none "
        "(free), and each trial derives its network from the same architecture weights at its "
        "own budget; off: every trial searches on its own",
    )

    def check(self) -> None:
        try:
            base = RunConfig.from_dict(self.base)
        except ConfigError as exc:
            raise exc.within("base") from None
        require(base.method == "reskd", ("base", "method"), "reskd (sweeps tune ResKD)")
        if "budget_mflops" in self.space and not any(r.searched for r in base.res_students):
            raise ConfigError.at(
                ("space", "budget_mflops"),
                "needs searched res-students in base.res_students ({search: {...}})",
            )
        # Every corner of the space must make a valid config (fails now, not in trial 7).
        for corner in ("low", "high"):
            params = {n: getattr(r, corner) for n, r in self.space.items()}
            params = {n: int(v) if PARAMS[n].kind == "int" else v for n, v in params.items()}
            try:
                RunConfig.from_dict(self.trial_config(params))
            except ConfigError as exc:
                raise ConfigError.at(
                    ("space",), f"the {corner} end gives an invalid trial: {exc}"
                ) from None

    @property
    def directions(self) -> list[Literal["maximize", "minimize"]]:
        return list(DIRECTIONS)

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Sample this trial's parameters (fixed ones are recorded as they are)."""
        params: dict[str, Any] = {}
        for name, r in self.space.items():
            p = PARAMS[name]
            if p.kind == "int":
                params[name] = trial.suggest_int(name, int(r.low), int(r.high))
            else:
                params[name] = trial.suggest_float(name, r.low, r.high, log=p.log and not r.fixed)
        return params

    def trial_config(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The ResKD config of a trial with these parameters."""
        config = dict(self.base)
        kd = dict(config.get("kd") or {})
        if any(k in params for k in ("t", "tau")) and config.get("student_kd") is None:
            config["student_kd"] = dict(kd)  # S0 keeps the base's KD: all trials share it
        for name in ("t", "tau"):
            if name in params:
                kd[name] = float(params[name])
        config["kd"] = kd
        res = config.get("res_students")
        res_list = [res] if isinstance(res, str | Mapping) else list(res or [])
        config["res_students"] = [self._searched(net, params) for net in res_list]
        if "res_students" in params:
            config["max_stages"] = int(params["res_students"])
        return config

    def _searched(self, net: Any, params: Mapping[str, Any]) -> Any:
        """A searched res-student with the trial's budget and FLOPs weight, sharing the sweep's
        one search (``shared_search``) when the budget is what the trials vary."""
        if not (isinstance(net, Mapping) and isinstance(net.get("search"), Mapping)):
            return net
        search = dict(net["search"])
        for k in ("budget_mflops", "flops_weight"):
            if k in params:
                search[k] = float(params[k])
        budgets = self.space.budget_mflops
        if self.shared_search != "off" and budgets is not None and not budgets.fixed:
            search["supernet_budget_mflops"] = float(budgets.high)
            if self.shared_search == "free":
                search["supernet_budget_term"] = False
        return {**net, "search": search}

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def make_sampler(spec: SweepSpec, asked: int) -> optuna.samplers.BaseSampler:
    """The sweep's sampler. Trials are asked from several processes over the sweep's life, each
    with a fresh sampler: its seed moves with the number already asked so no two draws repeat."""
    seed = spec.seed * 100_003 + asked
    if spec.sampler == "tpe":
        # A few random trials first; TPE then models the two objectives.
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, spec.trials // 2))
    return optuna.samplers.NSGAIISampler(
        seed=seed, population_size=max(4, min(50, spec.trials // 2))
    )


OBJECTIVE = "val_accuracy"  # what a sweep ranks trials on (Optuna's first objective)


@dataclass(frozen=True)
class TrialOutcome:
    """What a finished trial's job measured on S_n (or its adaptive row): the objectives Optuna
    is told, D_v accuracy and cost, and test accuracy, reported beside them."""

    val_accuracy: float
    cost: float
    accuracy: float | None  # on the test set: reported, never an objective


def outcome(result: Mapping[str, Any], cost: str) -> TrialOutcome:
    """S_n's D_v accuracy, cost and test accuracy from a finished ResKD job's result (its
    report's rows); the adaptive row's for ``cost: adaptive_mflops``. A ValueError names what
    is missing (a result without D_v accuracy cannot be ranked)."""
    rows = list(result.get("rows") or [])
    final = [r for r in rows if r.get("role") == "stage"]
    if not final:
        raise ValueError("result: no S_n row in the job's result")
    row, column = final[-1], "mflops"
    if cost == "adaptive_mflops":
        adaptive = next((r for r in rows if r.get("role") == "adaptive"), None)
        if adaptive is None:
            raise ValueError(f"result: no {row['model']} adaptive row in the job's result")
        row, column = adaptive, "adaptive_mflops"
    if row.get("val_accuracy") is None:
        raise ValueError(
            f"result: {row['model']} has no val_accuracy (its accuracy on D_v, which the sweep "
            "ranks on)"
        )
    test = row.get("accuracy")
    return TrialOutcome(
        float(row["val_accuracy"]), float(row[column]), None if test is None else float(test)
    )


def objectives(result: Mapping[str, Any], cost: str) -> tuple[float, float]:
    """(D_v accuracy of S_n, cost of S_n): what Optuna is told of a finished trial."""
    measured = outcome(result, cost)
    return measured.val_accuracy, measured.cost
