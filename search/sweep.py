"""Optuna budget sweeps: the search space of a sweep, the config of each trial, its objectives.

A sweep varies, around a base ResKD config whose res-students are searched (``{search: {...}}``):

- ``budget_mflops``: the FLOPs budget of each searched res-student (log scale);
- ``res_students``: how many res-students (``max_stages``; Energy may stop the run earlier);
- ``t`` and ``tau``: the KD temperature and weight of the res-students' residual distillation;
- ``flops_weight``: the weight of the search's differentiable FLOPs penalty (log scale).

Each parameter is a range ``[low, high]`` (sampled), a single value (fixed), or left out (the base
config's value). S0 keeps the base config's KD settings (``student_kd``), so every trial reuses
the same teacher and S0 stages.

Objectives: maximise the accuracy of S_n, minimise its MFLOPs (``cost: mflops``), or the accuracy
and the expected MFLOPs of S_n with sample-adaptive inference (``cost: adaptive_mflops``). The
study is multi-objective; NSGA-II (default) or TPE samples it. Orchestration (trials as jobs,
ask/tell) lives in ``api.sweeps``; this module knows nothing of the queue.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import optuna

from distill.residual import _check
from search.pipeline import RunConfig

SAMPLERS = ("nsga2", "tpe")
COSTS = ("mflops", "adaptive_mflops")
DIRECTIONS: tuple[Literal["maximize"], Literal["minimize"]] = ("maximize", "minimize")


@dataclass(frozen=True)
class Param:
    """How one sweep parameter is sampled, and where its value goes in a trial's config."""

    kind: Literal["float", "int"]
    log: bool
    low_bound: float  # values must be above (or at, for ints) this
    allowed: str


PARAMS: dict[str, Param] = {
    "budget_mflops": Param("float", True, 0.0, "> 0 (MFLOPs of each searched res-student)"),
    "res_students": Param("int", False, 1, "an integer >= 1 (how many res-students)"),
    "t": Param("float", False, 0.0, "> 0 (KD temperature)"),
    "tau": Param("float", False, 0.0, "in [0, 1] (KD weight)"),
    "flops_weight": Param("float", True, 0.0, "> 0 (weight of the search's FLOPs penalty)"),
}


@dataclass(frozen=True)
class Range:
    low: float
    high: float

    @property
    def fixed(self) -> bool:
        return self.low == self.high


@dataclass(frozen=True)
class SweepSpec:
    base: Mapping[str, Any]
    space: Mapping[str, Range] = field(default_factory=dict)
    trials: int = 12
    sampler: Literal["nsga2", "tpe"] = "nsga2"
    cost: Literal["mflops", "adaptive_mflops"] = "mflops"
    parallel: int = 2
    seed: int = 0
    name: str | None = None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> SweepSpec:
        """Checks every field; errors name it (``space.budget_mflops: ...``)."""
        if not isinstance(raw, Mapping):
            raise ValueError("sweep: a mapping with base, space, trials, sampler, cost")
        known = {"base", "space", "trials", "sampler", "cost", "parallel", "seed", "name"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown field; allowed: {', '.join(sorted(known))}")
        if "base" not in raw:
            raise ValueError("base: required (the ResKD config every trial starts from)")
        base = raw["base"]
        if not isinstance(base, Mapping):
            raise ValueError("base: a mapping of run settings (dataset, teacher, student, ...)")
        space_raw = raw.get("space") or {}
        if not isinstance(space_raw, Mapping):
            raise ValueError(f"space: a mapping of {', '.join(PARAMS)} to [low, high] or a value")
        space = {name: _range(name, value) for name, value in space_raw.items()}
        spec = cls(
            base=dict(base),
            space=space,
            trials=raw.get("trials", 12),
            sampler=raw.get("sampler", "nsga2"),
            cost=raw.get("cost", "mflops"),
            parallel=raw.get("parallel", 2),
            seed=raw.get("seed", 0),
            name=raw.get("name"),
        )
        spec.validate()
        return spec

    def validate(self) -> None:
        _check("trials", _is_int(self.trials) and self.trials >= 1, "an integer >= 1", self.trials)
        _check(
            "parallel",
            _is_int(self.parallel) and self.parallel >= 1,
            "an integer >= 1 (trials queued at once)",
            self.parallel,
        )
        _check("seed", _is_int(self.seed), "an integer", self.seed)
        _check("sampler", self.sampler in SAMPLERS, f"one of {', '.join(SAMPLERS)}", self.sampler)
        _check("cost", self.cost in COSTS, f"one of {', '.join(COSTS)}", self.cost)
        try:
            base = RunConfig.from_dict(self.base)
        except ValueError as exc:
            raise ValueError(f"base.{exc}") from exc
        _check("base.method", base.method == "reskd", "reskd (sweeps tune ResKD)", base.method)
        if "budget_mflops" in self.space and not any(r.searched for r in base.res_students):
            raise ValueError(
                "space.budget_mflops: needs searched res-students in base.res_students "
                "({search: {...}})"
            )
        # Every corner of the space must make a valid config (fails now, not in trial 7).
        for corner in ("low", "high"):
            params = {n: getattr(r, corner) for n, r in self.space.items()}
            params = {n: int(v) if PARAMS[n].kind == "int" else v for n, v in params.items()}
            try:
                RunConfig.from_dict(self.trial_config(params))
            except ValueError as exc:
                raise ValueError(f"space: the {corner} end gives an invalid trial: {exc}") from exc

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
        searched_keys = ("budget_mflops", "flops_weight")
        if any(k in params for k in searched_keys):
            updated = []
            for net in res_list:
                if isinstance(net, Mapping) and isinstance(net.get("search"), Mapping):
                    search = dict(net["search"])
                    for k in searched_keys:
                        if k in params:
                            search[k] = float(params[k])
                    net = {**net, "search": search}
                updated.append(net)
            res_list = updated
        config["res_students"] = res_list
        if "res_students" in params:
            config["max_stages"] = int(params["res_students"])
        return config

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": dict(self.base),
            "space": {n: [r.low, r.high] for n, r in self.space.items()},
            "trials": self.trials,
            "sampler": self.sampler,
            "cost": self.cost,
            "parallel": self.parallel,
            "seed": self.seed,
            "name": self.name,
        }


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _range(name: str, value: Any) -> Range:
    if name not in PARAMS:
        raise ValueError(f"space.{name}: unknown parameter; allowed: {', '.join(PARAMS)}")
    p = PARAMS[name]
    where = f"space.{name}"
    if isinstance(value, list | tuple):
        if len(value) != 2:
            raise ValueError(f"{where}: [low, high] or a single value, got {list(value)}")
        low, high = value
    else:
        low = high = value
    for v in (low, high):
        number = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        ok = number and (v >= p.low_bound if p.kind == "int" else v > p.low_bound)
        if ok and p.kind == "int":
            ok = float(v).is_integer()
        if ok and name == "tau":
            ok = v <= 1
        _check(where, ok, p.allowed, v)
    _check(where, low <= high, "[low, high] with low <= high", [low, high])
    return Range(float(low), float(high))


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


def objectives(result: Mapping[str, Any], cost: str) -> tuple[float, float]:
    """(accuracy of S_n, cost of S_n) from a finished ResKD job's result."""
    rows = list(result.get("rows") or [])
    final = [r for r in rows if r["model"].startswith("S") and r["model"][1:].isdigit()]
    if not final:
        raise ValueError("result: no S_n row in the job's result")
    last = final[-1]
    if cost == "adaptive_mflops":
        adaptive = next((r for r in rows if r["model"] == f"{last['model']} adaptive"), None)
        if adaptive is None:
            raise ValueError(f"result: no {last['model']} adaptive row in the job's result")
        return float(adaptive["accuracy"]), float(adaptive["adaptive_mflops"])
    return float(last["accuracy"]), float(last["mflops"])
